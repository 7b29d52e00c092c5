"""One module per ``hybrid-router`` command, each defining ``COMMAND``
(:class:`hybrid_router_cli.registry.Command`); the list is ``registry.NAMES``."""
