"""The one path of every case change: the change, its timeline entry and one outbox row
per notifier that receives it, in one transaction (`_record`); failures, people's
changes (severity, acknowledge, resolve, reopen, close, comment) and SLA breaches."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from agents.cases.store.db import Database
from agents.cases.store.errors import CaseNotFound, CaseRefused
from agents.cases.store.models import Case, Failure, case_from_row, clean, iso
from agents.cases.store.schema import COLUMNS, OPEN_SQL, OPEN_STATUSES
from agents.results import Severity

if TYPE_CHECKING:
    from agents.cases.sla import Clock

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

_ALLOWED_FROM = {
    "acknowledged": ("open", "reopened"),
    "resolved": OPEN_STATUSES,
    "reopened": ("resolved", "closed"),
    "closed": ("resolved",),
}


class Changes(Database):
    """Every change of a case, each in its own transaction (or the caller's `batch`)."""

    notifiers: list[tuple[str, frozenset[Severity]]]
    _clock: Clock | None

    @property
    def clock(self) -> Clock:
        """Due times for a severity from a start: the one given, or the support policy's."""
        if self._clock is None:
            from agents.cases.sla import sla_clock
            from agents.config import CasesConfig

            self._clock = sla_clock(CasesConfig())
        return self._clock

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
            (case_id, iso(at), kind, clean(actor), clean(text)),
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
                (case_id, name, kind, iso(at), iso(at)),
            )

    def _receivers(self, db: Any, severity: Severity) -> tuple[set[str], set[str]]:
        """(the notifiers that get a row for a change of a case of this severity, every
        notifier that exists): this store's own, and every one an agent registered within
        REGISTRATION_TTL."""
        names = {name for name, severities in self.notifiers if severity in severities}
        known = {name for name, _ in self.notifiers}
        since = iso(datetime.now(UTC) - REGISTRATION_TTL)
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
                    (kind, iso(at), actor, case_id),
                )
            elif kind == "resolved":
                db.execute(
                    self._q("UPDATE cases SET status = ?, resolved_at = ? WHERE id = ?"),
                    (kind, iso(at), case_id),
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
            (iso(at), iso(due.response), iso(due.resolution), case.id),
        )
        clocks = f"clocks restart: respond by {iso(due.response)}, resolve by {iso(due.resolution)}"
        return f"{note}; {clocks}" if note else clocks

    # --- changes -----------------------------------------------------------------------

    def record_failure(self, failure: Failure) -> tuple[Case, bool]:
        """Open a case for the failure, or count an occurrence on the open one.

        Returns the case and whether this call opened it. Atomic across processes: a
        per-fingerprint lock (PostgreSQL) or the single writer (SQLite) decides who
        opens, everyone else adds an occurrence; no insert ever conflicts, so case
        numbers stay contiguous."""
        at = iso(failure.at)
        with self._tx() as db:
            self._lock_fingerprint(db, failure.fingerprint)
            row = self._open_row(db, failure.fingerprint, lock=True)
            if row is None:
                return self._open(db, failure, None), True
            case = case_from_row(row)
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
        at = iso(failure.at)
        row = db.execute(
            self._q(
                "INSERT INTO cases (fingerprint, title, severity, status, source, host,"
                " occurrences, first_seen, last_seen, response_due, resolution_due,"
                " clock_start) VALUES (?, ?, ?, 'open', ?, ?, 1, ?, ?, ?, ?, ?)"
                f" RETURNING {COLUMNS}"
            ),
            (
                failure.fingerprint,
                clean(failure.title),
                failure.severity.value,
                clean(failure.source),
                clean(failure.host),
                at,
                at,
                iso(failure.response_due),
                iso(failure.resolution_due),
                at,
            ),
        ).fetchone()
        case = case_from_row(row)
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
            (severity.value, iso(due.response), iso(due.resolution), case.id),
        )
        text = f"{case.severity.value} -> {severity.value}"
        self._record(db, case.id, at, "severity changed", actor, f"{text}: {why}" if why else text)

    def reopen_recent(self, fingerprint: str, since: datetime, at: datetime) -> Case | None:
        """Reopen the case of this fingerprint resolved after `since`, if any (flapping)."""
        with self._tx() as db:
            self._lock_fingerprint(db, fingerprint)
            row = db.execute(
                self._q(
                    f"SELECT {COLUMNS} FROM cases WHERE fingerprint = ? AND status = 'resolved'"
                    " AND resolved_at >= ? ORDER BY id DESC LIMIT 1"
                ),
                (fingerprint, iso(since)),
            ).fetchone()
            if row is None or self._open_row(db, fingerprint) is not None:
                return None
            case = case_from_row(row)
            text = self._restart_clocks(db, case, at, None)
            db.execute(
                self._q(
                    "UPDATE cases SET last_seen = ?, occurrences = occurrences + 1 WHERE id = ?"
                ),
                (iso(at), case.id),
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
                    f"SELECT {COLUMNS} FROM cases WHERE status IN {OPEN_SQL}"
                    " AND (response_due < ? OR resolution_due < ?)"
                ),
                (iso(now), iso(now)),
            ).fetchall()
            for row in rows:
                case = case_from_row(row)
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
                        (case.id, target, iso(case.clock_started)),
                    ).fetchone()
                    if seen is None:
                        self._record(db, case.id, now, "sla breached", None, target)
                        found.append((case, target))
        return found

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

    def _open_row(self, db: Any, fingerprint: str, lock: bool = False) -> Any:
        suffix = " FOR UPDATE" if lock and self.kind == "postgres" else ""
        return db.execute(
            self._q(
                f"SELECT {COLUMNS} FROM cases WHERE fingerprint = ? AND status IN {OPEN_SQL}"
                + suffix
            ),
            (fingerprint,),
        ).fetchone()

    def _open_conflict(self, db: Any, case: Case) -> bool:
        row = db.execute(
            self._q(
                f"SELECT 1 FROM cases WHERE fingerprint = ? AND status IN {OPEN_SQL} AND id <> ?"
            ),
            (case.fingerprint, case.id),
        ).fetchone()
        return row is not None

    def _get(self, db: Any, case_id: int, lock: bool = False) -> Case:
        suffix = " FOR UPDATE" if lock and self.kind == "postgres" else ""
        row = db.execute(
            self._q(f"SELECT {COLUMNS} FROM cases WHERE id = ?" + suffix), (case_id,)
        ).fetchone()
        if row is None:
            raise CaseNotFound(f"no case #{case_id}")
        return case_from_row(row)
