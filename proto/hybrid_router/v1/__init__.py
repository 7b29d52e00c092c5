"""hybrid_router.v1: generated stubs. Regenerate with `make proto`."""
