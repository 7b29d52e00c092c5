"""``python -m hybrid_router_cli``: the ``hybrid-router`` command."""

import sys

from hybrid_router_cli.main import main

sys.exit(main())
