"""Recovery evidence: what the restore tests of a period prove, source by source.

Read from what the agent already keeps: the restore-test runs of the state database
(`runs`, kind `restore_test`: steps, RTO, RPO, each source's snapshot and outcome), the
rolling pack verification (`pack_checks`: when each pack was last re-read) against the
repository's packs, and the case each failed run opened (same fingerprint, opened at
the run or before it while still open at it) with its clocks.

A run tests several sources; each source's row of a run carries the steps that name it
("docs snapshot ab12cd34: ...") and the run-wide ones (data, commands, rto, rpo, start).
RTO is the run's: the wall time from the first byte restored to the last verification.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from agents.reports.document import (
    case_as_of,
    case_facts,
    duration_text,
    envelope,
    iso,
    percent_text,
    plural,
)
from agents.results import CheckResult, fingerprint

RUN_WIDE_STEPS = ("data", "commands", "rto", "rpo", "start", "run")


@dataclass
class RecoveryInputs:
    """Everything a recovery report is built from, gathered by the caller."""

    runs: list[CheckResult]  # restore_test runs that started in the period
    cases: list[Any]  # cases (agents.cases.store.Case) that may belong to the runs
    since: datetime
    until: datetime
    packs: dict[str, int] | None = None  # the repository's packs -> bytes; None: unknown
    pack_checks: dict[str, datetime] = field(default_factory=dict)
    full_every: timedelta = timedelta(days=7)  # restore_test.verify.data.full_every
    daily_budget: int | None = None  # bytes re-read per run (daily); None: no cap
    rto_target: float | None = None  # restore_test.max_rto, seconds
    rpo_target: float | None = None
    source_kinds: dict[str, str] = field(default_factory=dict)
    source: str | None = None  # only this source
    hosts: list[str] = field(default_factory=list)  # when no run names one
    repository: dict[str, Any] | None = None
    generated_at: datetime | None = None
    history_from: datetime | None = None  # the oldest run the state keeps (StateDB.first_run_at)


def build_recovery(inputs: RecoveryInputs) -> dict[str, Any]:
    """The recovery report document (unsigned)."""
    case_of = _case_finder(inputs.cases, inputs.until)  # targets judged at the period's end
    sources: dict[tuple[str, str], dict[str, Any]] = {}
    failures: list[dict[str, Any]] = []
    rto_series: list[dict[str, Any]] = []
    for run in sorted(inputs.runs, key=lambda r: r.started_at):
        case = case_of(run) if not run.ok else None
        try:
            tested, made, point = _read_run(run, inputs, case)
        except (AttributeError, TypeError, ValueError, KeyError, OverflowError) as exc:
            # a record of the wrong shape: listed, never a crash and never a pass
            why = f"the run's record in the state database is unreadable ({type(exc).__name__})"
            failures.append(_failure(run, None, why, case or case_of(run)))
            continue
        if not tested and not run.ok and inputs.source is None:  # failed before any source
            failures.append(_failure(run, None, run.summary, case))
        for name, row, summary in made:
            key = (run.host, name)
            entry = sources.get(key) or sources.setdefault(key, _source(run.host, name, inputs))
            entry["tests"] += 1
            entry["passed" if row["ok"] else "failed"] += 1
            entry["runs"].append(row)
            if row["rto_seconds"] is not None and _restored(row):
                worst = entry["worst_rto_seconds"]
                entry["worst_rto_seconds"] = max(worst or 0.0, row["rto_seconds"])
            if not row["ok"]:
                failures.append(_failure(run, name, summary, case))
        if point is not None:
            rto_series.append(point)
    rows = sorted(sources.values(), key=lambda s: (s["host"], s["name"]))
    coverage = _coverage(inputs)
    empty = not rows and not failures
    hosts = sorted({r.host for r in inputs.runs}) or inputs.hosts
    doc = envelope(
        "recovery",
        generated_at=inputs.generated_at or inputs.until,
        since=inputs.since,
        until=inputs.until,
        hosts=hosts,
        repository=inputs.repository,
        filters={"source": inputs.source},
        headline=headline(rows, failures, coverage, inputs),
        empty=empty,
    )
    doc["recovery"] = {
        "sources": rows,
        "coverage": coverage,
        "rto_series": rto_series,
        "failures": failures,
        "history_from": iso(inputs.history_from),
    }
    return doc


def _read_run(
    run: CheckResult, inputs: RecoveryInputs, case: dict[str, Any] | None
) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any], str]], dict[str, Any] | None]:
    """(sources the run tested, (name, row, failure summary) of each one reported, its RTO
    point or None); raises on a record of the wrong shape before anything is counted."""
    details = run.details
    tested = details.get("sources") or {}
    names = [n for n in tested if inputs.source in (None, n)]
    made = [
        (name, _source_run(run, name, tested[name], inputs, case), "") for name in sorted(names)
    ]
    made = [(n, row, "" if row["ok"] else _source_summary(run, tested[n])) for n, row, _ in made]
    rto = _seconds(details.get("rto_seconds"))
    point = None
    if names and rto is not None:
        point = {
            "at": iso(run.started_at),
            "source": ",".join(sorted(names)),
            "rto_seconds": rto,
            "target_seconds": inputs.rto_target,
        }
    return tested, made, point


def _source(host: str, name: str, inputs: RecoveryInputs) -> dict[str, Any]:
    """A source's row before its runs are counted in."""
    return {
        "name": name,
        "kind": inputs.source_kinds.get(name),
        "host": host,
        "tests": 0,
        "passed": 0,
        "failed": 0,
        "worst_rto_seconds": None,
        "rto_target_seconds": inputs.rto_target,
        "rpo_target_seconds": inputs.rpo_target,
        "runs": [],
    }


def _source_run(
    run: CheckResult,
    name: str,
    outcome: dict[str, Any],
    inputs: RecoveryInputs,
    case: dict[str, Any] | None,
) -> dict[str, Any]:
    """One source's row of one run: its snapshot, RPO, RTO, steps and what was compared."""
    details = run.details
    steps = [s for s in details.get("steps") or [] if _step_of(s, name)]
    snapshot_time = _parse(outcome.get("snapshot_time"))
    age = (run.started_at - snapshot_time).total_seconds() if snapshot_time else None
    rto = details.get("rto_seconds")
    ok = bool(outcome.get("ok")) and all(
        s.get("ok") for s in steps if s.get("name") in RUN_WIDE_STEPS
    )
    return {
        "at": iso(run.started_at),
        "host": run.host,
        "run_id": details.get("run_id"),
        "ok": ok,
        "snapshot": (outcome.get("snapshot") or "")[:8] or None,
        "snapshot_time": iso(snapshot_time),
        "snapshot_age_seconds": None if age is None else round(age, 1),
        "rpo_seconds": round(age, 1) if age is not None else details.get("rpo_seconds"),
        "rto_seconds": _seconds(rto),
        "rto_target_seconds": inputs.rto_target,
        "steps": [
            {
                "name": s.get("name"),
                "ok": bool(s.get("ok")),
                "seconds": _seconds(s.get("seconds")) or 0.0,
                "summary": s.get("summary", ""),
            }
            for s in steps
        ],
        "compared": _compared(steps),
        "case": None if ok else case,
    }


def _restored(row: dict[str, Any]) -> bool:
    """Whether the run restored and verified the source (over its RTO target or not): its
    RTO is a recovery time; a run that broke off midway measured no recovery."""
    over_target = any(s["name"] == "rto" and not s["ok"] for s in row["steps"])
    return (row["ok"] or over_target) and all(s["ok"] for s in row["steps"] if s["name"] != "rto")


def _step_of(step: dict[str, Any], name: str) -> bool:
    """Whether a step belongs to source `name`'s row: it names the source, or is run-wide."""
    return str(step.get("summary", "")).startswith(f"{name} snapshot ") or (
        step.get("name") in RUN_WIDE_STEPS
    )


def _compared(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """What the verification compared: files re-chunked, tables counted, the schema's
    fingerprint, SQL assertions that held (null where the source has no such step)."""

    def total(step_name: str, key: str) -> int | None:
        found = [s for s in steps if s.get("name") == step_name and s.get("ok")]
        if not found:
            return None
        return sum(int((s.get("details") or {}).get(key) or 0) for s in found)

    prints = [
        (s.get("details") or {}).get("schema_fingerprint")
        for s in steps
        if s.get("name") == "database"
    ]
    return {
        "files_rechunked": total("files", "files"),
        "tables_counted": total("database", "tables"),
        "schema_fingerprint": next((p for p in prints if p), None),
        "sql_assertions": total("sql", "assertions"),
    }


def _source_summary(run: CheckResult, outcome: dict[str, Any]) -> str:
    if not outcome.get("ok"):
        return str(outcome.get("summary") or run.summary)
    return run.summary  # the source restored but a run-wide step (RTO, data) failed


def _failure(
    run: CheckResult, source: str | None, summary: str, case: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        "at": iso(run.started_at),
        "source": source,
        "host": run.host,
        "run_id": run.details.get("run_id"),
        "summary": summary,
        "case": case,
    }


def _case_finder(cases: Iterable[Any], now: datetime) -> Any:
    """A failed run -> its case's facts: the case of the run's fingerprint opened at or
    before the run and not resolved before it (the one the run opened or counted on)."""
    by_print: dict[str, list[Any]] = {}
    for case in cases:
        by_print.setdefault(case.fingerprint, []).append(case)
    for found in by_print.values():
        found.sort(key=lambda c: c.first_seen)
    slack = timedelta(seconds=1)

    def case_of(run: CheckResult) -> dict[str, Any] | None:
        mine = by_print.get(fingerprint(run.host, run.kind, run.name), [])
        for case in reversed(mine):
            if case.first_seen <= run.started_at + slack and (
                case.resolved_at is None or case.resolved_at >= run.started_at
            ):
                return case_facts(case_as_of(case, now), now)  # as it stood then
        return None

    return case_of


def _coverage(inputs: RecoveryInputs) -> dict[str, Any]:
    """The share of the repository's packs re-read within the verification window at the
    end of the period, each day's share, and the days the budget needs to read the rest.

    The state keeps when each pack was last read, so a day's share counts packs whose
    last read falls in that day's window: a lower bound for days before the last read."""
    window = inputs.full_every
    days_window = round(window.total_seconds() / 86400, 3)
    if inputs.packs is None:
        return {
            "packs_total": None,
            "packs_read_in_period": None,
            "percent": None,
            "window_days": days_window,
            "days_to_full": None,
            "series": [],
        }
    packs = inputs.packs
    read_at = [inputs.pack_checks.get(p) for p in packs]
    fresh = [p for p, at in zip(packs, read_at, strict=True) if _within(at, inputs.until, window)]
    total = len(packs)
    percent = round(100.0 * len(fresh) / total, 1) if total else 100.0
    fresh_set = set(fresh)
    stale_bytes = sum(size for p, size in packs.items() if p not in fresh_set)
    if stale_bytes == 0 and len(fresh) == total:
        days_to_full: float | None = 0.0
    elif inputs.daily_budget:
        days_to_full = float(-(-stale_bytes // inputs.daily_budget))
    else:
        days_to_full = 1.0  # no budget: the next daily run reads every stale pack
    series = []
    times = sorted(at for at in read_at if at is not None)  # counted by bisection per day
    day = inputs.since.astimezone(UTC).date()
    last = (inputs.until - timedelta(microseconds=1)).astimezone(UTC).date()
    while day <= last:
        midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
        end = min(midnight + timedelta(days=1), inputs.until)
        count = bisect_right(times, end) - bisect_right(times, end - window)
        series.append(
            {
                "date": day.isoformat(),
                "percent": round(100.0 * count / total, 1) if total else 100.0,
            }
        )
        day += timedelta(days=1)
    return {
        "packs_total": total,
        "packs_read_in_period": len(fresh),
        "percent": percent,
        "window_days": days_window,
        "days_to_full": days_to_full,
        "series": series,
    }


def _within(at: datetime | None, end: datetime, window: timedelta) -> bool:
    return at is not None and end - window < at <= end


def headline(
    rows: list[dict[str, Any]],
    failures: list[dict[str, Any]],
    coverage: dict[str, Any],
    inputs: RecoveryInputs,
) -> str:
    """The report in one sentence, as the issue's example: counts, failures and their
    cases, coverage, worst RTO against its target."""
    period = f"{inputs.since.date().isoformat()} to {inputs.until.date().isoformat()}"
    scope = f" of source {inputs.source}" if inputs.source else ""
    if not rows and not failures:
        kept = inputs.history_from
        note = (
            f" (history kept from {kept.date().isoformat()})"
            if kept and kept > inputs.since
            else ""
        )
        return f"No restore tests{scope} in the period {period}{note}"
    tests = sum(r["tests"] for r in rows)
    passed = sum(r["passed"] for r in rows)
    parts = [
        f"{plural(len(rows), 'source')}, {plural(tests, 'restore test')}, {passed} passed, "
        + _failures_text(failures)
    ]
    if coverage["percent"] is not None:
        days = coverage["window_days"]
        parts.append(
            f"{percent_text(coverage['percent'])} of packs re-read in the last {days:g} days"
        )
    elif inputs.repository is not None:
        parts.append("pack coverage unknown (the repository could not be read)")
    worst = max((r["worst_rto_seconds"] for r in rows if r["worst_rto_seconds"]), default=None)
    if worst is not None:
        target = inputs.rto_target
        parts.append(
            f"worst RTO {duration_text(worst)}"
            + (f" (target {duration_text(target)})" if target else " (no target set)")
        )
    kept = inputs.history_from
    if kept is not None and kept > inputs.since:
        parts.append(f"history kept from {kept.date().isoformat()}")
    return "; ".join(parts)


def _failures_text(failures: list[dict[str, Any]]) -> str:
    """`no failures`, `2 failures both resolved within target`, or the mix."""
    count = len(failures)
    if not count:
        return "no failures"
    kinds = {"resolved within target": 0, "resolved late": 0, "open": 0, "without a case": 0}
    for failure in failures:
        case = failure["case"]
        if case is None:
            kinds["without a case"] += 1
        elif case["resolved_at"] is None:
            kinds["open"] += 1
        elif case["resolution_met"]:
            kinds["resolved within target"] += 1
        else:
            kinds["resolved late"] += 1
    noun = plural(count, "failure")
    if kinds["resolved within target"] == count:
        every = {1: "", 2: " both"}.get(count, " all")
        return f"{noun}{every} resolved within target"
    mix = ", ".join(f"{n} {what}" for what, n in kinds.items() if n)
    return f"{noun} ({mix})"


_LONGEST = timedelta.max.total_seconds()  # beyond it no duration can be written


def _seconds(value: Any) -> float | None:
    """A recorded duration as the document holds it: a finite number, else unknown (a
    NaN or an infinity is no figure, and no JSON either; nor is a time longer than any
    duration)."""
    try:
        seconds = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return seconds if math.isfinite(seconds) and abs(seconds) < _LONGEST else None


def _parse(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if text else None
    except (TypeError, ValueError):
        return None
