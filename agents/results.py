"""The one record every check and job emits, and the guard that makes jobs never raise.

A `CheckResult` says what happened; metrics, cases, the state database, `--json`
output and remote (SSH) runs all consume this same record, so it crosses every room.
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    OK = "ok"
    FAILED = "failed"
    ERROR = "error"


class Severity(StrEnum):
    CRITICAL = "critical"
    MAJOR = "major"
    MODERATE = "moderate"
    MINOR = "minor"

    @property
    def rank(self) -> int:
        """Higher is worse: critical 3 ... minor 0."""
        return {"critical": 3, "major": 2, "moderate": 1, "minor": 0}[self.value]


@dataclass(frozen=True)
class CheckResult:
    """What one run of a check or job found."""

    name: str
    kind: str
    host: str
    status: Status
    summary: str
    severity: Severity = Severity.MAJOR
    details: Mapping[str, Any] = field(default_factory=dict)
    duration_seconds: float = 0.0
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    fingerprint: str = ""

    def __post_init__(self) -> None:
        if not self.fingerprint:
            object.__setattr__(self, "fingerprint", fingerprint(self.host, self.kind, self.name))

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def with_status(self, status: Status, summary: str) -> CheckResult:
        return replace(self, status=status, summary=summary)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "host": self.host,
            "status": self.status.value,
            "severity": self.severity.value,
            "summary": self.summary,
            "details": _jsonable(self.details),
            "duration_seconds": round(self.duration_seconds, 6),
            "started_at": self.started_at.isoformat(),
            "fingerprint": self.fingerprint,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CheckResult:
        return cls(
            name=str(data["name"]),
            kind=str(data["kind"]),
            host=str(data["host"]),
            status=Status(data["status"]),
            severity=Severity(data.get("severity", "major")),
            summary=str(data.get("summary", "")),
            details=dict(data.get("details") or {}),
            duration_seconds=float(data.get("duration_seconds", 0.0)),
            started_at=datetime.fromisoformat(data["started_at"]),
            fingerprint=str(data.get("fingerprint", "")),
        )


def fingerprint(host: str, kind: str, name: str) -> str:
    """Stable identity of a failure source: the same check on the same host, always."""
    return hashlib.sha256(f"{host}\0{kind}\0{name}".encode()).hexdigest()[:24]


def run_guarded(
    name: str,
    kind: str,
    host: str,
    severity: Severity,
    body: Callable[[], CheckResult | tuple[Status, str, Mapping[str, Any]]],
) -> CheckResult:
    """Run a check or job body; never raises: an exception becomes an `error` result.

    The body returns a full CheckResult, or (status, summary, details) for the guard
    to wrap with timing.
    """
    started_at = datetime.now(UTC)
    start = time.monotonic()
    try:
        outcome = body()
    except Exception as exc:  # jobs never raise past their runner: the result says it
        return CheckResult(
            name=name,
            kind=kind,
            host=host,
            status=Status.ERROR,
            severity=severity,
            summary=one_line(exc),
            details={"exception": type(exc).__name__, "where": _where(exc)},
            duration_seconds=time.monotonic() - start,
            started_at=started_at,
        )
    duration = time.monotonic() - start
    if isinstance(outcome, CheckResult):
        return replace(outcome, duration_seconds=outcome.duration_seconds or duration)
    status, summary, details = outcome
    return CheckResult(
        name=name,
        kind=kind,
        host=host,
        status=status,
        severity=severity,
        summary=summary,
        details=dict(details),
        duration_seconds=duration,
        started_at=started_at,
    )


def one_line(exc: BaseException) -> str:
    """An exception as one line for people: its message, or its type when it has none."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    return f"{last.filename.rsplit('/', 1)[-1]}:{last.lineno}"


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
