"""One recovery report for a fleet: each host's own report (as `opsagent report recovery
--json` printed it on the host) merged, with one `per_host` row each. A host that did
not answer, answered something that is not a report, or whose signature does not hold
is a row with its error; the others still make the report."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from agents.reports.document import SCHEMA, envelope, iso
from agents.reports.recovery import RecoveryInputs, headline
from agents.reports.signing import SignatureInvalid, verify


def merge_recovery(
    answers: list[tuple[str, Any, str | None]],
    since: datetime,
    until: datetime,
    generated_at: datetime,
    source: str | None = None,
) -> dict[str, Any]:
    """(host, its report or None, its error or None) of every host -> the fleet's report."""
    per_host: list[dict[str, Any]] = []
    sources: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    rto_series: list[dict[str, Any]] = []
    coverages: list[dict[str, Any]] = []
    repositories: list[Any] = []
    kept: list[str] = []  # each host's oldest kept run: the latest bounds the fleet's facts
    names = {host for host, _, _ in answers}
    claimed: dict[str, str] = {}  # host a merged report names -> the inventory host it came from
    for host, doc, error in answers:
        key_id = None
        if error is None:
            error, key_id = _check(doc, names - {host}, (iso(since), iso(until)), source)
        if error is None:
            twice = sorted(h for h in doc.get("hosts") or [] if h in claimed)
            if twice:  # two inventory entries reaching one agent: its tests once only
                error = (
                    f"the host answered with the report of {twice[0]}, as {claimed[twice[0]]} did"
                )
        if error is not None:
            per_host.append(_row(host, False, error))
            continue
        try:
            row = _host_row(host, doc, key_id, since, until, source)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            # e.g. another opsagent version's document: a row, not a crash of the fleet's
            why = f"{type(exc).__name__}: {exc}"[:200]
            per_host.append(_row(host, False, f"the host's report is not readable ({why})"))
            continue
        rec = doc["recovery"]
        sources += rec["sources"]
        failures += rec["failures"]
        rto_series += [{**p, "host": host} for p in rec["rto_series"]]
        coverages.append(rec["coverage"])
        if rec.get("history_from"):
            kept.append(rec["history_from"])
        repositories.append(doc.get("repository"))
        per_host.append(row)
        claimed.update(dict.fromkeys(doc.get("hosts") or [], host))
    sources.sort(key=lambda s: (s["host"], s["name"]))
    failures.sort(key=lambda f: (f["at"], f["host"]))
    rto_series.sort(key=lambda p: (p["at"], p["host"]))
    coverage = _coverage(coverages)
    targets = {s["rto_target_seconds"] for s in sources}
    inputs = RecoveryInputs(
        runs=[],
        cases=[],
        since=since,
        until=until,
        rto_target=targets.pop() if len(targets) == 1 else None,
        source=source,
    )
    answered = [r for r in per_host if r["ok"]]
    text = headline(sources, failures, coverage, inputs)
    down = len(per_host) - len(answered)
    prefix = f"{len(per_host)} hosts" + (f" ({down} did not answer)" if down else "")
    distinct = {repr(r) for r in repositories}
    doc = envelope(
        "recovery",
        generated_at=generated_at,
        since=since,
        until=until,
        hosts=[r["host"] for r in per_host],
        repository=repositories[0] if len(distinct) == 1 else None,
        filters={"source": source},
        headline=f"{prefix}: {text}",
        empty=not sources and not failures,
    )
    doc["recovery"] = {
        "sources": sources,
        "coverage": coverage,
        "rto_series": rto_series,
        "failures": failures,
        "history_from": max(kept) if kept else None,
    }
    doc["per_host"] = per_host
    return doc


def _host_row(
    host: str,
    doc: dict[str, Any],
    key_id: str | None,
    since: datetime,
    until: datetime,
    source: str | None,
) -> dict[str, Any]:
    """One host's per_host row; raises when its report lacks what the merge reads (the
    merge's own steps are tried on it alone first)."""
    rec = doc["recovery"]
    mine, failed, points = rec["sources"], rec["failures"], rec["rto_series"]
    for item, keys in (
        [(s, ("host", "name")) for s in mine]
        + [(f, ("at", "host")) for f in failed]
        + [(p, ("at",)) for p in points]
    ):
        if not all(isinstance(item[k], str) for k in keys):
            raise TypeError(f"{', '.join(keys)} must be text")
    coverage = _coverage([rec["coverage"]])
    headline(mine, failed, coverage, RecoveryInputs([], [], since, until, source=source))
    worst = [s["worst_rto_seconds"] for s in mine if s["worst_rto_seconds"] is not None]
    return {
        **_row(host, True, None),
        "sources": len(mine),
        "tests": sum(int(s["tests"]) for s in mine),
        "passed": sum(int(s["passed"]) for s in mine),
        "failed": sum(int(s["failed"]) for s in mine),
        "coverage_percent": rec["coverage"]["percent"],
        "worst_rto_seconds": max(worst) if worst else None,
        "key_id": key_id,
        "repository": doc.get("repository"),
    }


def _check(
    doc: Any, others: set[str], asked: tuple[str | None, str | None], source: str | None
) -> tuple[str | None, str | None]:
    """(error, key id) of one host's answer: a recovery report of the period and source
    asked for, naming no other host of the fleet, its signature holding. A signed report
    replayed from another period, or another host's report passed off as this one's,
    verifies; only its contents tell."""
    if not isinstance(doc, dict) or doc.get("kind") != "recovery" or "recovery" not in doc:
        return "the host did not answer with a recovery report", None
    if doc.get("schema") != SCHEMA:
        return f"the host's report is {doc.get('schema')!r}, not {SCHEMA} (another version)", None
    theirs = sorted(others.intersection(doc.get("hosts") or []))
    if theirs:
        return f"the host answered with the report of {', '.join(theirs)}", None
    period = doc.get("period") or {}
    if (period.get("since"), period.get("until")) != asked:
        return (
            f"the host's report covers {period.get('since')} to {period.get('until')},"
            " not the period asked for"
        ), None
    if (doc.get("filters") or {}).get("source") != source:
        return "the host's report is not of the source asked for", None
    if doc.get("signature") is None:
        return None, None  # the host has no signing key: unsigned, and the row says so
    try:
        return None, verify(doc)
    except SignatureInvalid as exc:
        return f"the host's report does not verify: {exc}", None


def _row(host: str, ok: bool, error: str | None) -> dict[str, Any]:
    return {
        "host": host,
        "ok": ok,
        "error": error,
        "sources": None,
        "tests": None,
        "passed": None,
        "failed": None,
        "coverage_percent": None,
        "worst_rto_seconds": None,
        "key_id": None,
    }


def _coverage(coverages: list[dict[str, Any]]) -> dict[str, Any]:
    """The hosts' coverage together: packs summed, each day's share weighted by packs."""
    known = [c for c in coverages if c.get("packs_total") is not None]
    total = sum(c["packs_total"] for c in known)
    read = sum(c["packs_read_in_period"] for c in known)
    days = [c["days_to_full"] for c in known if c["days_to_full"] is not None]
    by_day: dict[str, float] = {}
    for c in known:
        for point in c["series"]:
            by_day[point["date"]] = by_day.get(point["date"], 0.0) + (
                point["percent"] * c["packs_total"]
            )
    return {
        "packs_total": total if known else None,
        "packs_read_in_period": read if known else None,
        "percent": (round(100.0 * read / total, 1) if total else 100.0) if known else None,
        "window_days": max((c["window_days"] for c in coverages), default=0),
        "days_to_full": max(days) if days else None,
        "series": [
            {"date": d, "percent": round(v / total, 1) if total else 100.0}
            for d, v in sorted(by_day.items())
        ],
    }
