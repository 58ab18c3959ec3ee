"""The case store's tables, the same on SQLite and PostgreSQL: the DDL, the versioned
migrations applied at start-up, and the differences of dialect (types, parameters)."""

from __future__ import annotations

from typing import Any

from agents.cases.store.errors import CaseStoreError

SCHEMA_VERSION = 3
OPEN_STATUSES = ("open", "acknowledged", "reopened")
OPEN_SQL = "('open', 'acknowledged', 'reopened')"

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
        f"CREATE UNIQUE INDEX one_open_case ON cases (fingerprint) WHERE status IN {OPEN_SQL}",
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
        f"CREATE UNIQUE INDEX one_open_case ON cases (fingerprint) WHERE status IN {OPEN_SQL}",
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

# the columns of a case, in the order of `Case`'s fields
COLUMNS = (
    "id, fingerprint, title, severity, status, source, host, occurrences, first_seen,"
    " last_seen, acknowledged_at, acknowledged_by, resolved_at, response_due, resolution_due,"
    " clock_start"
)


def placeholders(sql: str, kind: str) -> str:
    """The statement in the dialect's parameter style: `?` (SQLite) or `%s` (psycopg)."""
    return sql.replace("?", "%s") if kind == "postgres" else sql


def sqlite_current(db: Any) -> bool:
    """Whether a SQLite store's tables are already at SCHEMA_VERSION, read without taking
    the write lock (a migration's transaction would wait for another agent's writes)."""
    try:
        row = db.execute("SELECT value FROM case_meta WHERE key = 'schema_version'").fetchone()
    except Exception:  # no table yet, or an error the migration's path reports
        return False
    return row is not None and row[0] == str(SCHEMA_VERSION)


def migrate(db: Any, kind: str) -> None:
    """Bring the tables up to SCHEMA_VERSION in the caller's transaction; a store that a
    newer agent migrated is refused rather than misread."""
    if kind == "postgres":  # one migrator at a time, from the very first statement
        db.execute("SELECT pg_advisory_xact_lock(72114)")
    db.execute(_SCHEMA[kind][0])
    row = db.execute(
        placeholders("SELECT value FROM case_meta WHERE key = ?", kind), ("schema_version",)
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
        for statement in _SCHEMA[kind][1:]:
            db.execute(statement)
    if version < 2:
        db.execute(_OUTBOX[kind])
        db.execute("CREATE INDEX outbox_due ON outbox (delivered_at, next_attempt_at)")
    if version < 3:
        for statement in _V3:
            db.execute(statement)
    db.execute(placeholders("DELETE FROM case_meta WHERE key = ?", kind), ("schema_version",))
    db.execute(
        placeholders("INSERT INTO case_meta (key, value) VALUES (?, ?)", kind),
        ("schema_version", str(SCHEMA_VERSION)),
    )
