"""The backup room's error types: one line for people, exit code 3 (runtime)."""

from __future__ import annotations

from agents.errors import OpsagentError


class BackupError(OpsagentError):
    """Anything in the backup room that stops an operation."""


class StorageError(BackupError):
    """A storage backend could not do what was asked (unreachable, denied, corrupt)."""


class NotFound(StorageError):
    """The object does not exist."""


class WrongKey(BackupError):
    """No repository key opens with the given password."""


class IntegrityError(BackupError):
    """Stored data does not match its hash or fails authentication."""


class RestoreRefused(BackupError):
    """A restore that cannot start as asked (a bad target, an include that matches
    nothing): exit code 1, nothing written."""

    exit_code = 1
