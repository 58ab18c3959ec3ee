"""SLA arithmetic, worked by hand against the support policy's calendar."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.cases.sla import DEFAULT_TARGETS, BusinessCalendar, due_times
from agents.config import Calendar, Config, ConfigError, Holidays, load_config
from agents.results import Severity
from tests.support.probe import run_probe

TORONTO = ZoneInfo("America/Toronto")
CALENDAR = BusinessCalendar.from_config(
    Calendar(holidays=Holidays(country="CA", subdivision="ON", dates=["2026-11-11"]))
)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=TORONTO)


def due(severity: Severity, opened: str) -> tuple[str, str]:
    times = due_times(severity, at(opened), CALENDAR, DEFAULT_TARGETS[severity])
    return (
        times.response.astimezone(TORONTO).strftime("%a %Y-%m-%d %H:%M %Z"),
        times.resolution.astimezone(TORONTO).strftime("%a %Y-%m-%d %H:%M %Z"),
    )


@pytest.mark.parametrize(
    ("severity", "opened", "response", "resolution"),
    [
        # Friday 17:30 + 1 business day (10 h): 30 min Friday, 9 h 30 Monday
        (
            Severity.MAJOR,
            "2026-11-27T17:30",
            "Mon 2026-11-30 17:30 EST",
            "Wed 2026-12-02 17:30 EST",
        ),
        # opened at 22:00: the clock starts at 08:00 the next business day
        (
            Severity.MAJOR,
            "2026-11-24T22:00",
            "Wed 2026-11-25 18:00 EST",
            "Fri 2026-11-27 18:00 EST",
        ),
        # opened before hours on a business day: starts at 08:00 that day
        (
            Severity.MINOR,
            "2026-11-23T06:15",
            "Wed 2026-11-25 18:00 EST",
            "Fri 2026-12-18 18:00 EST",
        ),
        # across the start of daylight saving (Sun 2026-03-08): wall-clock business hours
        (
            Severity.MODERATE,
            "2026-03-06T12:00",
            "Tue 2026-03-10 12:00 EDT",
            "Fri 2026-03-20 12:00 EDT",
        ),
        # across Christmas and Boxing Day (observed Mon 12-28) in Ontario
        (
            Severity.MAJOR,
            "2026-12-24T17:00",
            "Tue 2026-12-29 17:00 EST",
            "Thu 2026-12-31 17:00 EST",
        ),
        # an explicit holiday date from the config (2026-11-11)
        (
            Severity.MAJOR,
            "2026-11-10T12:00",
            "Thu 2026-11-12 12:00 EST",
            "Mon 2026-11-16 12:00 EST",
        ),
        # across a year end: Jan 1 is a holiday; 8 h Thursday, 10 h Monday, 2 h Tuesday
        (
            Severity.MODERATE,
            "2026-12-31T10:00",
            "Tue 2027-01-05 10:00 EST",
            "Fri 2027-01-15 10:00 EST",
        ),
        # critical runs on the wall clock, weekends included
        (
            Severity.CRITICAL,
            "2026-11-28T22:00",
            "Sun 2026-11-29 02:00 EST",
            "Sun 2026-11-29 22:00 EST",
        ),
        # critical across DST: elapsed hours, 23:00 EST + 4 h is 04:00 EDT, + 24 h 00:00 EDT
        (
            Severity.CRITICAL,
            "2026-03-07T23:00",
            "Sun 2026-03-08 04:00 EDT",
            "Mon 2026-03-09 00:00 EDT",
        ),
    ],
)
def test_due_times(severity: Severity, opened: str, response: str, resolution: str) -> None:
    assert due(severity, opened) == (response, resolution)


def test_ontario_holidays_at_the_end_of_2026() -> None:
    """What the `holidays` package says for CA-ON: Boxing Day falls on a Saturday and is
    observed on Monday, so Friday and Monday both stop the clock."""
    import holidays

    ontario = holidays.country_holidays("CA", subdiv="ON", years=2026)
    assert ontario.get(date(2026, 12, 25)) == "Christmas Day"
    assert ontario.get(date(2026, 12, 26)) == "Boxing Day"
    assert ontario.get(date(2026, 12, 28)) == "Boxing Day (observed)"
    assert date(2026, 12, 24) not in ontario and date(2026, 12, 29) not in ontario


AGENT_PROBE = """
import json, sys
from datetime import date
from agents.cases import sla
sla.holidays_in_child()
calendar = sla.BusinessCalendar.from_config(sla.Calendar())
days = [date(2026, 12, d) for d in (24, 25, 26, 28, 29)]
print(json.dumps([[calendar.is_business_day(d) for d in days], "holidays" in sys.modules]))
"""


def test_the_agent_asks_a_child_for_holidays_and_gets_the_same_days() -> None:
    """The agent computes public holidays in a child process, so the first case it opens
    does not load every country of the `holidays` package into it for good; the days are
    the package's (Christmas, Boxing Day and its observed Monday)."""
    business_days, loaded = run_probe(AGENT_PROBE)
    assert business_days == [True, False, False, False, True]
    assert loaded is False


def test_the_child_gives_the_packages_days_and_says_when_it_fails(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The child's days are the package's; a child that fails is logged and None, and
    `_holidays` then computes them in the process, as it did before."""
    import holidays

    from agents.cases import sla

    assert sla._holidays_from_child("CA", "ON", 2026) == frozenset(
        holidays.country_holidays("CA", subdiv="ON", years=2026)
    )
    monkeypatch.setattr(sla, "_CHILD", "raise SystemExit('no holidays here')")
    assert sla._holidays_from_child("CA", "ON", 2026) is None
    assert "no holidays here" in caplog.text


def test_the_embedded_calendar_is_the_support_policy() -> None:
    """No config at all: 08:00-18:00 Toronto, weekdays, Ontario public holidays. A moderate
    case opened Thursday 2026-12-24 10:00 has 8 h that day, none on the 25th (Christmas),
    the weekend or the 28th (Boxing Day observed), 10 h on the 29th, 2 h on the 30th."""
    calendar = BusinessCalendar.from_config(Config().cases.calendar)
    times = due_times(
        Severity.MODERATE, at("2026-12-24T10:00"), calendar, DEFAULT_TARGETS[Severity.MODERATE]
    )
    assert times.response == at("2026-12-30T10:00")
    assert calendar.describe() == "America/Toronto, 08:00-18:00, mon-fri, CA-ON public holidays"


def test_local_config_uses_the_embedded_calendar(repo_root: Path) -> None:
    local = load_config(repo_root / "deploy/config/local.yml")
    assert local.cases.calendar == Config().cases.calendar


def test_holidays_can_be_turned_off_and_unknown_regions_are_refused(tmp_path: Path) -> None:
    assert not BusinessCalendar.from_config(
        Calendar(holidays=Holidays(country=None))
    ).is_business_day(date(2026, 12, 26))
    assert BusinessCalendar.from_config(Calendar(holidays=Holidays(country=None))).is_business_day(
        date(2026, 12, 28)
    )
    config = tmp_path / "config.yml"
    config.write_text('cases: {calendar: {holidays: {country: CA, subdivision: "XX"}}}\n')
    with pytest.raises(ConfigError, match="does not have subdivision XX"):
        load_config(config)


def test_business_time_between() -> None:
    start, end = at("2026-11-27T17:30"), at("2026-11-30T09:00")
    assert CALENDAR.business_time_between(start, end) == timedelta(hours=1, minutes=30)
    assert CALENDAR.business_time_between(end, start) == timedelta(0)


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31)),
    st.integers(0, 5 * 24 * 60),
    st.sampled_from(list(Severity)),
)
def test_due_times_are_monotonic(start: datetime, minutes: int, severity: Severity) -> None:
    first = start.replace(tzinfo=UTC)
    later = first + timedelta(minutes=minutes)
    a = due_times(severity, first, CALENDAR, DEFAULT_TARGETS[severity])
    b = due_times(severity, later, CALENDAR, DEFAULT_TARGETS[severity])
    assert a.response <= b.response and a.resolution <= b.resolution
    assert a.response >= first and a.resolution >= a.response


def test_cli_cases_due() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "agents",
            "cases",
            "due",
            "--severity",
            "major",
            "--opened",
            "2026-11-27T17:30",
            "--json",
            "--config",
            "deploy/config/local.yml",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert '"response_due": "2026-11-30T17:30:00-05:00"' in proc.stdout


def test_cli_cases_due_names_its_calendar() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "agents",
            "cases",
            "due",
            "--severity",
            "moderate",
            "--opened",
            "2026-12-24T10:00",
            "--config",
            "deploy/config/local.yml",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "response due:   2026-12-30T10:00:00-05:00" in proc.stdout
    assert "calendar:       America/Toronto, 08:00-18:00, mon-fri, CA-ON public holidays" in (
        proc.stdout
    )


def test_sla_report_table() -> None:
    from types import SimpleNamespace

    from agents.cases.sla import sla_report

    t = datetime(2026, 11, 1, 10, tzinfo=UTC)

    def case(n: int, severity: Severity, ack_h: float | None, res_h: float | None) -> object:
        return SimpleNamespace(
            id=n,
            severity=severity,
            first_seen=t,
            acknowledged_at=t + timedelta(hours=ack_h) if ack_h is not None else None,
            resolved_at=t + timedelta(hours=res_h) if res_h is not None else None,
        )

    cases = [
        case(1, Severity.CRITICAL, 1, 10),
        case(2, Severity.CRITICAL, 2, 20),
        case(3, Severity.CRITICAL, 5, 30),
        case(4, Severity.CRITICAL, None, None),
        case(5, Severity.MINOR, 1, 2),
    ]
    rows = {
        r["severity"]: r
        for r in sla_report(cases, {3: {"response", "resolution"}}, t - timedelta(days=1))
    }
    critical = rows["critical"]
    assert critical["cases"] == 4 and critical["breached"] == 1
    assert critical["respond_median_seconds"] == 2 * 3600
    assert critical["respond_p90_seconds"] == 5 * 3600
    assert critical["resolve_median_seconds"] == 20 * 3600
    assert critical["compliance_percent"] == 75.0
    assert rows["minor"]["compliance_percent"] == 100.0
    assert rows["major"]["cases"] == 0 and rows["major"]["compliance_percent"] is None
