"""Service levels over a period: the policy's table per severity, the calendar it used,
the breached cases with their timelines, cases opened and resolved per ISO week, and
each case's response time against the time its target allowed.

The table is `agents.cases.sla.sla_rows`, the one `opsagent cases sla` prints. A case
counts as breached when the store recorded a breach for it (the agent's upkeep) or
when its own times show it: responded or resolved after the due time, or still not
at the end of the period. The upkeep records a breach within a minute, so both agree
on any case the agent watched; the second also covers an agent that was down.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from agents.cases.sla import (
    WEEKDAY_NAMES,
    BusinessCalendar,
    business_amount,
    sla_rows,
    target_for,
)
from agents.config import CasesConfig
from agents.reports.document import (
    case_as_of,
    case_facts,
    envelope,
    iso,
    missed_targets,
    percent_text,
)
from agents.results import Severity
from agents.units import format_duration


@dataclass
class SlaInputs:
    """Everything an SLA report is built from, gathered by the caller."""

    cases: list[Any]  # agents.cases.store.Case, any period (filtered here)
    recorded_breaches: dict[int, set[str]]  # CaseStore.breached_cases()
    timeline: Callable[[int], list[Any]]  # CaseStore.events
    config: CasesConfig
    since: datetime
    until: datetime
    hosts: list[str] | None = None  # only cases of these hosts (a label filter); None: all
    labels: dict[str, str] = field(default_factory=dict)
    generated_at: datetime | None = None


def build_sla(inputs: SlaInputs) -> dict[str, Any]:
    """The SLA report document (unsigned)."""
    now = inputs.generated_at or inputs.until
    wanted = None if inputs.hosts is None else {h.lower() for h in inputs.hosts}
    scoped = [
        case_as_of(c, inputs.until)
        for c in inputs.cases
        if (wanted is None or c.host.lower() in wanted) and c.first_seen < inputs.until
    ]
    opened = [c for c in scoped if c.first_seen >= inputs.since]
    breached = {c.id: _recorded(c.id, inputs) | missed_targets(c, inputs.until) for c in opened}
    breached = {k: v for k, v in breached.items() if v}
    calendar = BusinessCalendar.from_config(inputs.config.calendar)
    rows = [r.to_dict() for r in sla_rows(opened, breached, inputs.since)]
    breaches = []
    for case in sorted(opened, key=lambda c: c.first_seen):
        if case.id not in breached:
            continue
        events = inputs.timeline(case.id)
        breaches.append(
            {
                **case_facts(case, inputs.until),
                "missed": sorted(breached[case.id]),
                "timeline": [
                    {"at": iso(e.at), "kind": e.kind, "actor": e.actor, "text": e.text}
                    for e in events
                    if e.at < inputs.until  # what happened after the period is not in it
                ],
            }
        )
    hosts = sorted(inputs.hosts or []) if wanted is not None else sorted({c.host for c in opened})
    empty = not opened
    doc = envelope(
        "sla",
        generated_at=now,
        since=inputs.since,
        until=inputs.until,
        hosts=hosts,
        repository=None,
        filters={"labels": dict(inputs.labels)},
        headline=_headline(opened, rows, breached, inputs),
        empty=empty,
    )
    doc["sla"] = {
        "calendar": _calendar(calendar, inputs.since, inputs.until),
        "targets": _targets(inputs.config, calendar),
        "rows": rows,
        "breaches": breaches,
        "weekly": _weekly(scoped, calendar, inputs.since, inputs.until),
        "responses": [_response(c, inputs.until) for c in sorted(opened, key=_opened)],
    }
    return doc


def _recorded(case_id: int, inputs: SlaInputs) -> set[str]:
    """The breaches the store recorded for a case before the end of the period."""
    if not inputs.recorded_breaches.get(case_id):
        return set()
    return {
        str(e.text)
        for e in inputs.timeline(case_id)
        if e.kind == "sla breached" and e.at < inputs.until
    }


def _opened(case: Any) -> tuple[datetime, int]:
    return (case.first_seen, case.id)


def _response(case: Any, now: datetime) -> dict[str, Any]:
    """A case's time to respond against the wall time its target allowed (due - opened):
    both in wall-clock seconds, so a business-hours target draws on the same axis."""
    facts = case_facts(case, now)
    return {
        "case": case.id,
        "severity": case.severity.value,
        "opened": facts["opened"],
        "response_seconds": facts["response_seconds"],
        "target_seconds": round((case.response_due - case.first_seen).total_seconds(), 1),
        "met": facts["response_met"],
    }


def _calendar(calendar: BusinessCalendar, since: datetime, until: datetime) -> dict[str, Any]:
    """The business calendar spelled out, with the holidays that fell in the period."""
    zone = calendar.zone
    first, last = since.astimezone(zone).date(), until.astimezone(zone).date()
    return {
        "description": calendar.describe(),
        "timezone": zone.key,
        "hours": f"{calendar.opens:%H:%M}-{calendar.closes:%H:%M}",
        "weekdays": [WEEKDAY_NAMES[d] for d in sorted(calendar.weekdays)],
        "holidays": (
            f"{calendar.country}-{calendar.subdivision}"
            if calendar.country and calendar.subdivision
            else calendar.country
        ),
        "holidays_in_period": _holidays_between(calendar, first, last),
    }


def _holidays_between(calendar: BusinessCalendar, first: date, last: date) -> list[dict[str, str]]:
    found: dict[date, str] = {}
    if calendar.country:
        import holidays  # a command's import, never the agent's (see agents.cases.sla)

        years = list(range(first.year, last.year + 1))
        region = holidays.country_holidays(
            calendar.country, subdiv=calendar.subdivision, years=years
        )
        found.update({d: str(name) for d, name in region.items() if first <= d <= last})
    for day in calendar.extra_holidays:
        if first <= day <= last:
            found.setdefault(day, "holiday (cases.calendar.holidays.dates)")
    return [{"date": d.isoformat(), "name": found[d]} for d in sorted(found)]


def _targets(config: CasesConfig, calendar: BusinessCalendar) -> dict[str, Any]:
    """Each severity's targets: as written in the policy, and in seconds of the clock they
    run on (business seconds for a business target: 1d = one span of business hours)."""
    out = {}
    for severity in Severity:
        target = target_for(config, severity)

        def seconds(amount: timedelta, business: bool = target.business) -> float:
            real = business_amount(amount, calendar) if business else amount
            return real.total_seconds()

        out[severity.value] = {
            "response_seconds": seconds(target.response),
            "resolution_seconds": seconds(target.resolution),
            "business": target.business,
            "response": format_duration(target.response),
            "resolution": format_duration(target.resolution),
        }
    return out


def _weekly(
    cases: list[Any], calendar: BusinessCalendar, since: datetime, until: datetime
) -> list[dict[str, Any]]:
    """Cases opened and resolved per ISO week (local to the calendar), every week of the
    period listed, empty ones too."""
    zone = calendar.zone

    def week(moment: datetime) -> str:
        year, number, _ = moment.astimezone(zone).isocalendar()
        return f"{year}-W{number:02d}"

    weeks: dict[str, dict[str, Any]] = {}
    day = since.astimezone(zone).date()
    last = until.astimezone(zone).date()
    while day <= last:
        year, number, _ = day.isocalendar()
        key = f"{year}-W{number:02d}"
        weeks.setdefault(key, {"week": key, "opened": 0, "resolved": 0})
        day += timedelta(days=1)
    for case in cases:
        if since <= case.first_seen < until and week(case.first_seen) in weeks:
            weeks[week(case.first_seen)]["opened"] += 1
        done = case.resolved_at
        if done is not None and since <= done < until and week(done) in weeks:
            weeks[week(done)]["resolved"] += 1
    return list(weeks.values())


def _headline(
    opened: list[Any],
    rows: list[dict[str, Any]],
    breached: dict[int, set[str]],
    inputs: SlaInputs,
) -> str:
    period = f"{inputs.since.date().isoformat()} to {inputs.until.date().isoformat()}"
    scope = ""
    if inputs.labels:
        scope = " for " + ", ".join(f"{k}={v}" for k, v in sorted(inputs.labels.items()))
    if not opened:
        return f"No cases opened{scope} in the period {period}"
    met = len(opened) - len(breached)
    compliance = percent_text(round(100.0 * met / len(opened), 1))
    per = ", ".join(f"{r['cases']} {r['severity']}" for r in rows if r["cases"])
    missed = "no targets missed" if not breached else f"{len(breached)} breached"
    cases = "1 case" if len(opened) == 1 else f"{len(opened)} cases"
    return f"{cases} opened{scope} ({per}); {missed}; {compliance} within target"
