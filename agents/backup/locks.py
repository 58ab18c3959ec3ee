"""Repository locks: shared for backup and restore, exclusive for prune and repair.

A lock is an object under `locks/` naming host, pid and time; it is refreshed while
held. A lock not refreshed for `STALE_AFTER`, or held by a process of this host that no
longer exists, is stale: ignored, and removed by the next process that finds it, so
a killed process never blocks the repository for long.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from types import TracebackType

import psutil

from agents.backup.errors import BackupError, NotFound
from agents.backup.storage import Storage

log = logging.getLogger("opsagent.backup.locks")

STALE_AFTER = timedelta(minutes=30)
REFRESH_EVERY = timedelta(minutes=5)
LOCK_POLL = 5.0  # seconds between looks at a conflicting lock while waiting


class LockError(BackupError):
    """The repository is locked by another process."""


class RepositoryLock:
    """Context manager holding one lock object, refreshed by a background thread."""

    def __init__(
        self, storage: Storage, exclusive: bool, host: str | None = None, wait: float = 0.0
    ) -> None:
        self.storage = storage
        self.exclusive = exclusive
        self.wait = wait  # seconds to wait for a conflicting lock before giving up
        self.host = host or socket.gethostname()
        self.key = f"locks/{secrets.token_hex(16)}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RepositoryLock:
        deadline = time.monotonic() + self.wait
        while True:
            try:
                self._check_others()
                break
            except LockError as exc:
                if time.monotonic() >= deadline:
                    raise
                log.info("%s; waiting up to %.0fs", exc, deadline - time.monotonic())
                time.sleep(min(LOCK_POLL, max(0.1, deadline - time.monotonic())))
        self._write()
        try:
            self._check_others()  # a racing exclusive lock appeared: back off
        except LockError:
            self.storage.delete([self.key])
            raise
        self._thread = threading.Thread(target=self._refresh, name="lock-refresh", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        try:
            self.storage.delete([self.key])
        except BackupError as error:
            log.warning("could not remove lock %s: %s", self.key, error)

    def _write(self) -> None:
        body = {
            "host": self.host,
            "pid": os.getpid(),
            "time": datetime.now(UTC).isoformat(),
            "exclusive": self.exclusive,
        }
        self.storage.put(self.key, json.dumps(body).encode())

    def _refresh(self) -> None:
        while not self._stop.wait(REFRESH_EVERY.total_seconds()):
            try:
                self._write()
            except BackupError as error:
                log.warning("could not refresh lock %s: %s", self.key, error)

    def _dead_here(self, body: dict[str, object]) -> bool:
        """A lock of this host whose process is gone (killed) is stale at once."""
        pid = body.get("pid")
        return body.get("host") == self.host and isinstance(pid, int) and not psutil.pid_exists(pid)

    def _check_others(self) -> None:
        now = datetime.now(UTC)
        for info in list(self.storage.list("locks/")):
            if info.key == self.key:
                continue
            try:
                body = json.loads(self.storage.get(info.key))
                when = datetime.fromisoformat(body["time"])
            except NotFound:
                continue
            except (ValueError, KeyError, TypeError):
                log.warning("removing unreadable lock %s", info.key)
                self.storage.delete([info.key])
                continue
            if now - when > STALE_AFTER or self._dead_here(body):
                log.info(
                    "removing stale lock of %s pid %s from %s", body["host"], body["pid"], when
                )
                self.storage.delete([info.key])
                continue
            if self.exclusive or body.get("exclusive"):
                kind = "exclusively" if body.get("exclusive") else "by a shared lock"
                raise LockError(
                    f"repository is locked {kind} by {body.get('host')} pid {body.get('pid')}"
                    f" since {when:%Y-%m-%d %H:%M:%S}Z; retry later"
                )
