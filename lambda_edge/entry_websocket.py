"""Lambda entry point of the WebSocket function (``Handler: lambda_edge.entry_websocket.handler``).

Built at init, once per container (see lambda_edge.entry_http); X-Ray patches botocore so
the Management API posts show in the trace.
"""

from lambda_edge.runtime import Runtime
from lambda_edge.websocket import make_ws_handler

runtime = Runtime.from_env(patch_modules=("botocore",))
handler = make_ws_handler(runtime)
