"""Keep policies: which snapshots to keep, with every reason, in restic's `forget` semantics.

Snapshots are grouped by host and source; each group is decided on its own, newest
first. The reference time is the newest snapshot that is not in the future.

- `keep_last N`: the N newest snapshots.
- `keep_hourly / daily / weekly / monthly / yearly N`: walking newest to oldest, a
  snapshot is kept whenever its period (calendar hour, day, ISO week Monday-Sunday,
  month, year, in the policy's time zone) differs from the period of the last
  snapshot kept *by that rule*, until the rule has kept N. Each rule counts on its
  own, so `keep_daily 7` + `keep_weekly 5` gives 7 dailies and the weeklies reach
  further back. Only periods that contain a snapshot count. When a rule still has
  count left at the oldest snapshot, that snapshot is kept too ("oldest daily"),
  which keeps the longest history the policy allows.
- `keep_within D`: every snapshot newer than the reference time minus D (calendar
  arithmetic: `7d` is seven calendar days in the time zone, across DST changes).
  Snapshots in the future are therefore never removed by it.
- `keep_within_hourly / daily / ... D`: the newest snapshot of each period within D.
- `keep_tags [[a, b], [c]]`: snapshots carrying all tags of one list, outside every count.

Rules are OR-ed: a snapshot kept by several rules is kept once, with all reasons.
For safety, the newest snapshot of a group is always kept, and a policy that would
keep nothing of a group is refused.

Worked example, `keep_daily: 2, keep_weekly: 2`, snapshots (newest first):
Wed 2026-03-11 18:00, Wed 2026-03-11 02:00, Tue 2026-03-10 02:00, Sun 2026-03-08
02:00, Sat 2026-03-07 02:00, Sun 2026-03-01 02:00.
daily keeps Wed 18:00 (day 11) and Tue (day 10): count spent. weekly keeps Wed
18:00 (ISO week 11) and Sun 03-08 (week 10): count spent. Wed 02:00, Sat 03-07 and
Sun 03-01 are removed. With `keep_weekly: 3`, Sun 03-01 (week 9) would be kept too;
with `keep_weekly: 4` the rule would still have count left at the oldest snapshot,
which it already keeps as week 9.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from agents.backup.errors import BackupError
from agents.config import Retention

Bucket = Callable[[datetime, int], object]

_BUCKETS: list[tuple[str, str, Bucket]] = [
    ("keep_last", "last snapshot", lambda t, nr: nr),
    ("keep_hourly", "hourly snapshot", lambda t, nr: (t.year, t.month, t.day, t.hour)),
    ("keep_daily", "daily snapshot", lambda t, nr: (t.year, t.month, t.day)),
    ("keep_weekly", "weekly snapshot", lambda t, nr: t.isocalendar()[:2]),
    ("keep_monthly", "monthly snapshot", lambda t, nr: (t.year, t.month)),
    ("keep_yearly", "yearly snapshot", lambda t, nr: t.year),
]
_WITHIN = {
    "keep_within_hourly": "keep_hourly",
    "keep_within_daily": "keep_daily",
    "keep_within_weekly": "keep_weekly",
    "keep_within_monthly": "keep_monthly",
    "keep_within_yearly": "keep_yearly",
}


@dataclass(frozen=True)
class Candidate:
    """What retention needs of a snapshot."""

    id: str
    time: datetime
    host: str
    source: str
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decision:
    snapshot: Candidate
    keep: bool
    reasons: tuple[str, ...]


def retention_decisions(
    snapshots: Sequence[Candidate], policy: Retention, now: datetime
) -> list[Decision]:
    """Keep or remove every snapshot, grouped by host and source; newest first per group."""
    groups: dict[tuple[str, str], list[Candidate]] = defaultdict(list)
    for snap in snapshots:
        groups[(snap.host, snap.source)].append(snap)
    decisions: list[Decision] = []
    for (host, source), group in sorted(groups.items()):
        decided = _decide_group(group, policy, now)
        if not any(d.keep for d in decided if "newest snapshot (safety)" not in d.reasons):
            raise BackupError(
                f"the retention policy keeps no snapshot of {host}/{source}; refusing to forget"
            )
        decisions.extend(decided)
    return decisions


def _decide_group(group: list[Candidate], policy: Retention, now: datetime) -> list[Decision]:
    zone = ZoneInfo(policy.timezone)
    ordered = sorted(group, key=lambda s: (s.time, s.id), reverse=True)
    local = [s.time.astimezone(zone) for s in ordered]
    past = [t for t, s in zip(local, ordered, strict=True) if s.time <= now]
    latest = past[0] if past else local[-1]
    counts = {name: getattr(policy, name) for name, _, _ in _BUCKETS if getattr(policy, name)}
    last_seen: dict[str, object] = {}
    within_last: dict[str, object] = {}
    decisions = []
    oldest = len(ordered) - 1
    for nr, (snap, when) in enumerate(zip(ordered, local, strict=True)):
        reasons: list[str] = []
        for tags in policy.keep_tags:
            if tags and set(tags) <= set(snap.tags):
                reasons.append(f"has tags {','.join(tags)}")
        if policy.keep_within is not None and when > _back(latest, policy.keep_within):
            reasons.append(f"within {_fmt(policy.keep_within)}")
        for name, reason, bucket in _BUCKETS:
            if counts.get(name, 0) <= 0:
                continue
            value = bucket(when, nr)
            is_new = value != last_seen.get(name, _UNSET)
            if is_new or nr == oldest:
                counts[name] -= 1
                last_seen[name] = value
                reasons.append(reason if is_new else f"oldest {reason}")
        for within_name, bucket_name in _WITHIN.items():
            span = getattr(policy, within_name)
            if span is None or when <= _back(latest, span):
                continue
            bucket = next(b for n, _, b in _BUCKETS if n == bucket_name)
            value = bucket(when, nr)
            if value != within_last.get(within_name, _UNSET) or nr == oldest:
                within_last[within_name] = value
                period = bucket_name.removeprefix("keep_")
                reasons.append(f"{period} within {_fmt(span)}")
        if nr == 0 and not reasons:
            reasons.append("newest snapshot (safety)")
        decisions.append(Decision(snap, bool(reasons), tuple(dict.fromkeys(reasons))))
    return decisions


class _Unset:
    pass


_UNSET = _Unset()


def _back(latest: datetime, span: timedelta) -> datetime:
    """latest minus span, with whole days as calendar days in latest's time zone."""
    days = span.days
    rest = span - timedelta(days=days)
    wall = latest - timedelta(days=days)  # aware arithmetic keeps the wall clock
    return (wall.astimezone(ZoneInfo("UTC")) - rest).astimezone(latest.tzinfo)


def _fmt(span: timedelta) -> str:
    from agents.units import format_duration

    return format_duration(span)
