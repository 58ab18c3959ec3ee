"""SLA clocks: when a case's response and resolution are due, from the support policy.

Critical targets run on the wall clock (4 h to respond, 24 h to resolve). The others
run on a business calendar: a time zone (America/Toronto), daily hours
(08:00-18:00), weekdays (Monday to Friday) and holidays (the `holidays` package for a
country and subdivision, Ontario's by default, plus explicit dates): the support
policy's calendar. A business day is one full span of business hours, so at the
defaults 1 business day from Friday 17:30 is due Monday 17:30, and a
case opened at 22:00 starts its clock at 08:00 the next business day. Business time
is counted on the local wall clock, so daylight saving changes (at night) never
stretch or shrink a business day.

In a target, days mean business days and hours business hours: `{response: 1d}` is
one span of business hours, `{response: 4h, business: false}` four hours of wall clock.
"""

from __future__ import annotations

import logging
import math
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from agents.config import Calendar, CasesConfig, Target
from agents.records import SlaRow
from agents.results import Severity

log = logging.getLogger("opsagent.sla")

WEEKDAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

DEFAULT_TARGETS: dict[Severity, Target] = {
    Severity.CRITICAL: Target(
        response=timedelta(hours=4), resolution=timedelta(hours=24), business=False
    ),
    Severity.MAJOR: Target(response=timedelta(days=1), resolution=timedelta(days=3)),
    Severity.MODERATE: Target(response=timedelta(days=2), resolution=timedelta(days=10)),
    Severity.MINOR: Target(response=timedelta(days=3), resolution=timedelta(days=20)),
}


@dataclass(frozen=True)
class BusinessCalendar:
    zone: ZoneInfo
    opens: time
    closes: time
    weekdays: frozenset[int]
    country: str | None = None
    subdivision: str | None = None
    extra_holidays: frozenset[date] = field(default_factory=frozenset)

    @classmethod
    def from_config(cls, calendar: Calendar) -> BusinessCalendar:
        start, _, end = calendar.hours.partition("-")
        return cls(
            zone=ZoneInfo(calendar.timezone),
            opens=time.fromisoformat(start),
            closes=time.fromisoformat(end),
            weekdays=frozenset(_weekdays(calendar.weekdays)),
            country=calendar.holidays.country,
            subdivision=calendar.holidays.subdivision,
            extra_holidays=frozenset(date.fromisoformat(d) for d in calendar.holidays.dates),
        )

    def describe(self) -> str:
        """One line naming the calendar, so a due time can be checked against its rules."""
        days = _day_ranges(sorted(self.weekdays))
        if self.country is None:
            holidays = "no public holidays"
        else:
            region = f"{self.country}-{self.subdivision}" if self.subdivision else self.country
            holidays = f"{region} public holidays"
        if self.extra_holidays:
            holidays += f" + {len(self.extra_holidays)} extra date(s)"
        hours = f"{self.opens:%H:%M}-{self.closes:%H:%M}"
        return f"{self.zone.key}, {hours}, {days}, {holidays}"

    @property
    def day_span(self) -> timedelta:
        """One business day: the length of the daily business hours."""
        today = date(2000, 1, 3)
        return datetime.combine(today, self.closes) - datetime.combine(today, self.opens)

    def is_business_day(self, day: date) -> bool:
        if day.weekday() not in self.weekdays or day in self.extra_holidays:
            return False
        return not (self.country and day in _holidays(self.country, self.subdivision, day.year))

    def clock_start(self, moment: datetime) -> datetime:
        """When business time starts counting for something that happens at `moment`."""
        local = moment.astimezone(self.zone)
        day = local.date()
        if self.is_business_day(day):
            if local.time() < self.opens:
                return self._at(day, self.opens)
            if local.time() < self.closes:
                return local
        return self._at(self._next_business_day(day), self.opens)

    def add(self, moment: datetime, business_time: timedelta) -> datetime:
        """`moment` plus an amount of business time (hours within business hours)."""
        current = self.clock_start(moment)
        remaining = business_time
        while True:
            day = current.date()
            closing = self._at(day, self.closes)
            available = _wall(closing) - _wall(current)
            if remaining <= available:
                return self._wall_to_local(_wall(current) + remaining)
            remaining -= available
            current = self._at(self._next_business_day(day), self.opens)

    def business_time_between(self, start: datetime, end: datetime) -> timedelta:
        """Business time elapsed from start to end (zero when end is before start)."""
        current = self.clock_start(start)
        end_local = end.astimezone(self.zone)
        total = timedelta(0)
        while current < end_local:
            day = current.date()
            closing = self._at(day, self.closes)
            stop = min(closing, end_local)
            if stop > current:
                total += _wall(stop) - _wall(current)
            current = self._at(self._next_business_day(day), self.opens)
        return total

    def _next_business_day(self, day: date) -> date:
        day += timedelta(days=1)
        for _ in range(3700):
            if self.is_business_day(day):
                return day
            day += timedelta(days=1)
        raise ValueError("the business calendar has no business day in ten years")

    def _at(self, day: date, clock: time) -> datetime:
        return datetime.combine(day, clock, tzinfo=self.zone)

    def _wall_to_local(self, wall: datetime) -> datetime:
        return wall.replace(tzinfo=self.zone)


@dataclass(frozen=True)
class DueTimes:
    response: datetime
    resolution: datetime


def target_for(config: CasesConfig, severity: Severity) -> Target:
    return config.targets.get(severity, DEFAULT_TARGETS[severity])


def due_times(
    severity: Severity, opened: datetime, calendar: BusinessCalendar, target: Target
) -> DueTimes:
    """Response and resolution due times for a case of `severity` opened at `opened`."""
    if not target.business:  # elapsed time: add in UTC, so a DST change is not skipped
        start = opened.astimezone(UTC)
        zone = calendar.zone
        return DueTimes(
            (start + target.response).astimezone(zone),
            (start + target.resolution).astimezone(zone),
        )
    return DueTimes(
        calendar.add(opened, business_amount(target.response, calendar)),
        calendar.add(opened, business_amount(target.resolution, calendar)),
    )


def business_amount(duration: timedelta, calendar: BusinessCalendar) -> timedelta:
    """Days in a business target are business days (spans of business hours)."""
    return duration.days * calendar.day_span + (duration - timedelta(days=duration.days))


def _wall(moment: datetime) -> datetime:
    """The local wall-clock reading, without zone: business time is counted on it."""
    return moment.replace(tzinfo=None)


def _day_ranges(days: list[int]) -> str:
    """[0, 1, 2, 3, 4, 6] as "mon-fri,sun": the form the config takes."""
    runs: list[list[int]] = []
    for day in days:
        if runs and day == runs[-1][-1] + 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    names = [
        WEEKDAY_NAMES[r[0]] if len(r) == 1 else f"{WEEKDAY_NAMES[r[0]]}-{WEEKDAY_NAMES[r[-1]]}"
        for r in runs
    ]
    return ",".join(names)


def _weekdays(text: str) -> list[int]:
    days: list[int] = []
    for part in text.lower().split(","):
        part = part.strip()
        if "-" in part:
            first, _, last = part.partition("-")
            a, b = WEEKDAY_NAMES.index(first[:3]), WEEKDAY_NAMES.index(last[:3])
            days.extend(range(a, b + 1))
        elif part:
            days.append(WEEKDAY_NAMES.index(part[:3]))
    return days


# Where a year's public holidays are computed. Importing `holidays` loads every country's
# module, 17 MB for the life of the process: fine for a command, not for the agent, which
# runs for months and needs a region's dates about once a year. The agent asks a
# short-lived child process instead (`holidays_in_child`).
_IN_CHILD = False

_CHILD = (
    "import sys, holidays\n"
    "country, subdiv, year = sys.argv[1], sys.argv[2] or None, int(sys.argv[3])\n"
    "days = holidays.country_holidays(country, subdiv=subdiv, years=year)\n"
    "print(' '.join(sorted(day.isoformat() for day in days)))\n"
)


def holidays_in_child(enabled: bool = True) -> None:
    """Compute public holidays in a child process from now on (the agent's choice)."""
    global _IN_CHILD
    _IN_CHILD = enabled
    _holidays.cache_clear()


@lru_cache(maxsize=64)
def _holidays(country: str, subdivision: str | None, year: int) -> frozenset[date]:
    if _IN_CHILD and "holidays" not in sys.modules:
        days = _holidays_from_child(country, subdivision, year)
        if days is not None:
            return days
    import holidays

    return frozenset(holidays.country_holidays(country, subdiv=subdivision, years=year))


def _holidays_from_child(
    country: str, subdivision: str | None, year: int
) -> frozenset[date] | None:
    """The region's holidays of `year` from a child process; None (and a log line) if it
    failed, and the caller computes them here, as before, raising what it raises."""
    argv = [sys.executable, "-c", _CHILD, country, subdivision or "", str(year)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode == 0:
            return frozenset(date.fromisoformat(day) for day in proc.stdout.split())
        why = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
    except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
        why = str(exc)
    log.warning(
        "public holidays of %s %s in a child process failed (%s); computing here",
        country,
        year,
        why,
    )
    return None


def sla_report(
    cases: list[Any], breached: dict[int, set[str]], since: datetime
) -> list[dict[str, Any]]:
    """`sla_rows` as the JSON `opsagent cases sla --json` prints."""
    return [row.to_dict() for row in sla_rows(cases, breached, since)]


def sla_rows(cases: list[Any], breached: dict[int, set[str]], since: datetime) -> list[SlaRow]:
    """Per severity: cases opened since `since`, median and p90 time to respond and to
    resolve (seconds), cases that missed a target, and compliance (percent that missed none)."""
    rows = []
    for severity in Severity:
        mine = [c for c in cases if c.severity is severity and c.first_seen >= since]
        respond = sorted(
            (c.acknowledged_at - c.first_seen).total_seconds() for c in mine if c.acknowledged_at
        )
        resolve = sorted(
            (c.resolved_at - c.first_seen).total_seconds() for c in mine if c.resolved_at
        )
        missed = sum(1 for c in mine if breached.get(c.id))
        rows.append(
            SlaRow(
                severity=severity.value,
                cases=len(mine),
                respond_median_seconds=_quantile(respond, 0.5),
                respond_p90_seconds=_quantile(respond, 0.9),
                resolve_median_seconds=_quantile(resolve, 0.5),
                resolve_p90_seconds=_quantile(resolve, 0.9),
                breached=missed,
                compliance_percent=round(100.0 * (len(mine) - missed) / len(mine), 1)
                if mine
                else None,
            )
        )
    return rows


def _quantile(values: list[float], q: float) -> float | None:
    """Nearest-rank quantile of sorted values."""
    if not values:
        return None
    rank = max(1, math.ceil(q * len(values)))
    return round(values[rank - 1], 1)


Clock = Callable[[Severity, datetime], DueTimes]


def sla_clock(config: CasesConfig) -> Clock:
    """The due times of a case of a severity whose clock starts at a time, by this
    config's calendar and targets: what the store uses to restart or recompute clocks."""
    calendar = BusinessCalendar.from_config(config.calendar)

    def clock(severity: Severity, start: datetime) -> DueTimes:
        return due_times(severity, start, calendar, target_for(config, severity))

    return clock
