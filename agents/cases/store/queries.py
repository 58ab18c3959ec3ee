"""Reading cases: one case, the list and its filters, a case's timeline and its detail
document, and the SLA breaches recorded."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from agents.cases.store.models import Case, Event, case_from_row, iso
from agents.cases.store.outbox_report import OutboxReport
from agents.cases.store.schema import COLUMNS, OPEN_SQL
from agents.records.cases import CaseDetail


class Queries(OutboxReport):
    """Cases as they are now, and their history."""

    def get(self, case_id: int) -> Case:
        with self._tx(read=True) as db:
            return self._get(db, case_id)

    def open_case(self, fingerprint: str) -> Case | None:
        with self._tx(read=True) as db:
            row = self._open_row(db, fingerprint)
        return case_from_row(row) if row else None

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
        query = f"SELECT {COLUMNS} FROM cases WHERE 1 = 1"
        args: list[Any] = []
        if status == "open":
            query += f" AND status IN {OPEN_SQL}"
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
            args.append(iso(since))
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
        with self._tx(read=True) as db:
            rows = db.execute(self._q(query + " ORDER BY id DESC"), args).fetchall()
        return [case_from_row(r) for r in rows]

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

    def events(self, case_id: int) -> list[Event]:
        with self._tx(read=True) as db:
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
        with self._tx(read=True) as db:
            rows = db.execute(
                "SELECT case_id, text FROM case_events WHERE kind = 'sla breached'"
            ).fetchall()
        out: dict[int, set[str]] = {}
        for case_id, target in rows:
            out.setdefault(int(case_id), set()).add(target)
        return out

    def breaches(self) -> list[tuple[str, str, int]]:
        """(severity, target, count) of every breach recorded."""
        with self._tx(read=True) as db:
            rows = db.execute(
                "SELECT c.severity, e.text, count(*) FROM case_events e"
                " JOIN cases c ON c.id = e.case_id WHERE e.kind = 'sla breached'"
                " GROUP BY c.severity, e.text"
            ).fetchall()
        return [(r[0], r[1], int(r[2])) for r in rows]
