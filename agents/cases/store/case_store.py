"""`CaseStore`, what every caller opens: one store URL (SQLite or PostgreSQL) made of
this package's layers: connection, change path, outbox, queries."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

from agents.cases.store.outbox import Outbox
from agents.cases.store.queries import Queries
from agents.results import Severity

if TYPE_CHECKING:
    from agents.cases.sla import Clock


class CaseStore(Queries, Outbox):
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
            with self._tx(read=True):
                pass  # connects, and migrates unless the tables are current
