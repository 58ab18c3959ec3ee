"""The notifier registry and the outbox's delivery: which agents deliver which notifier,
claiming due rows under a lease, delivered or failed, retries in order, retirement."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from agents.cases.store.changes import Changes
from agents.cases.store.models import OutboxItem, iso
from agents.cases.store.schema import OPEN_SQL
from agents.results import Severity


class Outbox(Changes):
    """Notifications on their way: written by `_record`, delivered by `notify.Dispatcher`."""

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
                    (name, agent, levels, iso(now)),
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
                f"SELECT id, status FROM cases c WHERE status IN {OPEN_SQL}"
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
                    (case_id, name, event, iso(now), iso(now)),
                )

    def registered_notifiers(self) -> list[tuple[str, str, str, datetime]]:
        """(name, agent, severities, seen at) of every registration."""
        with self._tx(read=True) as db:
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
        args: list[Any] = [*wanted, iso(now), iso(now)]
        if case_id is not None:
            query += " AND o.case_id = ?"
            args.append(case_id)
        query += " ORDER BY o.id LIMIT ?"
        args.append(limit)
        if self.kind == "postgres":
            query += " FOR UPDATE OF o SKIP LOCKED"
        until = iso(now + timedelta(seconds=lease))
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
                (iso(at), agent, item_id),
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
                (iso(next_at), error[:500], iso(at) if permanent else None, agent, item_id),
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
                        (case, name, event, iso(now), iso(now)),
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
                            (iso(now), new, row_id),
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
                (iso(now), name),
            )
            db.execute(self._q("DELETE FROM notifiers WHERE name = ?"), (name,))
            return int(cursor.rowcount or 0)
