"""The CLI's one error: printed as one line (``error: ...``) with an exit code."""

from __future__ import annotations


class CliError(Exception):
    """An error the CLI reports as one line (``error: ...``) and an exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
