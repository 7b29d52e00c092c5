"""The ``hybrid-router`` command-line tool and the demo harness (``hybrid_router_cli.demo``).

It talks to routers only through the client library (``hybrid_router.client``); ``serve``,
``check``, ``keys`` and ``prices --config`` use the service's own code (``router``). The
service never imports this package.
"""
