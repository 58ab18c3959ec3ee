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

The package, one idea a module, each layer of `CaseStore` built on the one below:
`errors` (what goes wrong), `schema` (tables, migrations, dialects), `models` (cases,
events, outbox rows and how values are kept), `db` (connections and `_tx`), `changes`
(the change path), `outbox` (registry, claiming, retries), `outbox_report` (rows,
counts, problems), `queries` (reading cases) and `case_store` (the class). Submodules
import their siblings, never this package.
"""

from __future__ import annotations

from agents.cases.store.case_store import CaseStore
from agents.cases.store.changes import NOTIFIED_EVENTS, REGISTRATION_TTL
from agents.cases.store.db import sqlite_path
from agents.cases.store.errors import CaseNotFound, CaseRefused, CaseStoreError
from agents.cases.store.models import Case, Event, Failure, Notification, OutboxItem, clean
from agents.cases.store.outbox_report import FAILED_RECENT, LIVE_WITHIN, STUCK_AFTER
from agents.cases.store.schema import OPEN_STATUSES, SCHEMA_VERSION

__all__ = [
    "FAILED_RECENT",
    "LIVE_WITHIN",
    "NOTIFIED_EVENTS",
    "OPEN_STATUSES",
    "REGISTRATION_TTL",
    "SCHEMA_VERSION",
    "STUCK_AFTER",
    "Case",
    "CaseNotFound",
    "CaseRefused",
    "CaseStore",
    "CaseStoreError",
    "Event",
    "Failure",
    "Notification",
    "OutboxItem",
    "clean",
    "sqlite_path",
]
