"""Lambda entry point of the HTTP function (``Handler: lambda_edge.entry_http.handler``).

Lambda's init phase is this import: the settings are read and the router channel is made
here, once per container, and every invocation reuses them. This is the one place that
reads the environment at import; nothing but Lambda imports it (tests call
``make_http_handler`` with their own Runtime).
"""

from lambda_edge.http_api import make_http_handler
from lambda_edge.runtime import Runtime

runtime = Runtime.from_env()
handler = make_http_handler(runtime)
