"""The case store: SQLite (embedded default, WAL) or PostgreSQL (shared by many agents).

Same schema on both, versioned migrations applied at start-up. At most one open case
per fingerprint is enforced by the database itself (a unique partial index), and a
failure is recorded under a per-fingerprint lock, so agents racing on the same failure
create one case, count every occurrence and never burn a case number.

Every change of a case, whoever makes it (a check's rule, the Alertmanager intake,
the command line, the fleet), goes through `CaseStore._record` inside the change's
own transaction: the change, its timeline entry and one outbox row per notifier that
receives the case's severity are committed together or not at all. Notifiers are
known by the names the agents register (`register_notifiers`), so a case opened by an
agent with no notifiers of its own is still delivered by one that has them.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.errors import OpsagentError
from agents.records.cases import (
    CaseDetail,
    CaseEvent,
    CaseListItem,
    CaseRecord,
    NotificationRecord,
    NotificationsDocument,
)
from agents.results import Severity

if TYPE_CHECKING:
    from agents.cases.sla import Clock

SCHEMA_VERSION = 3
OPEN_STATUSES = ("open", "acknowledged", "reopened")
_OPEN_SQL = "('open', 'acknowledged', 'reopened')"

_SCHEMA = {
    "sqlite": [
        "CREATE TABLE IF NOT EXISTS case_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE cases (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            fingerprint TEXT NOT NULL, title TEXT NOT NULL, severity TEXT NOT NULL,
            status TEXT NOT NULL, source TEXT NOT NULL, host TEXT NOT NULL,
            occurrences INTEGER NOT NULL, first_seen TEXT NOT NULL, last_seen TEXT NOT NULL,
            acknowledged_at TEXT, acknowledged_by TEXT, resolved_at TEXT,
            response_due TEXT NOT NULL, resolution_due TEXT NOT NULL)""",
        f"CREATE UNIQUE INDEX one_open_case ON cases (fingerprint) WHERE status IN {_OPEN_SQL}",
        """CREATE TABLE case_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT, case_id INTEGER NOT NULL REFERENCES cases(id),
            at TEXT NOT NULL, kind TEXT NOT NULL, actor TEXT, text TEXT)""",
        "CREATE INDEX case_events_by_case ON case_events (case_id, id)",
    ],
    "postgres": [
        "CREATE TABLE IF NOT EXISTS case_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE cases (
            id BIGSERIAL PRIMARY KEY,
            fingerprint TEXT NOT NULL, title TEXT NOT NULL, severity TEXT NOT NULL,
            status TEXT NOT NULL, source TEXT NOT NULL, host TEXT NOT NULL,
            occurrences INTEGER NOT NULL, first_seen TEXT NOT NULL, last_seen TEXT NOT NULL,
            acknowledged_at TEXT, acknowledged_by TEXT, resolved_at TEXT,
            response_due TEXT NOT NULL, resolution_due TEXT NOT NULL)""",
        f"CREATE UNIQUE INDEX one_open_case ON cases (fingerprint) WHERE status IN {_OPEN_SQL}",
        """CREATE TABLE case_events (
            id BIGSERIAL PRIMARY KEY, case_id BIGINT NOT NULL REFERENCES cases(id),
            at TEXT NOT NULL, kind TEXT NOT NULL, actor TEXT, text TEXT)""",
        "CREATE INDEX case_events_by_case ON case_events (case_id, id)",
    ],
}

# A notification is written in the same transaction as the case change it reports
# (the outbox), then delivered by `notify.Dispatcher` with retries.
_OUTBOX = {
    "sqlite": """CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT, case_id INTEGER NOT NULL, notifier TEXT NOT NULL,
        event TEXT NOT NULL, created_at TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL, lease_until TEXT, delivered_at TEXT, failed_at TEXT,
        last_error TEXT)""",
    "postgres": """CREATE TABLE outbox (
        id BIGSERIAL PRIMARY KEY, case_id BIGINT NOT NULL, notifier TEXT NOT NULL,
        event TEXT NOT NULL, created_at TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL, lease_until TEXT, delivered_at TEXT, failed_at TEXT,
        last_error TEXT)""",
}
# Version 3: the notifier registry (who can deliver what), which agent handled each
# outbox row (honest per-agent counts), and the start of a case's SLA clock (a
# reopened case gets fresh clocks).
_V3 = [
    """CREATE TABLE notifiers (
        name TEXT NOT NULL, agent TEXT NOT NULL, severities TEXT NOT NULL,
        seen_at TEXT NOT NULL, PRIMARY KEY (name, agent))""",
    "ALTER TABLE outbox ADD COLUMN handled_by TEXT",
    "ALTER TABLE outbox ADD COLUMN resent_as BIGINT",
    "ALTER TABLE cases ADD COLUMN clock_start TEXT",
    "CREATE INDEX outbox_by_case ON outbox (case_id, notifier, id)",
]
NOTIFIED_EVENTS = (
    "opened",
    "severity changed",
    "acknowledged",
    "resolved",
    "reopened",
    "sla breached",
)
# a registration older than this no longer gets rows written for it (a notifier
# removed from every config stops collecting notifications nobody will send)
REGISTRATION_TTL = timedelta(days=7)
# a notifier no agent has registered within this is "undeliverable" right now
LIVE_WITHIN = timedelta(minutes=10)
# failed deliveries count as a problem for this long (or while their case is open)
FAILED_RECENT = timedelta(days=1)
# rows waiting longer than this are reported as stuck
STUCK_AFTER = timedelta(minutes=15)

_COLUMNS = (
    "id, fingerprint, title, severity, status, source, host, occurrences, first_seen,"
    " last_seen, acknowledged_at, acknowledged_by, resolved_at, response_due, resolution_due,"
    " clock_start"
)
_ALLOWED_FROM = {
    "acknowledged": ("open", "reopened"),
    "resolved": OPEN_STATUSES,
    "reopened": ("resolved", "closed"),
    "closed": ("resolved",),
}


class CaseStoreError(OpsagentError):
    """The case store cannot be used or the change is not allowed; one line."""


class CaseNotFound(CaseStoreError):
    """No case with that ID: the caller asked for something that does not exist."""

    exit_code = 2


class CaseRefused(CaseStoreError):
    """The change does not apply to the case in its present state."""

    exit_code = 2


@dataclass(frozen=True)
class Case:
    id: int
    fingerprint: str
    title: str
    severity: Severity
    status: str
    source: str
    host: str
    occurrences: int
    first_seen: datetime
    last_seen: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    response_due: datetime
    resolution_due: datetime
    clock_start: datetime | None = None

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def clock_started(self) -> datetime:
        """When the SLA clocks started: the opening, or the last reopening."""
        return self.clock_start or self.first_seen

    def to_dict(self) -> dict[str, Any]:
        data = {
            k: (
                v.isoformat()
                if isinstance(v, datetime)
                else v.value
                if isinstance(v, Severity)
                else v
            )
            for k, v in self.__dict__.items()
        }
        data["clock_start"] = self.clock_started.isoformat()
        return data

    def to_record(self) -> CaseRecord:
        """The case as the typed record its JSON is."""
        return CaseRecord.model_validate(self.to_dict())

    def list_item(self, now: datetime) -> CaseListItem:
        """The case as `cases list --json` prints it: with the seconds left on its clocks."""
        return CaseListItem.model_validate(
            {
                **self.to_dict(),
                "response_left_seconds": (self.response_due - now).total_seconds(),
                "resolution_left_seconds": (self.resolution_due - now).total_seconds(),
            }
        )


@dataclass(frozen=True)
class Event:
    at: datetime
    kind: str
    actor: str | None
    text: str | None

    def to_record(self) -> CaseEvent:
        """The timeline entry as the typed record its JSON is."""
        return CaseEvent(at=self.at.isoformat(), kind=self.kind, actor=self.actor, text=self.text)


@dataclass(frozen=True)
class OutboxItem:
    id: int
    case_id: int
    notifier: str
    event: str
    attempts: int


@dataclass(frozen=True)
class Notification:
    """One outbox row, as `cases notifications` lists it."""

    id: int
    case_id: int
    notifier: str
    event: str
    state: str  # waiting, delivered, failed
    attempts: int
    created_at: datetime
    last_error: str | None
    handled_by: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            k: v.isoformat() if isinstance(v, datetime) else v for k, v in self.__dict__.items()
        }

    def to_record(self) -> NotificationRecord:
        """The outbox row as the typed record its JSON is."""
        return NotificationRecord.model_validate(self.to_dict())


@dataclass(frozen=True)
class Failure:
    """One report of a failure: what a rule hands the store."""

    fingerprint: str
    title: str
    severity: Severity
    source: str
    host: str
    at: datetime
    response_due: datetime
    resolution_due: datetime


class CaseStore:
    """One store URL: `sqlite:///path` or `postgresql://...`.

    `notifiers` are (name, severities) that always get rows, on top of the registry;
    `clock` gives due times when a case's clocks restart (reopen) or its severity
    changes (default: the support policy's calendar and targets)."""

    def __init__(
        self,
        url: str,
        notifiers: Iterable[tuple[str, frozenset[Severity]]] = (),
        clock: Clock | None = None,
        lazy: bool = False,
    ) -> None:
        self.url = url
        self.notifiers = list(notifiers)
        self._clock = clock
        self.kind = "postgres" if url.startswith(("postgresql://", "postgres://")) else "sqlite"
        self._local = threading.local()
        self._ready = False
        if not lazy:
            with self._tx():
                pass  # connects and migrates

    @property
    def clock(self) -> Clock:
        if self._clock is None:
            from agents.cases.sla import sla_clock
            from agents.config import CasesConfig

            self._clock = sla_clock(CasesConfig())
        return self._clock

    # --- connections -------------------------------------------------------------------

    def _connect(self) -> Any:
        if self.kind == "postgres":
            import psycopg

            # no statement waits for ever on a lock another session holds
            return psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=10,
                options="-c statement_timeout=60000 -c lock_timeout=30000",
            )
        path = sqlite_path(self.url)
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA busy_timeout=30000")
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
    def _tx(self) -> Iterator[Any]:
        """One transaction on this thread's connection (inside `batch`, the batch's).
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
            db.execute("BEGIN IMMEDIATE" if self.kind == "sqlite" else "BEGIN")
        except Exception as exc:
            self._drop()
            raise CaseStoreError(
                f"case store {_safe(self.url)} unreachable: {_line(exc)}"
            ) from None
        self._local.depth = 1
        try:
            if not self._ready:
                self._migrate(db)
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
        return sql.replace("?", "%s") if self.kind == "postgres" else sql

    def _migrate(self, db: Any) -> None:
        if self.kind == "postgres":  # one migrator at a time, from the very first statement
            db.execute("SELECT pg_advisory_xact_lock(72114)")
        db.execute(_SCHEMA[self.kind][0])
        row = db.execute(
            self._q("SELECT value FROM case_meta WHERE key = ?"), ("schema_version",)
        ).fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise CaseStoreError(
                f"case store schema {version} is newer than this agent ({SCHEMA_VERSION});"
                " upgrade opsagent"
            )
        if version == SCHEMA_VERSION:
            return
        if version < 1:
            for statement in _SCHEMA[self.kind][1:]:
                db.execute(statement)
        if version < 2:
            db.execute(_OUTBOX[self.kind])
            db.execute("CREATE INDEX outbox_due ON outbox (delivered_at, next_attempt_at)")
        if version < 3:
            for statement in _V3:
                db.execute(statement)
        db.execute(self._q("DELETE FROM case_meta WHERE key = ?"), ("schema_version",))
        db.execute(
            self._q("INSERT INTO case_meta (key, value) VALUES (?, ?)"),
            ("schema_version", str(SCHEMA_VERSION)),
        )

    # --- the one path of every change ----------------------------------------------------

    def _record(
        self,
        db: Any,
        case_id: int,
        at: datetime,
        kind: str,
        actor: str | None,
        text: str | None,
        skip: Iterable[str] = (),
    ) -> None:
        """The timeline entry of a change and, for the changes people are told about, one
        outbox row per notifier that receives the case's severity, in the caller's
        transaction. (A case nobody receives is reported by `notification_problems`.)"""
        db.execute(
            self._q(
                "INSERT INTO case_events (case_id, at, kind, actor, text) VALUES (?, ?, ?, ?, ?)"
            ),
            (case_id, _iso(at), kind, clean(actor), clean(text)),
        )
        if kind not in NOTIFIED_EVENTS:
            return
        row = db.execute(
            self._q("SELECT severity, source FROM cases WHERE id = ?"), (case_id,)
        ).fetchone()
        severity = Severity(row[0])
        # a case about a notifier is never sent to that notifier
        about = {row[1].removeprefix("notifier:")} if row[1].startswith("notifier:") else set()
        # the notifiers told of this case before keep hearing of it while they exist (a
        # case lowered to minor still gets its resolve to the pager that was paged)
        receivers, known = self._receivers(db, severity)
        told = {
            r[0]
            for r in db.execute(
                self._q("SELECT DISTINCT notifier FROM outbox WHERE case_id = ?"), (case_id,)
            ).fetchall()
        }
        names = sorted((receivers | (told & known)) - about - set(skip))
        for name in names:
            db.execute(
                self._q(
                    "INSERT INTO outbox (case_id, notifier, event, created_at,"
                    " next_attempt_at) VALUES (?, ?, ?, ?, ?)"
                ),
                (case_id, name, kind, _iso(at), _iso(at)),
            )

    def _receivers(self, db: Any, severity: Severity) -> tuple[set[str], set[str]]:
        """(the notifiers that get a row for a change of a case of this severity, every
        notifier that exists): this store's own, and every one an agent registered within
        REGISTRATION_TTL."""
        names = {name for name, severities in self.notifiers if severity in severities}
        known = {name for name, _ in self.notifiers}
        since = _iso(datetime.now(UTC) - REGISTRATION_TTL)
        rows = db.execute(
            self._q("SELECT name, severities FROM notifiers WHERE seen_at >= ?"), (since,)
        ).fetchall()
        names.update(name for name, levels in rows if severity.value in levels.split(","))
        known.update(name for name, _ in rows)
        return names, known

    def _change(
        self,
        case_id: int,
        kind: str,
        at: datetime,
        actor: str | None,
        text: str | None = None,
    ) -> Case:
        """A status change (acknowledge, resolve, reopen, close) of one case."""
        with self._tx() as db:
            case = self._get(db, case_id, lock=True)
            if case.status not in _ALLOWED_FROM[kind]:
                raise CaseRefused(f"case #{case_id} is {case.status}; cannot make it {kind}")
            if kind == "acknowledged":
                db.execute(
                    self._q(
                        "UPDATE cases SET status = ?, acknowledged_at = ?,"
                        " acknowledged_by = ? WHERE id = ?"
                    ),
                    (kind, _iso(at), actor, case_id),
                )
            elif kind == "resolved":
                db.execute(
                    self._q("UPDATE cases SET status = ?, resolved_at = ? WHERE id = ?"),
                    (kind, _iso(at), case_id),
                )
            elif kind == "closed":
                db.execute(self._q("UPDATE cases SET status = ? WHERE id = ?"), (kind, case_id))
            else:
                if self._open_conflict(db, case):
                    raise CaseRefused(
                        f"case #{case_id} cannot reopen: another case is open for the same failure"
                    )
                text = self._restart_clocks(db, case, at, text)
            self._record(db, case_id, at, kind, actor, text)
            return self._get(db, case_id)

    def _restart_clocks(self, db: Any, case: Case, at: datetime, note: str | None) -> str:
        """Reopening is a new call for help: the case is unacknowledged again and both
        clocks start over at the reopening (the first clocks' breaches stay on the
        timeline). Returns the timeline text that says so."""
        due = self.clock(case.severity, at)
        db.execute(
            self._q(
                "UPDATE cases SET status = 'reopened', resolved_at = NULL, acknowledged_at = NULL,"
                " acknowledged_by = NULL, clock_start = ?, response_due = ?, resolution_due = ?"
                " WHERE id = ?"
            ),
            (_iso(at), _iso(due.response), _iso(due.resolution), case.id),
        )
        clocks = (
            f"clocks restart: respond by {_iso(due.response)}, resolve by {_iso(due.resolution)}"
        )
        return f"{note}; {clocks}" if note else clocks

    # --- changes -----------------------------------------------------------------------

    def record_failure(self, failure: Failure) -> tuple[Case, bool]:
        """Open a case for the failure, or count an occurrence on the open one.

        Returns the case and whether this call opened it. Atomic across processes: a
        per-fingerprint lock (PostgreSQL) or the single writer (SQLite) decides who
        opens, everyone else adds an occurrence; no insert ever conflicts, so case
        numbers stay contiguous."""
        at = _iso(failure.at)
        with self._tx() as db:
            self._lock_fingerprint(db, failure.fingerprint)
            row = self._open_row(db, failure.fingerprint, lock=True)
            if row is None:
                return self._open(db, failure, None), True
            case = _case(row)
            db.execute(
                self._q(
                    "UPDATE cases SET occurrences = occurrences + 1, last_seen = ? WHERE id = ?"
                ),
                (at, case.id),
            )
            self._record(db, case.id, failure.at, "occurrence", None, None)
            # a severity a person set stands until a person changes it again
            if failure.severity.rank > case.severity.rank and not self._set_by_hand(db, case.id):
                self._set_severity(db, case, failure.severity, failure.at, None, None)
            return self._get(db, case.id), False

    def open_case_by_hand(
        self,
        title: str,
        severity: Severity,
        host: str,
        at: datetime,
        actor: str | None,
        body: str | None = None,
        source: str = "manual",
    ) -> Case:
        """A case somebody opens (a phone call, an e-mail): its own fingerprint, its
        clocks from now, notified like any other."""
        due = self.clock(severity, at)
        with self._tx() as db:
            failure = Failure(
                f"manual:{uuid.uuid4().hex}",
                title,
                severity,
                source,
                host,
                at,
                due.response,
                due.resolution,
            )
            case = self._open(db, failure, actor)
            if body:
                self._record(db, case.id, at, "comment", actor, body)
            return case

    def _open(self, db: Any, failure: Failure, actor: str | None) -> Case:
        """Insert a new open case (clocks from the failure) and record its opening."""
        at = _iso(failure.at)
        row = db.execute(
            self._q(
                "INSERT INTO cases (fingerprint, title, severity, status, source, host,"
                " occurrences, first_seen, last_seen, response_due, resolution_due,"
                " clock_start) VALUES (?, ?, ?, 'open', ?, ?, 1, ?, ?, ?, ?, ?)"
                f" RETURNING {_COLUMNS}"
            ),
            (
                failure.fingerprint,
                clean(failure.title),
                failure.severity.value,
                clean(failure.source),
                clean(failure.host),
                at,
                at,
                _iso(failure.response_due),
                _iso(failure.resolution_due),
                at,
            ),
        ).fetchone()
        case = _case(row)
        self._record(db, case.id, failure.at, "opened", actor, failure.title)
        return case

    def set_severity(
        self, case_id: int, severity: Severity, at: datetime, actor: str | None, why: str | None
    ) -> Case:
        """Change an open case's severity; its clocks are recomputed from their start."""
        with self._tx() as db:
            case = self._get(db, case_id, lock=True)
            if not case.is_open:
                raise CaseRefused(f"case #{case_id} is {case.status}; reopen it first")
            if case.severity is severity:
                raise CaseRefused(f"case #{case_id} is already {severity.value}")
            self._set_severity(db, case, severity, at, actor, why)
            return self._get(db, case_id)

    def _set_severity(
        self,
        db: Any,
        case: Case,
        severity: Severity,
        at: datetime,
        actor: str | None,
        why: str | None,
    ) -> None:
        due = self.clock(severity, case.clock_started)
        db.execute(
            self._q(
                "UPDATE cases SET severity = ?, response_due = ?, resolution_due = ? WHERE id = ?"
            ),
            (severity.value, _iso(due.response), _iso(due.resolution), case.id),
        )
        text = f"{case.severity.value} -> {severity.value}"
        self._record(db, case.id, at, "severity changed", actor, f"{text}: {why}" if why else text)

    def reopen_recent(self, fingerprint: str, since: datetime, at: datetime) -> Case | None:
        """Reopen the case of this fingerprint resolved after `since`, if any (flapping)."""
        with self._tx() as db:
            self._lock_fingerprint(db, fingerprint)
            row = db.execute(
                self._q(
                    f"SELECT {_COLUMNS} FROM cases WHERE fingerprint = ? AND status = 'resolved'"
                    " AND resolved_at >= ? ORDER BY id DESC LIMIT 1"
                ),
                (fingerprint, _iso(since)),
            ).fetchone()
            if row is None or self._open_row(db, fingerprint) is not None:
                return None
            case = _case(row)
            text = self._restart_clocks(db, case, at, None)
            db.execute(
                self._q(
                    "UPDATE cases SET last_seen = ?, occurrences = occurrences + 1 WHERE id = ?"
                ),
                (_iso(at), case.id),
            )
            self._record(db, case.id, at, "reopened", None, text)
            return self._get(db, case.id)

    def resolve(self, case_id: int, at: datetime, actor: str | None, note: str | None) -> Case:
        return self._change(case_id, "resolved", at, actor, note)

    def close(self, case_id: int, at: datetime, actor: str | None) -> Case:
        return self._change(case_id, "closed", at, actor)

    def reopen(
        self, case_id: int, at: datetime, actor: str | None, note: str | None = None
    ) -> Case:
        return self._change(case_id, "reopened", at, actor, note)

    def acknowledge(self, case_id: int, at: datetime, actor: str | None) -> Case:
        return self._change(case_id, "acknowledged", at, actor)

    def comment(self, case_id: int, at: datetime, actor: str | None, text: str) -> Case:
        with self._tx() as db:
            case = self._get(db, case_id)
            self._record(db, case.id, at, "comment", actor, text)
        return case

    def record_breaches(self, now: datetime) -> list[tuple[Case, str]]:
        """Record (once per clock) every response or resolution target a case has missed."""
        found = []
        with self._tx() as db:
            rows = db.execute(
                self._q(
                    f"SELECT {_COLUMNS} FROM cases WHERE status IN {_OPEN_SQL}"
                    " AND (response_due < ? OR resolution_due < ?)"
                ),
                (_iso(now), _iso(now)),
            ).fetchall()
            for row in rows:
                case = _case(row)
                missed = []
                if case.acknowledged_at is None and case.response_due < now:
                    missed.append("response")
                if case.resolution_due < now:
                    missed.append("resolution")
                for target in missed:
                    seen = db.execute(
                        self._q(
                            "SELECT 1 FROM case_events WHERE case_id = ?"
                            " AND kind = 'sla breached' AND text = ? AND at >= ?"
                        ),
                        (case.id, target, _iso(case.clock_started)),
                    ).fetchone()
                    if seen is None:
                        self._record(db, case.id, now, "sla breached", None, target)
                        found.append((case, target))
        return found

    # --- queries -----------------------------------------------------------------------

    def get(self, case_id: int) -> Case:
        with self._tx() as db:
            return self._get(db, case_id)

    def open_case(self, fingerprint: str) -> Case | None:
        with self._tx() as db:
            row = self._open_row(db, fingerprint)
        return _case(row) if row else None

    def cases(
        self,
        status: str | None = None,
        severity: str | None = None,
        *,
        search: str | None = None,
        host: str | None = None,
        since: datetime | None = None,
    ) -> list[Case]:
        """Cases, newest first; `search` matches title, host, source and the timeline's
        texts (case-insensitive), `since` keeps cases seen at or after it."""
        query = f"SELECT {_COLUMNS} FROM cases WHERE 1 = 1"
        args: list[Any] = []
        if status == "open":
            query += f" AND status IN {_OPEN_SQL}"
        elif status:
            query += " AND status = ?"
            args.append(status)
        if severity:
            query += " AND severity = ?"
            args.append(severity)
        if host:
            query += " AND lower(host) = ?"  # host names are not case-sensitive
            args.append(host.lower())
        if since is not None:
            query += " AND last_seen >= ?"
            args.append(_iso(since))
        if search:
            pattern = (
                "%"
                + search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                + "%"
            )
            like = "LIKE ? ESCAPE '\\'"
            query += (
                f" AND (lower(title) {like} OR lower(host) {like} OR lower(source) {like}"
                " OR EXISTS (SELECT 1 FROM case_events e WHERE e.case_id = cases.id"
                f" AND (lower(e.text) {like} OR lower(e.actor) {like})))"
            )
            args.extend([pattern] * 5)
        with self._tx() as db:
            rows = db.execute(self._q(query + " ORDER BY id DESC"), args).fetchall()
        return [_case(r) for r in rows]

    def detail(self, case_id: int) -> CaseDetail:
        """`cases show --json`: the case, its timeline and its notifications, oldest first."""
        case = self.get(case_id)
        events = self.events(case_id)
        notifications = self.notifications(case_id=case_id)
        return CaseDetail.model_validate(
            {
                **case.to_dict(),
                "events": [e.to_record() for e in events],
                "notifications": [n.to_record() for n in reversed(notifications)],
            }
        )

    def notifications_document(
        self, now: datetime, case_id: int | None = None, state: str | None = None, limit: int = 200
    ) -> NotificationsDocument:
        """`cases notifications --json`: outbox rows, newest first, and the problems that
        keep notifications from going out."""
        rows = self.notifications(case_id=case_id, state=state, limit=limit)
        return NotificationsDocument(
            notifications=[n.to_record() for n in rows],
            problems=self.notification_problems(now),
        )

    def events(self, case_id: int) -> list[Event]:
        with self._tx() as db:
            self._get(db, case_id)
            rows = db.execute(
                self._q(
                    "SELECT at, kind, actor, text FROM case_events WHERE case_id = ? ORDER BY id"
                ),
                (case_id,),
            ).fetchall()
        return [Event(datetime.fromisoformat(r[0]), r[1], r[2], r[3]) for r in rows]

    def breached_cases(self) -> dict[int, set[str]]:
        """Case ID -> the targets it missed."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT case_id, text FROM case_events WHERE kind = 'sla breached'"
            ).fetchall()
        out: dict[int, set[str]] = {}
        for case_id, target in rows:
            out.setdefault(int(case_id), set()).add(target)
        return out

    def breaches(self) -> list[tuple[str, str, int]]:
        """(severity, target, count) of every breach recorded."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT c.severity, e.text, count(*) FROM case_events e"
                " JOIN cases c ON c.id = e.case_id WHERE e.kind = 'sla breached'"
                " GROUP BY c.severity, e.text"
            ).fetchall()
        return [(r[0], r[1], int(r[2])) for r in rows]

    # --- helpers -----------------------------------------------------------------------

    def _set_by_hand(self, db: Any, case_id: int) -> bool:
        row = db.execute(
            self._q(
                "SELECT 1 FROM case_events WHERE case_id = ? AND kind = 'severity changed'"
                " AND actor IS NOT NULL LIMIT 1"
            ),
            (case_id,),
        ).fetchone()
        return row is not None

    def _lock_fingerprint(self, db: Any, fingerprint: str) -> None:
        """Serialise changes of one fingerprint across agents (SQLite's single writer
        already does)."""
        if self.kind == "postgres":
            db.execute("SELECT pg_advisory_xact_lock(72115, hashtext(%s))", (fingerprint,))

    def _open_row(self, db: Any, fingerprint: str, lock: bool = False) -> Any:
        suffix = " FOR UPDATE" if lock and self.kind == "postgres" else ""
        return db.execute(
            self._q(
                f"SELECT {_COLUMNS} FROM cases WHERE fingerprint = ? AND status IN {_OPEN_SQL}"
                + suffix
            ),
            (fingerprint,),
        ).fetchone()

    def _open_conflict(self, db: Any, case: Case) -> bool:
        row = db.execute(
            self._q(
                f"SELECT 1 FROM cases WHERE fingerprint = ? AND status IN {_OPEN_SQL} AND id <> ?"
            ),
            (case.fingerprint, case.id),
        ).fetchone()
        return row is not None

    def _get(self, db: Any, case_id: int, lock: bool = False) -> Case:
        suffix = " FOR UPDATE" if lock and self.kind == "postgres" else ""
        row = db.execute(
            self._q(f"SELECT {_COLUMNS} FROM cases WHERE id = ?" + suffix), (case_id,)
        ).fetchone()
        if row is None:
            raise CaseNotFound(f"no case #{case_id}")
        return _case(row)

    # --- notifiers and the outbox ---------------------------------------------------------

    def register_notifiers(
        self, agent: str, routes: Iterable[tuple[str, frozenset[Severity]]], now: datetime
    ) -> None:
        """Say which notifiers this agent delivers (and that it is alive); forget the ones
        it no longer has. Rows are written for every registered name, only agents that
        registered a name claim its rows, and open cases a name has never been told of
        are queued for it."""
        routes = list(dict(routes).items())  # one registration per name
        with self._tx() as db:
            db.execute(self._q("DELETE FROM notifiers WHERE agent = ?"), (agent,))
            for name, severities in routes:
                levels = ",".join(sorted(s.value for s in severities))
                db.execute(
                    self._q(
                        "INSERT INTO notifiers (name, agent, severities, seen_at)"
                        " VALUES (?, ?, ?, ?)"
                    ),
                    (name, agent, levels, _iso(now)),
                )
                self._backfill(db, name, severities, now)

    def _backfill(self, db: Any, name: str, severities: frozenset[Severity], now: datetime) -> None:
        """Queue, for a notifier, the open cases it has never been told of: cases opened
        before any agent with it had registered (a new store, a new notifier) are
        still paged, with their present state."""
        if not severities:
            return
        if self.kind == "postgres":  # two agents with the same notifier backfill once
            db.execute("SELECT pg_advisory_xact_lock(72116, hashtext(%s))", (name,))
        levels = sorted(s.value for s in severities)
        rows = db.execute(
            self._q(
                f"SELECT id, status FROM cases c WHERE status IN {_OPEN_SQL}"
                f" AND severity IN ({', '.join('?' * len(levels))}) AND source <> ?"
                " AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.case_id = c.id"
                " AND o.notifier = ?) ORDER BY id"
            ),
            (*levels, f"notifier:{name}", name),
        ).fetchall()
        for case_id, status in rows:
            events = ["opened"] if status == "open" else ["opened", status]
            for event in events:
                db.execute(
                    self._q(
                        "INSERT INTO outbox (case_id, notifier, event, created_at,"
                        " next_attempt_at) VALUES (?, ?, ?, ?, ?)"
                    ),
                    (case_id, name, event, _iso(now), _iso(now)),
                )

    def registered_notifiers(self) -> list[tuple[str, str, str, datetime]]:
        """(name, agent, severities, seen at) of every registration."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT name, agent, severities, seen_at FROM notifiers ORDER BY name, agent"
            ).fetchall()
        return [(r[0], r[1], r[2], datetime.fromisoformat(r[3])) for r in rows]

    def claim_due(
        self,
        now: datetime,
        limit: int = 50,
        lease: float = 120,
        names: Iterable[str] | None = None,
        case_id: int | None = None,
    ) -> list[OutboxItem]:
        """Take due notifications for the notifiers `names` (default: this store's own).

        Only the oldest waiting row of each (case, notifier) is ever due, so a later
        change of a case never reaches a notifier before an earlier one, whatever the
        retries did; a lease (and, on PostgreSQL, row locks) keeps other agents off."""
        wanted = sorted(set(names) if names is not None else {n for n, _ in self.notifiers})
        if not wanted:
            return []
        marks = ", ".join("?" * len(wanted))
        query = (
            "SELECT o.id, o.case_id, o.notifier, o.event, o.attempts FROM outbox o"
            " WHERE o.delivered_at IS NULL AND o.failed_at IS NULL"
            f" AND o.notifier IN ({marks})"
            " AND o.next_attempt_at <= ? AND (o.lease_until IS NULL OR o.lease_until < ?)"
            " AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.case_id = o.case_id"
            " AND p.notifier = o.notifier AND p.id < o.id"
            " AND p.delivered_at IS NULL AND p.failed_at IS NULL)"
        )
        args: list[Any] = [*wanted, _iso(now), _iso(now)]
        if case_id is not None:
            query += " AND o.case_id = ?"
            args.append(case_id)
        query += " ORDER BY o.id LIMIT ?"
        args.append(limit)
        if self.kind == "postgres":
            query += " FOR UPDATE OF o SKIP LOCKED"
        until = _iso(now + timedelta(seconds=lease))
        claimed = []
        with self._tx() as db:
            for row in db.execute(self._q(query), args).fetchall():
                # an attempt counts when it starts: one cut off by a crash or an outage
                # of the store (and sent again) shows in `attempts`
                db.execute(
                    self._q(
                        "UPDATE outbox SET lease_until = ?, attempts = attempts + 1 WHERE id = ?"
                    ),
                    (until, row[0]),
                )
                claimed.append(OutboxItem(int(row[0]), int(row[1]), row[2], row[3], int(row[4])))
        return claimed

    def delivered(self, item_id: int, at: datetime, agent: str | None = None) -> None:
        with self._tx() as db:
            db.execute(
                self._q(
                    "UPDATE outbox SET delivered_at = ?, lease_until = NULL, handled_by = ?"
                    " WHERE id = ?"
                ),
                (_iso(at), agent, item_id),
            )
            row = db.execute(
                self._q("SELECT case_id, notifier, event FROM outbox WHERE id = ?"), (item_id,)
            ).fetchone()
            self._record(db, int(row[0]), at, "notified", row[1], row[2])

    def retry_later(
        self,
        item_id: int,
        at: datetime,
        next_at: datetime,
        error: str,
        permanent: bool,
        agent: str | None = None,
    ) -> None:
        """One failed attempt: try again at `next_at`, or (permanent) never; a failure for
        good is also written on the case's timeline."""
        with self._tx() as db:
            db.execute(
                self._q(
                    "UPDATE outbox SET next_attempt_at = ?,"
                    " lease_until = NULL, last_error = ?, failed_at = ?, handled_by = ?"
                    " WHERE id = ?"
                ),
                (_iso(next_at), error[:500], _iso(at) if permanent else None, agent, item_id),
            )
            if permanent:
                row = db.execute(
                    self._q("SELECT case_id, notifier, event FROM outbox WHERE id = ?"),
                    (item_id,),
                ).fetchone()
                text = f"{row[2]} not delivered: {error}"[:500]
                self._record(db, int(row[0]), at, "notification failed", row[1], text)

    def retry_failed(
        self, now: datetime, notifier: str | None = None, case_id: int | None = None
    ) -> int:
        """Send again, in order, what notifiers refused for good (once they are fixed);
        returns how many refused notifications were requeued.

        The refused notification and every later one of the same case to the same
        notifier are queued again at the end, in their order, as new deliveries: the
        receiver sees the refused trigger *before* the resolve it already had, then the
        resolve again, so it ends in the case's present state. The refused rows stay
        failed (the failure counters never go back), marked as resent."""
        query = (
            "SELECT case_id, notifier, min(id) FROM outbox"
            " WHERE failed_at IS NOT NULL AND resent_as IS NULL"
        )
        args: list[Any] = []
        if notifier:
            query += " AND notifier = ?"
            args.append(notifier)
        if case_id is not None:
            query += " AND case_id = ?"
            args.append(case_id)
        query += " GROUP BY case_id, notifier ORDER BY min(id)"
        requeued = 0
        with self._tx() as db:
            for case, name, first in db.execute(self._q(query), args).fetchall():
                chain = db.execute(
                    self._q(
                        "SELECT id, event, delivered_at, failed_at, resent_as FROM outbox"
                        " WHERE case_id = ? AND notifier = ? AND id >= ? ORDER BY id"
                    ),
                    (case, name, first),
                ).fetchall()
                for row_id, event, delivered_at, failed_at, resent_as in chain:
                    if resent_as is not None:
                        continue
                    new = db.execute(
                        self._q(
                            "INSERT INTO outbox (case_id, notifier, event, created_at,"
                            " next_attempt_at) VALUES (?, ?, ?, ?, ?) RETURNING id"
                        ),
                        (case, name, event, _iso(now), _iso(now)),
                    ).fetchone()[0]
                    if failed_at is not None:
                        requeued += 1
                        db.execute(
                            self._q("UPDATE outbox SET resent_as = ? WHERE id = ?"), (new, row_id)
                        )
                    elif delivered_at is None:  # waiting: it goes in the new order instead
                        db.execute(
                            self._q(
                                "UPDATE outbox SET failed_at = ?, resent_as = ?,"
                                " lease_until = NULL,"
                                " last_error = 'resent in order after a retry' WHERE id = ?"
                            ),
                            (_iso(now), new, row_id),
                        )
                self._record(db, int(case), now, "notifications resent", None, name)
        return requeued

    def retire_notifier(self, name: str, now: datetime) -> int:
        """Forget a notifier name for good (renamed or removed everywhere): its waiting
        notifications are dropped (kept, marked retired) and no agent's registration of
        it remains; returns how many were dropped. An agent that still has it registers
        it again at its next pass."""
        with self._tx() as db:
            cursor = db.execute(
                self._q(
                    "UPDATE outbox SET failed_at = ?, resent_as = 0, lease_until = NULL,"
                    " last_error = 'notifier retired' WHERE notifier = ?"
                    " AND delivered_at IS NULL AND failed_at IS NULL"
                ),
                (_iso(now), name),
            )
            db.execute(self._q("DELETE FROM notifiers WHERE name = ?"), (name,))
            return int(cursor.rowcount or 0)

    def notifications(
        self, case_id: int | None = None, state: str | None = None, limit: int = 200
    ) -> list[Notification]:
        """Outbox rows, newest first."""
        query = (
            "SELECT id, case_id, notifier, event, attempts, created_at, delivered_at, failed_at,"
            " last_error, handled_by, resent_as, lease_until FROM outbox WHERE 1 = 1"
        )
        args: list[Any] = []
        if case_id is not None:
            query += " AND case_id = ?"
            args.append(case_id)
        if state == "waiting":
            query += " AND delivered_at IS NULL AND failed_at IS NULL"
        elif state == "delivered":
            query += " AND delivered_at IS NOT NULL"
        elif state == "failed":
            query += " AND failed_at IS NOT NULL AND resent_as IS NULL"
        query += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        with self._tx() as db:
            rows = db.execute(self._q(query), args).fetchall()
        return [
            Notification(
                id=int(r[0]),
                case_id=int(r[1]),
                notifier=r[2],
                event=r[3],
                state=_state(r[6], r[7], r[10], r[11]),
                attempts=int(r[4]),
                created_at=datetime.fromisoformat(r[5]),
                last_error=r[8],
                handled_by=r[9],
            )
            for r in rows
        ]

    def outbox_stats(self, agent: str | None = None) -> list[tuple[str, int, int, int]]:
        """(notifier, delivered, failed for good, waiting) per notifier; with `agent`, the
        delivered and failed counts are only the rows that agent handled."""
        mine = "" if agent is None else " AND handled_by = ?"
        query = (
            "SELECT notifier,"
            f" sum(CASE WHEN delivered_at IS NOT NULL{mine} THEN 1 ELSE 0 END),"
            f" sum(CASE WHEN failed_at IS NOT NULL{mine} THEN 1 ELSE 0 END),"
            " sum(CASE WHEN delivered_at IS NULL AND failed_at IS NULL THEN 1 ELSE 0 END)"
            " FROM outbox GROUP BY notifier ORDER BY notifier"
        )
        args = [] if agent is None else [agent, agent]
        with self._tx() as db:
            rows = db.execute(self._q(query), args).fetchall()
        return [(r[0], int(r[1]), int(r[2]), int(r[3])) for r in rows]

    def outbox_backlog(self, names: Iterable[str] | None = None) -> int:
        query = "SELECT count(*) FROM outbox WHERE delivered_at IS NULL AND failed_at IS NULL"
        args: list[Any] = []
        if names is not None:
            wanted = sorted(set(names)) or [""]
            query += f" AND notifier IN ({', '.join('?' * len(wanted))})"
            args.extend(wanted)
        with self._tx() as db:
            row = db.execute(self._q(query), args).fetchone()
        return int(row[0])

    def undeliverable(self, now: datetime) -> dict[str, int]:
        """Waiting rows per notifier that no agent has registered within LIVE_WITHIN:
        nobody running can deliver them."""
        since = _iso(now - LIVE_WITHIN)
        with self._tx() as db:
            rows = db.execute(
                self._q(
                    "SELECT notifier, count(*) FROM outbox o"
                    " WHERE delivered_at IS NULL AND failed_at IS NULL AND NOT EXISTS"
                    " (SELECT 1 FROM notifiers n WHERE n.name = o.notifier AND n.seen_at >= ?)"
                    " GROUP BY notifier"
                ),
                (since,),
            ).fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def notification_problems(self, now: datetime) -> list[str]:
        """One line per way notifications are failing people right now: failed for good
        (recently, or for a case still open), undeliverable, stuck behind retries, or a
        critical or major case that no notifier receives."""
        recent = _iso(now - FAILED_RECENT)
        stuck = _iso(now - STUCK_AFTER)
        with self._tx() as db:
            failed = db.execute(
                self._q(
                    "SELECT o.notifier, count(*), max(o.failed_at) FROM outbox o"
                    " JOIN cases c ON c.id = o.case_id WHERE o.failed_at IS NOT NULL"
                    " AND o.resent_as IS NULL"
                    f" AND (o.failed_at >= ? OR c.status IN {_OPEN_SQL})"
                    " GROUP BY o.notifier ORDER BY o.notifier"
                ),
                (recent,),
            ).fetchall()
            errors = {
                r[0]: r[1]
                for r in db.execute(
                    "SELECT notifier, last_error FROM outbox WHERE id IN"
                    " (SELECT max(id) FROM outbox WHERE last_error IS NOT NULL GROUP BY notifier)"
                ).fetchall()
            }
            waiting = db.execute(
                self._q(
                    "SELECT notifier, count(*), min(created_at) FROM outbox"
                    " WHERE delivered_at IS NULL AND failed_at IS NULL AND created_at < ?"
                    " GROUP BY notifier ORDER BY notifier"
                ),
                (stuck,),
            ).fetchall()
        problems = [
            f"{count} notification(s) to {name} failed for good (last error: {errors.get(name)});"
            f" fix the notifier, then `opsagent cases retry --failed`"
            for name, count, _ in failed
        ]
        with self._tx() as db:
            # where nobody ever configured a notifier that is a choice, not a failure
            anyone = self.notifiers or db.execute("SELECT 1 FROM notifiers LIMIT 1").fetchone()
            silent = (
                db.execute(
                    f"SELECT id, severity FROM cases c WHERE status IN {_OPEN_SQL}"
                    " AND severity IN ('critical', 'major') AND NOT EXISTS"
                    " (SELECT 1 FROM outbox o WHERE o.case_id = c.id) ORDER BY id"
                ).fetchall()
                if anyone
                else []
            )
        if silent:
            ids = ", ".join(f"#{r[0]} ({r[1]})" for r in silent[:5])
            more = f" and {len(silent) - 5} more" if len(silent) > 5 else ""
            problems.append(
                f"open case(s) {ids}{more} notified nobody: no notifier receives their severity"
            )
        lost = self.undeliverable(now)
        problems += [
            f"{count} notification(s) to {name} waiting, but no agent has notifier {name}"
            for name, count in sorted(lost.items())
        ]
        problems += [
            f"{count} notification(s) to {name} waiting since {since}"
            f" (last error: {errors.get(name)})"
            for name, count, since in waiting
            if name not in lost
        ]
        return problems


def _state(
    delivered: str | None, failed: str | None, resent_as: int | None, lease: str | None
) -> str:
    """What became of an outbox row, in words."""
    if delivered:
        return "delivered"
    if resent_as == 0:
        return "retired"
    if resent_as is not None:
        return f"resent as {resent_as}"
    if failed:
        return "failed"
    if lease and lease > _iso(datetime.now(UTC)):
        return f"sending (until {lease[:19]}Z, then sent again)"
    return "waiting"


def _is_db_error(exc: BaseException) -> bool:
    """A database driver's error (sqlite3 or psycopg), as opposed to a bug of ours."""
    return isinstance(exc, sqlite3.Error) or type(exc).__module__.startswith("psycopg")


def _line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def _safe(url: str) -> str:
    """The store URL without its query string (which could carry options or secrets)."""
    return url.split("?", 1)[0]


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _case(row: Any) -> Case:
    return Case(
        id=int(row[0]),
        fingerprint=row[1],
        title=row[2],
        severity=Severity(row[3]),
        status=row[4],
        source=row[5],
        host=row[6],
        occurrences=int(row[7]),
        first_seen=datetime.fromisoformat(row[8]),
        last_seen=datetime.fromisoformat(row[9]),
        acknowledged_at=_parse(row[10]),
        acknowledged_by=row[11],
        resolved_at=_parse(row[12]),
        response_due=datetime.fromisoformat(row[13]),
        resolution_due=datetime.fromisoformat(row[14]),
        clock_start=_parse(row[15]),
    )


def sqlite_path(url: str) -> Path:
    """The file of a `sqlite:///PATH` URL: always absolute (`sqlite:///var/lib/x.db` is
    /var/lib/x.db, wherever the command runs), so every command reads the daemon's store."""
    return Path("/" + url.removeprefix("sqlite://").lstrip("/"))


def clean(text: str | None) -> str | None:
    """Text as a store keeps it: valid UTF-8 (bytes that were not become U+FFFD) and no
    NUL (PostgreSQL refuses it), so no value can fail an insert halfway."""
    if text is None:
        return None
    return "".join("\ufffd" if c == "\x00" or "\ud800" <= c <= "\udfff" else c for c in text)


def _missing_table(exc: BaseException) -> bool:
    message = str(exc)
    return "no such table" in message or ("relation" in message and "does not exist" in message)
