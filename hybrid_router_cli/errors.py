"""The CLI's one error, printed as one line (``error: ...``), and its exit statuses."""

from __future__ import annotations

EXIT_OK = 0
#: A failed call, a failed check, an incomplete answer.
EXIT_FAILED = 1
#: A usage or configuration error.
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


class CliError(Exception):
    """An error the CLI reports as one line (``error: ...``) and an exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
