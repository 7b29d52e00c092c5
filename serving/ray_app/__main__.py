"""``python -m serving.ray_app``: the GPU tier's Serve applications on this machine."""

import sys

from serving.ray_app.local import main

sys.exit(main())
