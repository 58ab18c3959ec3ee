"""The case store's database connection: one connection per thread, one transaction
per change (`_tx`) with every database error made one line and a broken connection
replaced, so an outage of the store ends by itself; and the per-fingerprint lock."""

from __future__ import annotations

import atexit
import contextlib
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agents.cases.store.errors import CaseStoreError
from agents.cases.store.schema import migrate, placeholders, sqlite_current


class Database:
    """The bottom layer of `CaseStore`: its URL's database, reached through `_tx`.

    Every connection still open at exit is closed (`_close_at_exit`): the command-line
    process exits without a final garbage collection (`agents.cli._no_collection_at_exit`),
    which was what closed a SQLite connection still referenced from a cycle, and one
    left open leaves the committed cases in the `-wal` file beside the database, not in
    it (a copy of `cases.db` alone then has no cases)."""

    url: str
    kind: str  # "sqlite" or "postgres"
    _local: threading.local
    _ready: bool

    # --- connections -------------------------------------------------------------------

    def _connect(self) -> Any:
        if self.kind == "postgres":
            import psycopg

            # no statement waits for ever on a lock another session holds
            conn = psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=10,
                options="-c statement_timeout=60000 -c lock_timeout=30000",
            )
            _open.add(conn)
            return conn
        path = sqlite_path(self.url)
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(
            path, timeout=30, isolation_level=None, check_same_thread=False, factory=_SQLite
        )
        _open.add(db)
        db.execute("PRAGMA busy_timeout=30000")
        _write_ahead(db)
        return db

    def _drop(self) -> None:
        """Forget this thread's connection (after an error it may be broken)."""
        db = getattr(self._local, "db", None)
        self._local.db = None
        if db is not None:
            with contextlib.suppress(Exception):  # closing a dead connection
                db.close()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Every change made inside happens in one transaction, or none does (one
        Alertmanager message: all of its alerts, or nothing)."""
        with self._tx():
            yield

    @contextmanager
    def _tx(self, read: bool = False) -> Iterator[Any]:
        """One transaction on this thread's connection (inside `batch`, the batch's).
        `read`: it only reads, and on SQLite starts deferred, reading the last committed
        state at once while another agent writes (WAL), where a write transaction would
        wait up to 30 s for the write lock: a scrape of /metrics or /status must not.
        Every database or network error becomes a one-line CaseStoreError, and a broken
        connection is replaced on the next call, so an outage of the store ends by
        itself when the store is back; tables that vanished (a database dropped and
        created again) are created again."""
        if getattr(self._local, "depth", 0):
            self._local.depth += 1
            try:
                yield self._local.db
            finally:
                self._local.depth -= 1
            return
        try:
            db = getattr(self._local, "db", None)
            if db is None:
                db = self._local.db = self._connect()
            if not self._ready and self.kind == "sqlite" and sqlite_current(db):
                self._ready = True
            deferred = read and self._ready  # a migration writes
            db.execute("BEGIN IMMEDIATE" if self.kind == "sqlite" and not deferred else "BEGIN")
        except Exception as exc:
            self._drop()
            raise CaseStoreError(
                f"case store {_safe(self.url)} unreachable: {_line(exc)}"
            ) from None
        self._local.depth = 1
        try:
            if not self._ready:
                migrate(db, self.kind)
            yield db
        except BaseException as exc:
            self._local.depth = 0
            try:
                db.execute("ROLLBACK")
            except Exception:
                self._drop()
            if _is_db_error(exc):
                self._drop()
                if _missing_table(exc):
                    self._ready = False
                raise CaseStoreError(f"case store {_safe(self.url)}: {_line(exc)}") from None
            raise
        self._local.depth = 0
        try:
            db.execute("COMMIT")
        except Exception as exc:
            self._drop()
            raise CaseStoreError(f"case store {_safe(self.url)}: {_line(exc)}") from None
        self._ready = True

    def _q(self, sql: str) -> str:
        return placeholders(sql, self.kind)

    def _lock_fingerprint(self, db: Any, fingerprint: str) -> None:
        """Serialise changes of one fingerprint across agents (SQLite's single writer
        already does)."""
        if self.kind == "postgres":
            db.execute("SELECT pg_advisory_xact_lock(72115, hashtext(%s))", (fingerprint,))


def _write_ahead(db: sqlite3.Connection, wait: float = 30.0) -> None:
    """Put the store in WAL mode, waiting out other connections. On a new store the
    switch needs the file to itself, and SQLite answers "database is locked" at once,
    without its busy handler, when another connection holds it: the agent's first
    jobs and the Alertmanager intake opening a new store together lost an alert (503)
    that way. Once in WAL mode the switch is a no-op that never conflicts."""
    deadline = time.monotonic() + wait
    pause = 0.005
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


class _SQLite(sqlite3.Connection):
    """A SQLite connection that `_open` can refer to weakly."""


_open: weakref.WeakSet[Any] = weakref.WeakSet()  # the stores' connections not yet freed


@atexit.register
def _close_at_exit() -> None:
    """Close every store connection still open (SQLite then checkpoints its WAL into
    the database file and removes it); a connection in use is left as it is."""
    for conn in list(_open):
        with contextlib.suppress(Exception):
            conn.close()


def _is_db_error(exc: BaseException) -> bool:
    """A database driver's error (sqlite3 or psycopg), as opposed to a bug of ours."""
    return isinstance(exc, sqlite3.Error) or type(exc).__module__.startswith("psycopg")


def _line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def _safe(url: str) -> str:
    """The store URL without its query string (which could carry options or secrets)."""
    return url.split("?", 1)[0]


def sqlite_path(url: str) -> Path:
    """The file of a `sqlite:///PATH` URL: always absolute (`sqlite:///var/lib/x.db` is
    /var/lib/x.db, wherever the command runs), so every command reads the daemon's store."""
    return Path("/" + url.removeprefix("sqlite://").lstrip("/"))


def _missing_table(exc: BaseException) -> bool:
    message = str(exc)
    return "no such table" in message or ("relation" in message and "does not exist" in message)
