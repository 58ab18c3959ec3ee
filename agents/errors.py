"""The base of every room's error type: a one-line message for people, and an exit code.

The CLI prints the message as one line and exits with `exit_code`; nothing else of
the exception (no traceback) reaches the user.
"""

from __future__ import annotations


class OpsagentError(Exception):
    """A runtime failure with a one-line message (exit code 3 unless a subclass says)."""

    exit_code = 3

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))
