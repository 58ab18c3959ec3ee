"""What a person does to cases from the command line: each change made under their name
and audited (who, what, the outcome) in the state database, and the SLA due times of a
case opened at a given time. The command line parses, calls these and prints."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from agents.audit import action as audit_action
from agents.records.cases import CalendarRecord, DueDocument
from agents.results import Severity

if TYPE_CHECKING:
    from agents.cases.store import Case, CaseStore
    from agents.config import Config


def open_case(
    config: Config,
    store: CaseStore,
    title: str,
    severity: Severity,
    host: str | None,
    body: str | None,
    actor: str,
) -> Case:
    """Open a case by hand (a call or an e-mail) on `host` (default: this agent's)."""
    with audit_action(config.state_db, "case open", title[:100], by=actor, severity=severity.value):
        return store.open_case_by_hand(
            title.strip()[:500], severity, host or config.host, datetime.now(UTC), actor, body
        )


def set_severity(
    config: Config, store: CaseStore, case_id: int, severity: Severity, actor: str, why: str
) -> Case:
    """Change an open case's severity; its clocks are recomputed from when they started."""
    with audit_action(config.state_db, "case severity", f"#{case_id}", by=actor, to=severity.value):
        return store.set_severity(case_id, severity, datetime.now(UTC), actor, why)


def acknowledge(config: Config, store: CaseStore, case_id: int, actor: str) -> Case:
    """Acknowledge a case: stops its response clock."""
    with audit_action(config.state_db, "case ack", f"#{case_id}", by=actor):
        return store.acknowledge(case_id, datetime.now(UTC), actor)


def comment(config: Config, store: CaseStore, case_id: int, actor: str, text: str) -> Case:
    """Add a comment to a case's timeline."""
    with audit_action(config.state_db, "case comment", f"#{case_id}", by=actor):
        return store.comment(case_id, datetime.now(UTC), actor, text)


def resolve(config: Config, store: CaseStore, case_id: int, actor: str, note: str | None) -> Case:
    """Resolve a case: stops its resolution clock."""
    with audit_action(config.state_db, "case resolve", f"#{case_id}", by=actor, note=note):
        return store.resolve(case_id, datetime.now(UTC), actor, note)


def reopen(config: Config, store: CaseStore, case_id: int, actor: str, note: str | None) -> Case:
    """Reopen a resolved or closed case: unacknowledged, its clocks start over."""
    with audit_action(config.state_db, "case reopen", f"#{case_id}", by=actor):
        return store.reopen(case_id, datetime.now(UTC), actor, note)


def close(config: Config, store: CaseStore, case_id: int, actor: str) -> Case:
    """Close a resolved case."""
    with audit_action(config.state_db, "case close", f"#{case_id}", by=actor):
        return store.close(case_id, datetime.now(UTC), actor)


def retry_failed(
    config: Config, store: CaseStore, notifier: str | None, case_id: int | None
) -> int:
    """Requeue the notifications that failed for good; returns how many."""
    with audit_action(config.state_db, "case notifications retry", notifier or "all") as audit:
        count = store.retry_failed(datetime.now(UTC), notifier, case_id)
        audit["requeued"] = count
    return count


def retire_notifier(config: Config, store: CaseStore, name: str) -> int:
    """Forget a notifier name; returns how many waiting notifications were dropped."""
    with audit_action(config.state_db, "notifier retire", name) as audit:
        count = store.retire_notifier(name, datetime.now(UTC))
        audit["dropped"] = count
    return count


def due(config: Config, severity: Severity, opened: datetime) -> DueDocument:
    """When a case of `severity` opened at `opened` is due, in the calendar's zone; raises
    OverflowError or ValueError when that is too far in the future to compute."""
    from agents.cases.sla import BusinessCalendar, due_times, target_for

    calendar = BusinessCalendar.from_config(config.cases.calendar)
    times = due_times(severity, opened, calendar, target_for(config.cases, severity))
    zone = calendar.zone
    return DueDocument(
        severity=severity.value,
        opened=opened.astimezone(zone).isoformat(),
        response_due=times.response.astimezone(zone).isoformat(),
        resolution_due=times.resolution.astimezone(zone).isoformat(),
        calendar=CalendarRecord(
            timezone=config.cases.calendar.timezone,
            hours=config.cases.calendar.hours,
            weekdays=config.cases.calendar.weekdays,
        ),
    )
