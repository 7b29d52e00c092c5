"""The demo harness behind ``hybrid-router demo``: ``run`` (the demo), ``config`` (its
router.yaml and scenarios), ``report`` (outcomes, tables, the JSON report), ``processes``
(child model servers, watched) and ``check`` (``python -m hybrid_router_cli.demo.check
REPORT.json``: what CI asserts about the report)."""
