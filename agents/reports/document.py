"""The report document (`opsagent-report/1`): its envelope, the shape of a case in it, and
the small formatting both reports share. docs/report-schema.json describes it whole.

All times are ISO 8601 with an offset (UTC), durations seconds, percentages 0-100,
unknown values null. `hosts`, `filters` and `period` say what the facts cover; the
repository's key fingerprint says which repository the recovery facts are about.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from agents import __version__
from agents.units import format_duration

SCHEMA = "opsagent-report/1"
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def without_surrogates(value: Any) -> Any:
    """The value with every lone surrogate (a non-UTF-8 file name's byte, decoded with
    surrogateescape) as U+FFFD, so the document can be written as UTF-8 and signed."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {without_surrogates(k): without_surrogates(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [without_surrogates(v) for v in value]
    return value


TITLES = {"recovery": "Recovery evidence", "sla": "Service levels"}


def iso(moment: datetime | None) -> str | None:
    """A time as the document writes it: ISO 8601 in UTC, or null."""
    return None if moment is None else moment.astimezone(UTC).isoformat()


def envelope(
    kind: str,
    *,
    generated_at: datetime,
    since: datetime,
    until: datetime,
    hosts: list[str],
    repository: dict[str, Any] | None,
    filters: dict[str, Any],
    headline: str,
    empty: bool,
) -> dict[str, Any]:
    """The fields every report has, in the contract's order."""
    return {
        "schema": SCHEMA,
        "kind": kind,
        "title": TITLES[kind],
        "generated_at": iso(generated_at),
        "period": {
            "since": iso(since),
            "until": iso(until),
            "days": round((until - since).total_seconds() / 86400, 3),
        },
        "hosts": sorted(set(hosts)),
        "opsagent_version": __version__,
        "repository": repository,
        "filters": {"source": None, "labels": {}, **filters},
        "headline": headline,
        "empty": empty,
        "signed": False,  # until signed (agents.reports.signing.sign)
        "signature": None,
    }


def key_fingerprint(repository_id: str, key_material: bytes) -> str:
    """`sha256:` over the repository's id and a keyed hash the master key makes of a fixed
    label: it names the repository and its key, and tells nothing of the key (only
    someone holding the key can compute it again, which is what an auditor asks for)."""
    digest = hashlib.sha256()
    digest.update(b"opsagent-report/1 key fingerprint\0")
    digest.update(repository_id.encode())
    digest.update(b"\0")
    digest.update(key_material)
    return "sha256:" + digest.hexdigest()


def repository_facts(repo: Any, url: str) -> dict[str, Any]:
    """The `repository` object of an opened repository: its URL and key fingerprint."""
    material = repo.crypto.blob_id(b"opsagent-report/1 key fingerprint")
    return {"url": url, "key_fingerprint": key_fingerprint(str(repo.info.get("id", "")), material)}


def case_as_of(case: Any, until: datetime) -> Any:
    """The case as it stood at the end of the period: a response or resolution made
    later is not in it, so a report of last month says the same when made again. (A
    case reopened after the period keeps its new clocks: the store keeps no older.)"""
    acknowledged = case.acknowledged_at if _before(case.acknowledged_at, until) else None
    resolved = case.resolved_at if _before(case.resolved_at, until) else None
    if (acknowledged, resolved) == (case.acknowledged_at, case.resolved_at):
        return case
    status = "resolved" if resolved else "acknowledged" if acknowledged else "open"
    return dataclasses.replace(
        case,
        acknowledged_at=acknowledged,
        acknowledged_by=case.acknowledged_by if acknowledged else None,
        resolved_at=resolved,
        status=status,
    )


def _before(moment: datetime | None, until: datetime) -> bool:
    return moment is not None and moment < until


def case_facts(case: Any, now: datetime) -> dict[str, Any]:
    """A case as a report shows it: its clocks, how long it took to respond and to
    resolve (wall clock, from its opening), and whether each target was met by `now`
    (the end of the period; null while the clock still runs then)."""
    responded, resolved = case.acknowledged_at, case.resolved_at
    return {
        "id": case.id,
        "title": case.title,
        "severity": case.severity.value,
        "status": case.status,
        "host": case.host,
        "opened": iso(case.first_seen),
        "responded_at": iso(responded),
        "resolved_at": iso(resolved),
        "response_due": iso(case.response_due),
        "resolution_due": iso(case.resolution_due),
        "response_seconds": _seconds(case.first_seen, responded),
        "resolution_seconds": _seconds(case.first_seen, resolved),
        "response_met": _met(responded, case.response_due, now),
        "resolution_met": _met(resolved, case.resolution_due, now),
    }


def missed_targets(case: Any, now: datetime) -> set[str]:
    """The targets (`response`, `resolution`) a case missed by its own times at `now`."""
    facts = case_facts(case, now)
    return {t for t in ("response", "resolution") if facts[f"{t}_met"] is False}


def _seconds(start: datetime, end: datetime | None) -> float | None:
    return None if end is None else round((end - start).total_seconds(), 1)


def _met(done: datetime | None, due: datetime, now: datetime) -> bool | None:
    """Met (done by the due time), missed (the due time passed before `now`, the end of
    the period, without it), or null: still running at `now`, so a miss after the
    period belongs to a later period's report."""
    if done is not None and done <= due:
        return True
    return False if due < now else None


def quantile(values: list[float], q: float) -> float | None:
    """Nearest-rank quantile (as `opsagent cases sla` computes it)."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(1, math.ceil(q * len(ordered))) - 1], 1)


def percent_text(value: float) -> str:
    """`100 %`, `87.5 %`: a percentage as the headline writes it."""
    return f"{value:g} %" if value == round(value, 1) else f"{value:.1f} %"


def duration_text(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(timedelta(seconds=seconds))


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"
