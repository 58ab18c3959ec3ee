"""The agent's state database (SQLite under `state_dir`): job runs, last results, daemon info.

It is what lets a restarted daemon know that the 02:00 backup never ran, and what
`opsagent status` reads. One connection per call keeps it safe across job threads.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agents.errors import OpsagentError
from agents.results import CheckResult, Severity, Status

SCHEMA_VERSION = 5

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE jobs (
        name TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        last_start TEXT,
        last_finish TEXT,
        last_success TEXT,
        last_status TEXT,
        last_result TEXT,
        consecutive_failures INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        started_at TEXT NOT NULL,
        status TEXT NOT NULL,
        duration_seconds REAL NOT NULL,
        result TEXT NOT NULL
    );
    CREATE INDEX runs_by_name ON runs (name, started_at);
    """,
    2: """
    CREATE TABLE pack_checks (pack TEXT PRIMARY KEY, checked_at TEXT NOT NULL);
    """,
    # since when a check or job has had its current status (`opsagent status`)
    3: """
    ALTER TABLE jobs ADD COLUMN status_since TEXT;
    UPDATE jobs SET status_since = last_finish;
    """,
    # who did what, when, to what, with which outcome (fleet commands and other actions)
    4: """
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        outcome TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX audit_by_time ON audit (at);
    """,
    # the agent's own upkeep (case outbox delivery, the textfile writer) is marked, so it
    # is never read back as a check result; rows of older agents are marked by kind
    5: """
    ALTER TABLE jobs ADD COLUMN upkeep INTEGER NOT NULL DEFAULT 0;
    UPDATE jobs SET upkeep = 1 WHERE kind IN ('outbox', 'textfile');
    """,
}

# Checks run every few seconds; the run history keeps jobs (backup, restore test,
# prune) and only failures and status changes of checks, trimmed to this many rows.
MAX_RUN_ROWS = 20_000

_TIMER_RUN = "timer_run:"
_JOB_COLUMNS = (
    "name, kind, last_start, last_finish, last_success, last_status, last_result,"
    " consecutive_failures, status_since"
)  # meta key prefix: the last run of each systemd timer


BUSY_TIMEOUT = 30.0  # seconds a statement waits for another process's write
START_WAIT = 2.0  # ... and a job's start mark, which is not worth delaying the job


class StateError(OpsagentError):
    """The state database cannot be used; carries a one-line message."""


@dataclass(frozen=True)
class JobState:
    name: str
    kind: str
    last_start: datetime | None
    last_finish: datetime | None
    last_success: datetime | None
    last_status: str | None
    last_result: CheckResult | None
    consecutive_failures: int
    status_since: datetime | None = None


@dataclass(frozen=True)
class AuditRecord:
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    outcome: str
    detail: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "at": self.at.isoformat()}


class StateDB:
    """Small typed accessors over the state database."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._open_first_time()
        except sqlite3.Error as exc:
            raise StateError(f"{path}: state database unusable: {exc}") from None
        except OSError as exc:
            raise StateError(f"{path}: cannot create state directory: {exc.strerror}") from None

    def _open_first_time(self) -> None:
        """Switch to WAL and migrate. Two processes creating the database at once can get
        "database is locked" from the journal-mode switch, which SQLite does not retry
        through the busy timeout, or both read version 0 and the second finds the tables
        made (or a column added: "duplicate column name"): retry for up to 30 seconds. Each
        step commits with its version, so the retry reads the version the other wrote."""
        deadline = time.monotonic() + 30
        while True:
            try:
                with self._connect(translate=False) as db:
                    db.execute("PRAGMA journal_mode=WAL")
                    self._migrate(db)
                return
            except sqlite3.OperationalError as exc:
                racing = any(
                    words in str(exc) for words in ("locked", "already exists", "duplicate column")
                )
                if not racing or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @contextmanager
    def _connect(
        self, translate: bool = True, wait: float | None = None
    ) -> Iterator[sqlite3.Connection]:
        """A connection that waits up to BUSY_TIMEOUT for another writer. A database still
        locked after that (or unreadable, or full) is a StateError naming it, a one-line
        error for the command line and a warning where the state is secondary (the
        audit record of an action already done), never a traceback."""
        try:
            wait = BUSY_TIMEOUT if wait is None else min(wait, BUSY_TIMEOUT)
            db = sqlite3.connect(self.path, timeout=wait, isolation_level=None)
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: state database unusable: {exc}") from None
        try:
            db.execute(f"PRAGMA busy_timeout={int(wait * 1000)}")
            yield db
        except sqlite3.Error as exc:
            if not translate:
                raise
            raise StateError(f"{self.path}: state database unusable: {exc}") from None
        finally:
            db.close()

    def _migrate(self, db: sqlite3.Connection) -> None:
        has_meta = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
        ).fetchone()
        version = 0
        if has_meta:
            row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise StateError(
                f"{self.path}: state database schema {version} is newer than this agent "
                f"understands ({SCHEMA_VERSION}); upgrade opsagent"
            )
        if 0 < version < SCHEMA_VERSION:  # forward only, after a copy to go back to
            copy = self.path.with_name(f"{self.path.name}.schema{version}.bak")
            target_db = sqlite3.connect(copy)
            try:
                db.backup(target_db)
            finally:
                target_db.close()
        for target in range(version + 1, SCHEMA_VERSION + 1):
            db.executescript(
                "BEGIN IMMEDIATE;"
                + _MIGRATIONS[target]
                + "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version',"
                + f" '{target}'); COMMIT;"
            )

    # --- meta --------------------------------------------------------------------------

    def set_meta(self, key: str, value: str) -> None:
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def meta(self, key: str) -> str | None:
        with self._connect() as db:
            row = db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def record_daemon_start(self, version: str) -> None:
        now = _iso(datetime.now(UTC))
        for key, value in (("daemon_started_at", now), ("daemon_pid", str(os.getpid()))):
            self.set_meta(key, value)
        self.set_meta("daemon_version", version)
        self.set_meta("daemon_stopped_at", "")

    def record_daemon_stop(self) -> None:
        self.set_meta("daemon_stopped_at", _iso(datetime.now(UTC)))

    def record_timer_run(self, unit: str, when: datetime) -> None:
        """A job command ran from this systemd timer (see `agents.timers`)."""
        self.set_meta(f"{_TIMER_RUN}{unit}", _iso(when))

    def timer_runs(self) -> dict[str, datetime]:
        """The last run of each systemd timer that ran a job command here."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT key, value FROM meta WHERE substr(key, 1, ?) = ?",
                (len(_TIMER_RUN), _TIMER_RUN),
            ).fetchall()
        return {key.removeprefix(_TIMER_RUN): datetime.fromisoformat(value) for key, value in rows}

    # --- jobs --------------------------------------------------------------------------

    def record_start(self, name: str, kind: str, when: datetime, upkeep: bool = False) -> None:
        """A job (or, with `upkeep`, a run of the agent's own upkeep) started. Waits a
        short while only for another writer: a check must not start 30 s late because
        the state is locked (its result is kept and written later, see `Pipeline`)."""
        with self._connect(wait=START_WAIT) as db:
            db.execute(
                "INSERT INTO jobs (name, kind, last_start, upkeep) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET last_start=excluded.last_start,"
                " upkeep=excluded.upkeep",
                (name, kind, _iso(when), int(upkeep)),
            )

    def record_upkeep(self, run: CheckResult, keep_history: bool = False) -> None:
        """Store a finished run of the agent's own upkeep: kept apart from the check and
        job results (`jobs`), read back with `upkeep`."""
        self.record_result(run, keep_history=keep_history, upkeep=True)

    def record_result(
        self, result: CheckResult, keep_history: bool = True, upkeep: bool = False
    ) -> None:
        """Store a finished run: last status always, a history row when asked."""
        finished = result.started_at.timestamp() + result.duration_seconds
        finish_iso = _iso(datetime.fromtimestamp(finished, UTC))
        success_iso = finish_iso if result.ok else None
        payload = result.to_json()
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                """INSERT INTO jobs (name, kind, last_start, last_finish, last_success,
                       last_status, last_result, consecutive_failures, status_since, upkeep)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(name) DO UPDATE SET
                       kind=excluded.kind,
                       upkeep=excluded.upkeep,
                       status_since=CASE WHEN jobs.last_status IS excluded.last_status
                           AND jobs.status_since IS NOT NULL
                           THEN jobs.status_since ELSE excluded.last_finish END,
                       last_finish=excluded.last_finish,
                       last_success=COALESCE(excluded.last_success, jobs.last_success),
                       last_status=excluded.last_status,
                       last_result=excluded.last_result,
                       consecutive_failures=CASE WHEN excluded.last_status='ok' THEN 0
                           ELSE jobs.consecutive_failures + 1 END""",
                (
                    result.name,
                    result.kind,
                    _iso(result.started_at),
                    finish_iso,
                    success_iso,
                    result.status.value,
                    payload,
                    0 if result.ok else 1,
                    finish_iso,
                    int(upkeep),
                ),
            )
            if keep_history:
                db.execute(
                    "INSERT INTO runs (name, kind, started_at, status, duration_seconds, result)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        result.name,
                        result.kind,
                        _iso(result.started_at),
                        result.status.value,
                        result.duration_seconds,
                        payload,
                    ),
                )
                db.execute(
                    "DELETE FROM runs WHERE id <= (SELECT MAX(id) FROM runs) - ?",
                    (MAX_RUN_ROWS,),
                )
            db.execute("COMMIT")

    def job(self, name: str) -> JobState | None:
        """The last run of one job, check or upkeep, by its name."""
        with self._connect() as db:
            row = db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE name=?", (name,)).fetchone()
        return _job_state(row) if row else None

    def jobs(self) -> list[JobState]:
        """The last result of every check and job (not the agent's upkeep), by name."""
        return self._jobs(upkeep=False)

    def upkeep(self) -> list[JobState]:
        """The last run of each of the agent's upkeep jobs (`cases`, `textfile`), by name."""
        return self._jobs(upkeep=True)

    def _jobs(self, upkeep: bool) -> list[JobState]:
        with self._connect() as db:
            rows = db.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE upkeep=? ORDER BY name", (int(upkeep),)
            ).fetchall()
        return [_job_state(row) for row in rows]

    def runs(self, name: str | None = None, limit: int = 100) -> list[CheckResult]:
        """Recent runs, newest first."""
        query = "SELECT result FROM runs"
        args: tuple[Any, ...] = ()
        if name is not None:
            query += " WHERE name=?"
            args = (name,)
        query += " ORDER BY id DESC LIMIT ?"
        with self._connect() as db:
            rows = db.execute(query, (*args, limit)).fetchall()
        return [CheckResult.from_dict(json.loads(r[0])) for r in rows]

    def runs_between(
        self, kind: str, since: datetime, until: datetime, host: str = ""
    ) -> list[CheckResult]:
        """The kept runs of one kind that started in [since, until), oldest first: what a
        report over a period reads. A row whose result cannot be read stays in, as a
        failed run of `host` saying so: evidence that cannot be read proves nothing, and
        one bad row must not cost the period's report."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT name, started_at, result FROM runs"
                " WHERE kind=? AND started_at >= ? AND started_at < ? ORDER BY started_at, id",
                (kind, _iso(since), _iso(until)),
            ).fetchall()
        return [_run_of(kind, host, *row) for row in rows]

    def first_run_at(self) -> datetime | None:
        """When the oldest kept run started: the history is trimmed (MAX_RUN_ROWS), so a
        report over a longer period says from when it has facts."""
        with self._connect() as db:
            row = db.execute("SELECT MIN(started_at) FROM runs").fetchone()
        return _parse(row[0]) if row else None

    # --- audit ----------------------------------------------------------------------

    def audit(
        self, actor: str, action: str, target: str, outcome: str, detail: dict[str, Any]
    ) -> int:
        """Append one audit record; returns its id. Records are never updated."""
        with self._connect() as db:
            cursor = db.execute(
                "INSERT INTO audit (at, actor, action, target, outcome, detail)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    _iso(datetime.now(UTC)),
                    actor,
                    action,
                    target,
                    outcome,
                    json.dumps(detail, sort_keys=True, default=str),
                ),
            )
            return int(cursor.lastrowid or 0)

    def audit_records(
        self, since: datetime | None = None, action_prefix: str = "", limit: int = 100
    ) -> list[AuditRecord]:
        """Audit records, newest first."""
        query = (
            "SELECT id, at, actor, action, target, outcome, detail FROM audit WHERE action LIKE ?"
        )
        args: list[Any] = [action_prefix.replace("%", "") + "%"]
        if since is not None:
            query += " AND at >= ?"
            args.append(_iso(since))
        query += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        with self._connect() as db:
            rows = db.execute(query, args).fetchall()
        return [
            AuditRecord(
                id=row[0],
                at=datetime.fromisoformat(row[1]),
                actor=row[2],
                action=row[3],
                target=row[4],
                outcome=row[5],
                detail=json.loads(row[6]),
            )
            for row in rows
        ]

    # --- rolling data verification -----------------------------------------------------

    def record_pack_checks(self, packs: list[str], when: datetime) -> None:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT OR REPLACE INTO pack_checks (pack, checked_at) VALUES (?, ?)",
                [(p, _iso(when)) for p in packs],
            )
            db.execute("COMMIT")

    def pack_checks(self) -> dict[str, datetime]:
        with self._connect() as db:
            rows = db.execute("SELECT pack, checked_at FROM pack_checks").fetchall()
        return {pack: datetime.fromisoformat(when) for pack, when in rows}


def _job_state(row: tuple[Any, ...]) -> JobState:
    return JobState(
        name=row[0],
        kind=row[1],
        last_start=_parse(row[2]),
        last_finish=_parse(row[3]),
        last_success=_parse(row[4]),
        last_status=row[5],
        last_result=CheckResult.from_dict(json.loads(row[6])) if row[6] else None,
        consecutive_failures=int(row[7]),
        status_since=_parse(row[8]),
    )


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _run_of(kind: str, host: str, name: str, started_at: str, result: str) -> CheckResult:
    """One kept run, or a failed stand-in naming why its record is unreadable."""
    try:
        run = CheckResult.from_dict(json.loads(result))
        if run.started_at.tzinfo is not None:
            return run
        return dataclasses.replace(run, started_at=run.started_at.replace(tzinfo=UTC))
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        why = type(exc).__name__
    return CheckResult(
        name=name,
        kind=kind,
        host=host,
        status=Status.FAILED,
        severity=Severity.CRITICAL,
        summary=f"the run's record in the state database is unreadable ({why})",
        started_at=_aware(started_at),
    )


def _aware(text: str) -> datetime:
    """A kept run's start as its row has it, in UTC when the row gives no zone."""
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return datetime.fromtimestamp(0, UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
