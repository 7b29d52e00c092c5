"""Tools and structured answers (docs/tools.md): the checks of tool definitions and JSON
schemas (``schema.py``), the capabilities a request needs (``needs.py``), and the
reassembly of streamed tool-call fragments (``calls.py``)."""
