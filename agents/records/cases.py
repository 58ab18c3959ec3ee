"""The case documents the command line prints (`opsagent cases list|show|notifications|due
--json`): a case, its timeline and its notifications, as typed records."""

from __future__ import annotations

from agents.records.base import Number, Record


class CaseRecord(Record):
    """A case: what failed where, its severity and status, and its SLA clocks (ISO times)."""

    id: int
    fingerprint: str
    title: str
    severity: str
    status: str
    source: str
    host: str
    occurrences: int
    first_seen: str
    last_seen: str
    acknowledged_at: str | None
    acknowledged_by: str | None
    resolved_at: str | None
    response_due: str
    resolution_due: str
    clock_start: str


class CaseListItem(CaseRecord):
    """A case and the seconds left on its clocks (negative once breached).

    `opsagent cases list --json` prints a list of these, newest first.
    """

    response_left_seconds: Number
    resolution_left_seconds: Number


class CaseEvent(Record):
    """One entry of a case's timeline: when, what, by whom, with which text."""

    at: str
    kind: str
    actor: str | None
    text: str | None


class NotificationRecord(Record):
    """One outbox row: a case's event for one notifier, and how its delivery went."""

    id: int
    case_id: int
    notifier: str
    event: str
    state: str
    attempts: int
    created_at: str
    last_error: str | None
    handled_by: str | None


class CaseDetail(CaseRecord):
    """A case, its timeline and its notifications, both oldest first.

    `opsagent cases show --json`.
    """

    events: list[CaseEvent]
    notifications: list[NotificationRecord]


class NotificationsDocument(Record):
    """Outbox rows, newest first, and the problems that keep notifications from going out.

    `opsagent cases notifications --json`.
    """

    notifications: list[NotificationRecord]
    problems: list[str]


class CalendarRecord(Record):
    """The business calendar the SLA clocks run on."""

    timezone: str
    hours: str
    weekdays: str


class DueDocument(Record):
    """When a case of this severity opened then is due (times in the calendar's zone).

    `opsagent cases due --json`.
    """

    severity: str
    opened: str
    response_due: str
    resolution_due: str
    calendar: CalendarRecord
