"""The case store's errors: one line each, with the exit code the command line gives."""

from __future__ import annotations

from agents.errors import OpsagentError


class CaseStoreError(OpsagentError):
    """The case store cannot be used or the change is not allowed; one line."""


class CaseNotFound(CaseStoreError):
    """No case with that ID: the caller asked for something that does not exist."""

    exit_code = 2


class CaseRefused(CaseStoreError):
    """The change does not apply to the case in its present state."""

    exit_code = 2
