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
        self.lost = False  # another process removed this lock

    def __enter__(self) -> RepositoryLock:
        deadline = time.monotonic() + self.wait
        while True:
            # written first: the others are then judged by the storage's clock (our own
            # lock's write time), and a racing exclusive lock sees ours
            self._write()
            try:
                self._check_others()
                break
            except LockError as exc:
                self.storage.delete([self.key])
                if time.monotonic() >= deadline:
                    raise
                log.info("%s; waiting up to %.0fs", exc, deadline - time.monotonic())
                time.sleep(min(LOCK_POLL, max(0.1, deadline - time.monotonic())))
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
            # unverified (a HEAD less on S3): a lock left behind is stale at once for
            # this host (its process is gone) and after STALE_AFTER for the others
            self.storage.delete([self.key], verify=False)
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

    def verify(self) -> None:
        """Raise LockError when this lock is gone: another process took it for stale (a
        pause or a wrong clock) and may have pruned what this one wrote. Called before a
        commit, so nothing is committed on data that may have been deleted."""
        if not self.lost:
            try:
                self.storage.stat(self.key)
                return
            except NotFound:
                self.lost = True
        raise LockError(
            "this process's repository lock was removed by another process that took it for"
            " stale; nothing was committed: run again"
        )

    def _refresh(self) -> None:
        while not self._stop.wait(REFRESH_EVERY.total_seconds()):
            try:
                self.storage.stat(self.key)  # never re-create a lock another process removed
                self._write()
            except NotFound:
                self.lost = True
                log.error("repository lock %s was removed by another process", self.key)
                return
            except BackupError as error:
                log.warning("could not refresh lock %s: %s", self.key, error)

    def _dead_here(self, body: dict[str, object]) -> bool:
        """A lock of this host whose process is gone (killed) is stale at once
        (`process_exists` judges every pid, a bool or out-of-range one included)."""
        pid = body.get("pid")
        return body.get("host") == self.host and isinstance(pid, int) and not process_exists(pid)

    def _check_others(self) -> None:
        infos = list(self.storage.list("locks/"))
        own = next((i.modified for i in infos if i.key == self.key), None)
        now = own or datetime.now(UTC)
        for info in infos:
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
            # the storage's clock when it can tell: a host with a wrong clock cannot make
            # its own lock look stale to the others, nor theirs to itself
            written = info.modified or when
            if now - written > STALE_AFTER or self._dead_here(body):
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


def process_exists(pid: int) -> bool:
    """Whether a process (not a thread of another one) has this ID on this host, as
    `psutil.pid_exists` answers on Linux where /proc shows it, without importing psutil
    into every command that opens a repository. Only a proof of absence makes it False:
    kill() finding no such ID, or /proc naming it a thread. Where that cannot be told (an
    ID out of range, /proc missing or hiding other users' processes: hidepid), it exists,
    so a lock is then taken for live and only ages out, never broken early."""
    if type(pid) is not int or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process
    except (OverflowError, OSError):
        return True
    try:  # kill() takes a thread's ID too; a thread's Tgid is its process's ID
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Tgid:"):
                    return int(line.split()[1]) == pid
    except (OSError, ValueError, IndexError):
        pass  # unreadable (hidepid, no /proc, gone since): kill() said it exists
    return True
