"""What the outbox tells people: its rows, counts per notifier, the backlog, and the
problems that keep notifications from going out (`cases notifications`, status)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from agents.cases.store.changes import Changes
from agents.cases.store.models import Notification, iso
from agents.cases.store.schema import OPEN_SQL
from agents.records.cases import NotificationsDocument

# a notifier no agent has registered within this is "undeliverable" right now
LIVE_WITHIN = timedelta(minutes=10)
# failed deliveries count as a problem for this long (or while their case is open)
FAILED_RECENT = timedelta(days=1)
# rows waiting longer than this are reported as stuck
STUCK_AFTER = timedelta(minutes=15)


class OutboxReport(Changes):
    """Reading the outbox: what was sent, what waits, what failed and why."""

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
        with self._tx(read=True) as db:
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
        with self._tx(read=True) as db:
            rows = db.execute(self._q(query), args).fetchall()
        return [(r[0], int(r[1]), int(r[2]), int(r[3])) for r in rows]

    def outbox_backlog(self, names: Iterable[str] | None = None) -> int:
        query = "SELECT count(*) FROM outbox WHERE delivered_at IS NULL AND failed_at IS NULL"
        args: list[Any] = []
        if names is not None:
            wanted = sorted(set(names)) or [""]
            query += f" AND notifier IN ({', '.join('?' * len(wanted))})"
            args.extend(wanted)
        with self._tx(read=True) as db:
            row = db.execute(self._q(query), args).fetchone()
        return int(row[0])

    def undeliverable(self, now: datetime) -> dict[str, int]:
        """Waiting rows per notifier that no agent has registered within LIVE_WITHIN:
        nobody running can deliver them."""
        since = iso(now - LIVE_WITHIN)
        with self._tx(read=True) as db:
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
        recent = iso(now - FAILED_RECENT)
        stuck = iso(now - STUCK_AFTER)
        with self._tx(read=True) as db:
            failed = db.execute(
                self._q(
                    "SELECT o.notifier, count(*), max(o.failed_at) FROM outbox o"
                    " JOIN cases c ON c.id = o.case_id WHERE o.failed_at IS NOT NULL"
                    " AND o.resent_as IS NULL"
                    f" AND (o.failed_at >= ? OR c.status IN {OPEN_SQL})"
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
        with self._tx(read=True) as db:
            # where nobody ever configured a notifier that is a choice, not a failure
            anyone = self.notifiers or db.execute("SELECT 1 FROM notifiers LIMIT 1").fetchone()
            silent = (
                db.execute(
                    f"SELECT id, severity FROM cases c WHERE status IN {OPEN_SQL}"
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
    if lease and lease > iso(datetime.now(UTC)):
        return f"sending (until {lease[:19]}Z, then sent again)"
    return "waiting"
