"""The case store: SQLite (embedded default, WAL) or PostgreSQL (shared by many agents).

Same schema on both, versioned migrations applied at start-up. At most one open case
per fingerprint is enforced by the database itself (a unique partial index), and a
failure is recorded with one atomic upsert, so agents racing on the same failure
create one case and count every occurrence. Every change appends to the case's
timeline of events.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agents.errors import OpsagentError
from agents.results import Severity

SCHEMA_VERSION = 2
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
NOTIFIED_EVENTS = (
    "opened",
    "severity changed",
    "acknowledged",
    "resolved",
    "reopened",
    "sla breached",
)

_COLUMNS = (
    "id, fingerprint, title, severity, status, source, host, occurrences, first_seen,"
    " last_seen, acknowledged_at, acknowledged_by, resolved_at, response_due, resolution_due"
)


class CaseStoreError(OpsagentError):
    """The case store cannot be used or the change is not allowed; one line."""


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

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    def to_dict(self) -> dict[str, Any]:
        return {
            k: (
                v.isoformat()
                if isinstance(v, datetime)
                else v.value
                if isinstance(v, Severity)
                else v
            )
            for k, v in self.__dict__.items()
        }


@dataclass(frozen=True)
class Event:
    at: datetime
    kind: str
    actor: str | None
    text: str | None


@dataclass(frozen=True)
class OutboxItem:
    id: int
    case_id: int
    notifier: str
    event: str
    attempts: int


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
    """One store URL: `sqlite:///path` or `postgresql://...`."""

    def __init__(self, url: str, notifiers: list[tuple[str, frozenset[Severity]]] = ()) -> None:
        self.url = url
        # (name, severities): who gets a notification of each case change
        self.notifiers = list(notifiers)
        self.kind = "postgres" if url.startswith(("postgresql://", "postgres://")) else "sqlite"
        self._local = threading.local()
        try:
            with self._tx() as db:
                self._migrate(db)
        except CaseStoreError:
            raise
        except Exception as exc:  # sqlite3, psycopg or OS errors: one line, no traceback
            raise CaseStoreError(f"case store {_safe(url)}: {' '.join(str(exc).split())}") from None

    # --- connections -------------------------------------------------------------------

    def _connect(self) -> Any:
        if self.kind == "postgres":
            import psycopg

            try:
                return psycopg.connect(self.url, autocommit=True, connect_timeout=10)
            except psycopg.OperationalError as exc:
                raise CaseStoreError(
                    f"case store unreachable: {' '.join(str(exc).split())[:200]}"
                ) from None
        path = Path(self.url.removeprefix("sqlite:///"))
        if not path.is_absolute():
            path = Path.cwd() / path
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA busy_timeout=30000")
        return db

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        """One transaction on this thread's connection."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._connect()
        db.execute("BEGIN IMMEDIATE" if self.kind == "sqlite" else "BEGIN")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _q(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.kind == "postgres" else sql

    def _migrate(self, db: Any) -> None:
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
        if self.kind == "postgres":
            db.execute("SELECT pg_advisory_xact_lock(72114)")  # one migrator at a time
            again = db.execute("SELECT value FROM case_meta WHERE key = 'schema_version'")
            row = again.fetchone()
            version = int(row[0]) if row else 0
        if version < 1:
            for statement in _SCHEMA[self.kind][1:]:
                db.execute(statement)
        if version < 2:
            db.execute(_OUTBOX[self.kind])
            db.execute("CREATE INDEX outbox_due ON outbox (delivered_at, next_attempt_at)")
        db.execute(self._q("DELETE FROM case_meta WHERE key = ?"), ("schema_version",))
        db.execute(
            self._q("INSERT INTO case_meta (key, value) VALUES (?, ?)"),
            ("schema_version", str(SCHEMA_VERSION)),
        )

    # --- changes -----------------------------------------------------------------------

    def record_failure(self, failure: Failure) -> tuple[Case, bool]:
        """Open a case for the failure, or count an occurrence on the open one.

        Returns the case and whether this call opened it. Atomic across processes: the
        unique partial index decides who opens, everyone else adds an occurrence."""
        at = _iso(failure.at)
        with self._tx() as db:
            row = db.execute(
                self._q(
                    "INSERT INTO cases (fingerprint, title, severity, status, source, host,"
                    " occurrences, first_seen, last_seen, response_due, resolution_due)"
                    " VALUES (?, ?, ?, 'open', ?, ?, 1, ?, ?, ?, ?)"
                    f" ON CONFLICT (fingerprint) WHERE status IN {_OPEN_SQL} DO UPDATE SET"
                    " occurrences = cases.occurrences + 1, last_seen = excluded.last_seen"
                    f" RETURNING {_COLUMNS}"
                ),
                (
                    failure.fingerprint,
                    failure.title,
                    failure.severity.value,
                    failure.source,
                    failure.host,
                    at,
                    at,
                    _iso(failure.response_due),
                    _iso(failure.resolution_due),
                ),
            ).fetchone()
            case = _case(row)
            created = case.occurrences == 1
            self._event(
                db,
                case.id,
                failure.at,
                "opened" if created else "occurrence",
                None,
                failure.title if created else None,
            )
            if not created and failure.severity.rank > case.severity.rank:
                db.execute(
                    self._q(
                        "UPDATE cases SET severity = ?, response_due = ?,"
                        " resolution_due = ? WHERE id = ?"
                    ),
                    (
                        failure.severity.value,
                        _iso(failure.response_due),
                        _iso(failure.resolution_due),
                        case.id,
                    ),
                )
                self._event(
                    db,
                    case.id,
                    failure.at,
                    "severity changed",
                    None,
                    f"{case.severity.value} -> {failure.severity.value}",
                )
                case = self._get(db, case.id)
        return case, created

    def reopen_recent(self, fingerprint: str, since: datetime, at: datetime) -> Case | None:
        """Reopen the case of this fingerprint resolved after `since`, if any."""
        with self._tx() as db:
            row = db.execute(
                self._q(
                    "SELECT id FROM cases WHERE fingerprint = ? AND status = 'resolved'"
                    " AND resolved_at >= ? ORDER BY id DESC LIMIT 1"
                ),
                (fingerprint, _iso(since)),
            ).fetchone()
            if row is None:
                return None
            open_row = db.execute(
                self._q(f"SELECT id FROM cases WHERE fingerprint = ? AND status IN {_OPEN_SQL}"),
                (fingerprint,),
            ).fetchone()
            if open_row is not None:
                return None
            db.execute(
                self._q(
                    "UPDATE cases SET status = 'reopened', resolved_at = NULL, last_seen = ?,"
                    " occurrences = occurrences + 1 WHERE id = ?"
                ),
                (_iso(at), row[0]),
            )
            self._event(db, row[0], at, "reopened", None, None)
            return self._get(db, row[0])

    def resolve(self, case_id: int, at: datetime, actor: str | None, note: str | None) -> Case:
        return self._transition(case_id, at, "resolved", actor, note, OPEN_STATUSES)

    def close(self, case_id: int, at: datetime, actor: str | None) -> Case:
        return self._transition(case_id, at, "closed", actor, None, ("resolved",))

    def reopen(self, case_id: int, at: datetime, actor: str | None) -> Case:
        return self._transition(case_id, at, "reopened", actor, None, ("resolved", "closed"))

    def acknowledge(self, case_id: int, at: datetime, actor: str) -> Case:
        return self._transition(case_id, at, "acknowledged", actor, None, ("open", "reopened"))

    def comment(self, case_id: int, at: datetime, actor: str | None, text: str) -> Case:
        with self._tx() as db:
            case = self._get(db, case_id)
            self._event(db, case.id, at, "comment", actor, text)
        return case

    # --- queries -----------------------------------------------------------------------

    def get(self, case_id: int) -> Case:
        with self._tx() as db:
            return self._get(db, case_id)

    def open_case(self, fingerprint: str) -> Case | None:
        with self._tx() as db:
            row = db.execute(
                self._q(
                    f"SELECT {_COLUMNS} FROM cases WHERE fingerprint = ? AND status IN {_OPEN_SQL}"
                ),
                (fingerprint,),
            ).fetchone()
        return _case(row) if row else None

    def cases(self, status: str | None = None, severity: str | None = None) -> list[Case]:
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
        with self._tx() as db:
            rows = db.execute(self._q(query + " ORDER BY id DESC"), args).fetchall()
        return [_case(r) for r in rows]

    def events(self, case_id: int) -> list[Event]:
        with self._tx() as db:
            rows = db.execute(
                self._q(
                    "SELECT at, kind, actor, text FROM case_events WHERE case_id = ? ORDER BY id"
                ),
                (case_id,),
            ).fetchall()
        return [Event(datetime.fromisoformat(r[0]), r[1], r[2], r[3]) for r in rows]

    # --- helpers -----------------------------------------------------------------------

    def _transition(
        self,
        case_id: int,
        at: datetime,
        status: str,
        actor: str | None,
        note: str | None,
        allowed_from: tuple[str, ...],
    ) -> Case:
        with self._tx() as db:
            case = self._get(db, case_id)
            if case.status not in allowed_from:
                raise CaseStoreError(f"case #{case_id} is {case.status}; cannot make it {status}")
            if status == "acknowledged":
                db.execute(
                    self._q(
                        "UPDATE cases SET status = ?, acknowledged_at = ?,"
                        " acknowledged_by = ? WHERE id = ?"
                    ),
                    (status, _iso(at), actor, case_id),
                )
            elif status == "resolved":
                db.execute(
                    self._q("UPDATE cases SET status = ?, resolved_at = ? WHERE id = ?"),
                    (status, _iso(at), case_id),
                )
            elif status == "closed":
                db.execute(self._q("UPDATE cases SET status = ? WHERE id = ?"), (status, case_id))
            else:
                if self.open_conflict(db, case):
                    raise CaseStoreError(
                        f"case #{case_id} cannot reopen: another case is open for the same failure"
                    )
                db.execute(
                    self._q("UPDATE cases SET status = ?, resolved_at = NULL WHERE id = ?"),
                    (status, case_id),
                )
            self._event(db, case_id, at, status, actor, note)
            return self._get(db, case_id)

    def open_conflict(self, db: Any, case: Case) -> bool:
        row = db.execute(
            self._q(
                f"SELECT 1 FROM cases WHERE fingerprint = ? AND status IN {_OPEN_SQL} AND id <> ?"
            ),
            (case.fingerprint, case.id),
        ).fetchone()
        return row is not None

    def _get(self, db: Any, case_id: int) -> Case:
        row = db.execute(
            self._q(f"SELECT {_COLUMNS} FROM cases WHERE id = ?"), (case_id,)
        ).fetchone()
        if row is None:
            raise CaseStoreError(f"no case #{case_id}")
        return _case(row)

    def _event(
        self, db: Any, case_id: int, at: datetime, kind: str, actor: str | None, text: str | None
    ) -> None:
        db.execute(
            self._q(
                "INSERT INTO case_events (case_id, at, kind, actor, text) VALUES (?, ?, ?, ?, ?)"
            ),
            (case_id, _iso(at), kind, actor, text),
        )
        if kind not in NOTIFIED_EVENTS or not self.notifiers:
            return
        row = db.execute(self._q("SELECT severity FROM cases WHERE id = ?"), (case_id,)).fetchone()
        severity = Severity(row[0])
        for name, severities in self.notifiers:
            if severity in severities:
                db.execute(
                    self._q(
                        "INSERT INTO outbox (case_id, notifier, event, created_at,"
                        " next_attempt_at) VALUES (?, ?, ?, ?, ?)"
                    ),
                    (case_id, name, kind, _iso(at), _iso(at)),
                )

    def record_breaches(self, now: datetime) -> list[tuple[Case, str]]:
        """Record (once) every response or resolution target a case has missed."""
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
                            " AND kind = 'sla breached' AND text = ?"
                        ),
                        (case.id, target),
                    ).fetchone()
                    if seen is None:
                        self._event(db, case.id, now, "sla breached", None, target)
                        found.append((case, target))
        return found

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

    # --- outbox ------------------------------------------------------------------------

    def claim_due(self, now: datetime, limit: int = 50, lease: float = 120) -> list[OutboxItem]:
        """Take due notifications for delivery (a lease keeps other agents off them)."""
        until = _iso(now + timedelta(seconds=lease))
        claimed = []
        with self._tx() as db:
            rows = db.execute(
                self._q(
                    "SELECT id, case_id, notifier, event, attempts FROM outbox"
                    " WHERE delivered_at IS NULL AND failed_at IS NULL"
                    " AND next_attempt_at <= ? AND (lease_until IS NULL OR lease_until < ?)"
                    " ORDER BY id LIMIT ?"
                ),
                (_iso(now), _iso(now), limit),
            ).fetchall()
            for row in rows:
                db.execute(
                    self._q("UPDATE outbox SET lease_until = ? WHERE id = ?"), (until, row[0])
                )
                claimed.append(OutboxItem(int(row[0]), int(row[1]), row[2], row[3], int(row[4])))
        return claimed

    def delivered(self, item_id: int, at: datetime) -> None:
        with self._tx() as db:
            db.execute(
                self._q(
                    "UPDATE outbox SET delivered_at = ?, attempts = attempts + 1,"
                    " lease_until = NULL WHERE id = ?"
                ),
                (_iso(at), item_id),
            )
            row = db.execute(
                self._q("SELECT case_id, notifier, event FROM outbox WHERE id = ?"), (item_id,)
            ).fetchone()
            self._event(db, int(row[0]), at, "notified", row[1], row[2])

    def retry_later(
        self, item_id: int, at: datetime, next_at: datetime, error: str, permanent: bool
    ) -> None:
        with self._tx() as db:
            db.execute(
                self._q(
                    "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?,"
                    " lease_until = NULL, last_error = ?, failed_at = ? WHERE id = ?"
                ),
                (_iso(next_at), error[:500], _iso(at) if permanent else None, item_id),
            )

    def outbox_stats(self) -> list[tuple[str, int, int, int]]:
        """(notifier, delivered, failed for good, waiting) for every notifier."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT notifier,"
                " sum(CASE WHEN delivered_at IS NOT NULL THEN 1 ELSE 0 END),"
                " sum(CASE WHEN failed_at IS NOT NULL THEN 1 ELSE 0 END),"
                " sum(CASE WHEN delivered_at IS NULL AND failed_at IS NULL THEN 1 ELSE 0 END)"
                " FROM outbox GROUP BY notifier ORDER BY notifier"
            ).fetchall()
        return [(r[0], int(r[1]), int(r[2]), int(r[3])) for r in rows]

    def outbox_backlog(self) -> int:
        with self._tx() as db:
            row = db.execute(
                "SELECT count(*) FROM outbox WHERE delivered_at IS NULL AND failed_at IS NULL"
            ).fetchone()
        return int(row[0])


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
    )
