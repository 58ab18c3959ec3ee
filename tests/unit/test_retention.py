"""Keep policies: hand-worked tables and properties over generated timelines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.backup.errors import BackupError
from agents.backup.retention import Candidate, retention_decisions
from agents.config import Retention

TORONTO = ZoneInfo("America/Toronto")
NOW = datetime(2027, 6, 1, tzinfo=UTC)


def snaps(
    *times: str, zone: ZoneInfo = TORONTO, tags: dict[str, tuple[str, ...]] | None = None
) -> list[Candidate]:
    tags = tags or {}
    out = []
    for text in times:
        when = datetime.fromisoformat(text)
        if when.tzinfo is None:
            when = when.replace(tzinfo=zone)
        out.append(
            Candidate(
                id=text, time=when.astimezone(UTC), host="h", source="s", tags=tags.get(text, ())
            )
        )
    return out


def kept(snapshots: list[Candidate], now: datetime = NOW, **policy: object) -> dict[str, tuple]:
    decisions = retention_decisions(snapshots, Retention(timezone="America/Toronto", **policy), now)
    return {d.snapshot.id: d.reasons for d in decisions if d.keep}


def test_worked_example_from_the_docstring() -> None:
    timeline = snaps(
        "2026-03-11T18:00",
        "2026-03-11T02:00",
        "2026-03-10T02:00",
        "2026-03-08T02:30",
        "2026-03-07T02:00",
        "2026-03-01T02:00",
    )
    assert kept(timeline, keep_daily=2, keep_weekly=2) == {
        "2026-03-11T18:00": ("daily snapshot", "weekly snapshot"),
        "2026-03-10T02:00": ("daily snapshot",),
        "2026-03-08T02:30": ("weekly snapshot",),
    }
    assert "2026-03-01T02:00" in kept(timeline, keep_daily=2, keep_weekly=3)


def test_keep_last() -> None:
    timeline = snaps(*(f"2026-01-0{d}T10:00" for d in range(1, 6)))
    assert set(kept(timeline, keep_last=3)) == {
        "2026-01-05T10:00",
        "2026-01-04T10:00",
        "2026-01-03T10:00",
    }


def test_rules_count_separately() -> None:
    days = [datetime(2026, 1, 1, 3, tzinfo=TORONTO) + timedelta(days=n) for n in range(60)]
    timeline = snaps(*(d.isoformat() for d in days))
    result = kept(timeline, keep_daily=7, keep_weekly=5)
    dailies = [k for k, r in result.items() if "daily snapshot" in r]
    weeklies = [k for k, r in result.items() if "weekly snapshot" in r]
    assert len(dailies) == 7 and len(weeklies) == 5
    assert len(result) == 7 + 4  # the newest is both a daily and a weekly


def test_iso_weeks_across_a_year_end() -> None:
    # 2026-12-31 (Thu) and 2027-01-03 (Sun) are both in ISO week 2026-W53
    timeline = snaps("2027-01-03T10:00", "2026-12-31T10:00", "2026-12-27T10:00", "2026-12-20T10:00")
    assert set(kept(timeline, keep_weekly=2)) == {"2027-01-03T10:00", "2026-12-27T10:00"}
    assert set(kept(timeline, keep_yearly=2)) == {"2027-01-03T10:00", "2026-12-31T10:00"}


def test_days_follow_the_time_zone_across_dst() -> None:
    # 23:30 EST on 03-07 and 00:30 EST on 03-08 are the same UTC day but two local days
    timeline = snaps("2026-03-08T05:30+00:00", "2026-03-08T04:30+00:00")
    assert len(kept(timeline, keep_daily=2)) == 2
    # DST starts 2026-03-08 02:00: 01:30 EST and 03:30 EDT are one hour apart, one day
    timeline = snaps("2026-03-08T03:30", "2026-03-08T01:30")
    assert set(kept(timeline, keep_daily=1)) == {"2026-03-08T03:30"}
    assert len(kept(timeline, keep_hourly=5)) == 2


def test_keep_within_is_calendar_arithmetic() -> None:
    # latest 2026-03-10 12:00 EDT; 7 calendar days back is 2026-03-03 12:00 EST (17:00Z),
    # while 168 hours back would be 16:00Z
    timeline = snaps("2026-03-10T12:00", "2026-03-03T16:30+00:00", "2026-03-03T17:30+00:00")
    assert set(kept(timeline, keep_within=timedelta(days=7))) == {
        "2026-03-10T12:00",
        "2026-03-03T17:30+00:00",
    }


def test_keep_within_daily() -> None:
    timeline = snaps("2026-05-10T20:00", "2026-05-10T08:00", "2026-05-09T08:00", "2026-05-01T08:00")
    assert kept(timeline, keep_within_daily=timedelta(days=3)) == {
        "2026-05-10T20:00": ("daily within 3d",),
        "2026-05-09T08:00": ("daily within 3d",),
    }


def test_future_snapshots_are_kept_by_duration_rules() -> None:
    now = datetime(2026, 5, 10, 12, tzinfo=TORONTO)
    timeline = snaps("2026-05-20T08:00", "2026-05-10T08:00", "2026-04-01T08:00")
    result = kept(timeline, now=now, keep_within=timedelta(days=2))
    assert set(result) == {"2026-05-20T08:00", "2026-05-10T08:00"}


def test_keep_tags_outside_counts() -> None:
    timeline = snaps(
        "2026-05-10T08:00",
        "2026-05-09T08:00",
        "2026-05-08T08:00",
        tags={"2026-05-08T08:00": ("release", "q2")},
    )
    result = kept(timeline, keep_last=1, keep_tags=[["release", "q2"]])
    assert result == {
        "2026-05-10T08:00": ("last snapshot",),
        "2026-05-08T08:00": ("has tags release,q2",),
    }


def test_oldest_kept_while_counts_remain() -> None:
    timeline = snaps("2026-05-10T20:00", "2026-05-10T08:00")
    assert kept(timeline, keep_daily=5) == {
        "2026-05-10T20:00": ("daily snapshot",),
        "2026-05-10T08:00": ("oldest daily snapshot",),
    }


def test_a_policy_keeping_nothing_is_refused() -> None:
    timeline = snaps("2026-05-10T20:00", "2026-05-09T08:00")
    with pytest.raises(BackupError, match="keeps no snapshot of h/s; refusing"):
        retention_decisions(timeline, Retention(keep_tags=[["never"]]), NOW)


def test_groups_are_decided_apart() -> None:
    a = Candidate("a", datetime(2026, 1, 2, tzinfo=UTC), "h1", "db")
    b = Candidate("b", datetime(2026, 1, 1, tzinfo=UTC), "h1", "db")
    c = Candidate("c", datetime(2026, 1, 1, tzinfo=UTC), "h1", "files")
    d = Candidate("d", datetime(2026, 1, 1, tzinfo=UTC), "h2", "db")
    result = {
        x.snapshot.id: x.keep
        for x in retention_decisions([a, b, c, d], Retention(keep_last=1), NOW)
    }
    assert result == {"a": True, "b": False, "c": True, "d": True}


_POLICIES = st.builds(
    Retention,
    keep_last=st.one_of(st.none(), st.integers(0, 5)),
    keep_hourly=st.one_of(st.none(), st.integers(0, 5)),
    keep_daily=st.integers(1, 10),
    keep_weekly=st.one_of(st.none(), st.integers(0, 6)),
    keep_monthly=st.one_of(st.none(), st.integers(0, 12)),
    keep_yearly=st.one_of(st.none(), st.integers(0, 3)),
    keep_within=st.one_of(st.none(), st.integers(1, 40).map(lambda d: timedelta(days=d))),
    timezone=st.sampled_from(["UTC", "America/Toronto", "Australia/Sydney"]),
)
_TIMELINES = st.lists(
    st.tuples(st.integers(0, 3 * 365 * 24 * 60), st.sampled_from(["db", "files"])),
    min_size=1,
    max_size=120,
    unique_by=lambda x: x,
)


def _candidates(points: list[tuple[int, str]]) -> list[Candidate]:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    return [
        Candidate(f"{source}-{minute}", start + timedelta(minutes=minute), "h", source)
        for minute, source in points
    ]


@settings(max_examples=300, deadline=None)
@given(_TIMELINES, _POLICIES)
def test_properties(points: list[tuple[int, str]], policy: Retention) -> None:
    snapshots = _candidates(points)
    now = datetime(2027, 6, 1, tzinfo=UTC)
    decisions = retention_decisions(snapshots, policy, now)
    assert len(decisions) == len(snapshots)
    kept_ids = {d.snapshot.id for d in decisions if d.keep}
    zone = ZoneInfo(policy.timezone)
    for source in {s.source for s in snapshots}:
        group = sorted((s for s in snapshots if s.source == source), key=lambda s: s.time)
        assert group[-1].id in kept_ids  # never empties a source, never drops the newest
        for rule, period in (
            ("keep_daily", lambda t: t.date()),
            ("keep_weekly", lambda t: t.isocalendar()[:2]),
            ("keep_monthly", lambda t: (t.year, t.month)),
        ):
            count = getattr(policy, rule) or 0
            newest_per_period: dict[object, Candidate] = {}
            for snap in group:
                newest_per_period[period(snap.time.astimezone(zone))] = snap
            periods = sorted(newest_per_period, reverse=True)[:count]
            for p in periods:
                assert newest_per_period[p].id in kept_ids, (rule, p)
        if policy.keep_last:
            assert {s.id for s in group[-policy.keep_last :]} <= kept_ids
    again = retention_decisions([s for s in snapshots if s.id in kept_ids], policy, now)
    assert all(d.keep for d in again), "a second run removes more"
