"""Alertmanager intake: its webhook (version 4 JSON) opens, updates and resolves cases.

Each firing alert opens or updates the case whose fingerprint is the alert's own
fingerprint, with the severity from its `severity` label (mapped, major by default)
and the title from its annotations; a resolved alert resolves that case. When
Alertmanager truncated the group (`truncatedAlerts` > 0) that is recorded on the
cases. Malformed bodies get 400 and oversized ones 413, and nothing changes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from agents.cases.sla import BusinessCalendar, due_times, target_for
from agents.cases.store import CaseStore, Failure
from agents.config import CasesConfig
from agents.results import Severity

log = logging.getLogger("opsagent.alertmanager")

MAX_BODY = 1 << 20
PATH = "/api/v1/alertmanager"

_SEVERITIES = {
    "critical": Severity.CRITICAL,
    "page": Severity.CRITICAL,
    "major": Severity.MAJOR,
    "error": Severity.MAJOR,
    "high": Severity.MAJOR,
    "moderate": Severity.MODERATE,
    "warning": Severity.MODERATE,
    "medium": Severity.MODERATE,
    "minor": Severity.MINOR,
    "info": Severity.MINOR,
    "low": Severity.MINOR,
}


class IntakeError(ValueError):
    """The body is not an Alertmanager webhook message."""


def severity_of(labels: dict[str, str]) -> Severity:
    return _SEVERITIES.get(str(labels.get("severity", "")).lower(), Severity.MAJOR)


class AlertmanagerIntake:
    def __init__(self, store: CaseStore, config: CasesConfig) -> None:
        self.store = store
        self.config = config
        self.calendar = BusinessCalendar.from_config(config.calendar)

    def handle(self, message: Any) -> dict[str, int]:
        """Apply one webhook message; returns how many alerts opened/updated/resolved."""
        alerts = _validate(message)
        truncated = int(message.get("truncatedAlerts") or 0)
        counts = {"firing": 0, "resolved": 0}
        now = datetime.now(UTC)
        for alert in alerts:
            labels = alert.get("labels") or {}
            annotations = alert.get("annotations") or {}
            fingerprint = f"alertmanager:{alert['fingerprint']}"
            if alert["status"] == "resolved":
                case = self.store.open_case(fingerprint)
                if case is not None:
                    self.store.resolve(case.id, now, "alertmanager", "alert resolved")
                counts["resolved"] += 1
                continue
            severity = severity_of(labels)
            due = due_times(severity, now, self.calendar, target_for(self.config, severity))
            name = labels.get("alertname", "alert")
            title = annotations.get("summary") or annotations.get("description") or name
            case, _ = self.store.record_failure(
                Failure(
                    fingerprint=fingerprint,
                    title=f"{name}: {title}"[:500],
                    severity=severity,
                    source=f"alertmanager:{message.get('receiver', '')}",
                    host=str(labels.get("instance", "")),
                    at=now,
                    response_due=due.response,
                    resolution_due=due.resolution,
                )
            )
            if truncated:
                self.store.comment(
                    case.id,
                    now,
                    "alertmanager",
                    f"Alertmanager truncated {truncated} alert(s) of this group",
                )
            counts["firing"] += 1
        return counts


def intake_app(intake: AlertmanagerIntake) -> Callable[..., Iterable[bytes]]:
    """A WSGI handler for POST PATH."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST":
            return _reply(start_response, "405 Method Not Allowed", {"error": "POST only"})
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if length < 0:
            return _reply(start_response, "400 Bad Request", {"error": "bad Content-Length"})
        if length > MAX_BODY:
            # read (and drop) a bounded amount first: a client still sending when the
            # answer comes sees a broken pipe instead of the 413
            stream = environ["wsgi.input"]
            left = min(length, 4 * MAX_BODY)
            while left > 0 and (chunk := stream.read(min(left, 65536))):
                left -= len(chunk)
            return _reply(start_response, "413 Payload Too Large", {"error": "body too large"})
        try:
            message = json.loads(environ["wsgi.input"].read(length) or b"null")
            counts = intake.handle(message)
        except (ValueError, IntakeError) as exc:
            return _reply(start_response, "400 Bad Request", {"error": str(exc)[:200]})
        return _reply(start_response, "200 OK", counts)

    return app


def _validate(message: Any) -> list[dict[str, Any]]:
    if not isinstance(message, dict):
        raise IntakeError("expected a JSON object")
    if str(message.get("version")) != "4":
        raise IntakeError(f"unsupported webhook version {message.get('version')!r}")
    alerts = message.get("alerts")
    if not isinstance(alerts, list):
        raise IntakeError("alerts must be a list")
    truncated = message.get("truncatedAlerts") or 0
    if not isinstance(truncated, int) or isinstance(truncated, bool) or truncated < 0:
        raise IntakeError("truncatedAlerts must be a count")
    for alert in alerts:
        if not isinstance(alert, dict) or alert.get("status") not in ("firing", "resolved"):
            raise IntakeError("each alert needs status firing or resolved")
        if not isinstance(alert.get("fingerprint"), str) or not alert["fingerprint"]:
            raise IntakeError("each alert needs a fingerprint")
        for key in ("labels", "annotations"):
            value = alert.get(key) or {}
            if not isinstance(value, dict):
                raise IntakeError(f"{key} must be an object")
    return alerts


def _reply(start_response: Callable[..., Any], status: str, body: dict[str, Any]) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]
