"""Alertmanager intake: its webhook (version 4 JSON) opens, updates and resolves cases.

Each firing alert opens or updates the case whose fingerprint is the alert's own
fingerprint, with the severity from its `severity` label (mapped, major by default),
the title from its annotations and the host from its `instance` label (the agent's own
host without one); an alert firing again within `cases.reopen_within` of its case's
resolution reopens that case. A resolved alert resolves the case. When Alertmanager
truncated the group (`truncatedAlerts` > 0) that is recorded on the cases.

A message is checked whole before anything is recorded: a malformed body, or any
malformed alert in it, gets 400 and changes nothing (Alertmanager does not retry 4xx);
an oversized one 413. A case store that cannot be reached gets 503, which Alertmanager
retries.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agents.cases.sla import BusinessCalendar, due_times, target_for
from agents.cases.store import CaseStore, CaseStoreError, Failure
from agents.config import CasesConfig
from agents.results import Severity

log = logging.getLogger("opsagent.alertmanager")

MAX_BODY = 1 << 20
PATH = "/api/v1/alertmanager"
MAX_FINGERPRINT = 200  # Alertmanager's are 16 hex digits; the store indexes them
MAX_COUNT = 2**31 - 1

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


def store_unavailable(exc: BaseException) -> bool:
    """Whether `exc` is what a store that is down, restarting or out of reach raises: 503,
    and Alertmanager sends the message again. psycopg is looked up, not imported: only a
    store that loaded it can have raised its errors, and the agent on SQLite (most hosts)
    does not carry the driver's 11 MB."""
    if isinstance(exc, CaseStoreError | sqlite3.OperationalError):
        return True
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(
        exc, psycopg.OperationalError | psycopg.InterfaceError
    )


class IntakeError(ValueError):
    """The body is not an Alertmanager webhook message."""


@dataclass(frozen=True)
class Alert:
    """One alert of a message, checked: what the intake needs of it."""

    fingerprint: str
    firing: bool
    labels: dict[str, str]
    annotations: dict[str, str]


@dataclass(frozen=True)
class Message:
    """One webhook message, checked whole."""

    receiver: str
    truncated: int
    alerts: tuple[Alert, ...]


def severity_of(labels: dict[str, str]) -> Severity:
    """The case severity an alert's `severity` label maps to (major when unknown)."""
    return _SEVERITIES.get(labels.get("severity", "").lower(), Severity.MAJOR)


class AlertmanagerIntake:
    """Applies checked webhook messages to a case store."""

    def __init__(self, store: CaseStore, config: CasesConfig, host: str) -> None:
        self.store = store
        self.config = config
        # a case needs a host (PagerDuty refuses an empty `source`): the agent's own
        # stands in for alerts without an `instance` label
        self.host = host.strip()
        if not self.host:
            raise ValueError("the intake needs the agent's host name")
        self.calendar = BusinessCalendar.from_config(config.calendar)

    def handle(self, message: Any) -> dict[str, int]:
        """Check a decoded message whole, then apply it; counts firing and resolved alerts."""
        checked = parse_message(message)
        counts = {"firing": 0, "resolved": 0}
        now = datetime.now(UTC)
        with self.store.batch():  # the whole message, or (on a store error) none of it
            for alert in checked.alerts:
                if alert.firing:
                    self._fire(checked, alert, now)
                    counts["firing"] += 1
                else:
                    self._resolve(alert, now)
                    counts["resolved"] += 1
        return counts

    def _fire(self, message: Message, alert: Alert, now: datetime) -> None:
        fingerprint = f"alertmanager:{alert.fingerprint}"
        since = now - self.config.reopen_within
        case = self.store.reopen_recent(fingerprint, since, now)
        if case is None:
            severity = severity_of(alert.labels)
            due = due_times(severity, now, self.calendar, target_for(self.config, severity))
            name = alert.labels.get("alertname") or "alert"
            text = alert.annotations.get("summary") or alert.annotations.get("description")
            case, _ = self.store.record_failure(
                Failure(
                    fingerprint=fingerprint,
                    title=f"{name}: {text or name}"[:500],
                    severity=severity,
                    source=f"alertmanager:{message.receiver}",
                    host=alert.labels.get("instance", "").strip() or self.host,
                    at=now,
                    response_due=due.response,
                    resolution_due=due.resolution,
                )
            )
        if message.truncated:
            note = f"Alertmanager truncated {message.truncated} alert(s) of this group"
            self.store.comment(case.id, now, "alertmanager", note)

    def _resolve(self, alert: Alert, now: datetime) -> None:
        fingerprint = f"alertmanager:{alert.fingerprint}"
        case = self.store.open_case(fingerprint)
        if case is None:
            return
        try:
            self.store.resolve(case.id, now, "alertmanager", "alert resolved")
        except CaseStoreError:
            # an agent sharing the store (or a person) resolved it first: nothing left to do
            if self.store.open_case(fingerprint) is not None:
                raise


def intake_app(intake: AlertmanagerIntake) -> Callable[..., Iterable[bytes]]:
    """A WSGI handler for POST PATH: 200, 4xx for what Alertmanager must not resend, 503."""

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
            counts = intake.handle(decode_body(environ["wsgi.input"].read(length)))
        except IntakeError as exc:
            log.info("alertmanager message refused: %s", exc)
            return _reply(start_response, "400 Bad Request", {"error": str(exc)[:200]})
        except Exception as exc:
            if not store_unavailable(exc):
                raise
            reason = " ".join(str(exc).split())[:200] or type(exc).__name__
            log.warning("alertmanager message not recorded (503, to be resent): %s", reason)
            unavailable = {"error": "case store unavailable"}
            return _reply(start_response, "503 Service Unavailable", unavailable)
        return _reply(start_response, "200 OK", counts)

    return app


def decode_body(body: bytes) -> Any:
    """The JSON of a body; anything that is not plain JSON text is an IntakeError."""
    try:
        return json.loads(
            body or b"null", parse_constant=_no_constant, object_pairs_hook=_no_duplicates
        )
    except RecursionError:
        raise IntakeError("JSON nested too deeply") from None
    except UnicodeError:
        raise IntakeError("body is not UTF-8 text") from None
    except IntakeError:
        raise
    except json.JSONDecodeError as exc:
        raise IntakeError(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError:  # an integer of thousands of digits (Python's conversion limit)
        raise IntakeError("not JSON this intake takes: a number is too long") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object with a key twice is ambiguous (`"status"` firing and resolved): refused."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise IntakeError(f"key {key[:40]!r} appears twice in one object")
        result[key] = value
    return result


def parse_message(message: Any) -> Message:
    """Check a decoded webhook message whole; the first problem is an IntakeError."""
    if not isinstance(message, dict):
        raise IntakeError("expected a JSON object")
    _text_only(message)
    if message.get("version") not in ("4", 4):
        raise IntakeError('unsupported webhook version: expected "4"')
    receiver = message.get("receiver") or ""
    if not isinstance(receiver, str):
        raise IntakeError("receiver must be a string")
    truncated = message.get("truncatedAlerts") or 0
    counted = isinstance(truncated, int) and not isinstance(truncated, bool)
    if not counted or not 0 <= truncated <= MAX_COUNT:
        raise IntakeError("truncatedAlerts must be a count")
    alerts = message.get("alerts")
    if not isinstance(alerts, list):
        raise IntakeError("alerts must be a list")
    return Message(receiver[:200], truncated, tuple(_alert(a, i) for i, a in enumerate(alerts)))


def _alert(alert: Any, index: int) -> Alert:
    if not isinstance(alert, dict) or alert.get("status") not in ("firing", "resolved"):
        raise IntakeError(f"alerts[{index}]: needs status firing or resolved")
    fingerprint = alert.get("fingerprint")
    if not isinstance(fingerprint, str) or not 0 < len(fingerprint) <= MAX_FINGERPRINT:
        raise IntakeError(f"alerts[{index}]: needs a fingerprint (at most {MAX_FINGERPRINT})")
    return Alert(
        fingerprint=fingerprint,
        firing=alert["status"] == "firing",
        labels=_strings(alert, "labels", index),
        annotations=_strings(alert, "annotations", index),
    )


def _strings(alert: dict[str, Any], key: str, index: int) -> dict[str, str]:
    value = alert.get(key) or {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise IntakeError(f"alerts[{index}]: {key} must map names to strings")
    return value


def _text_only(message: dict[str, Any]) -> None:
    """Refuse NUL characters and unpaired surrogates in any string of the message: the
    stores cannot keep them (PostgreSQL refuses NUL in text, neither encodes a lone
    surrogate), so they are refused here, the same on both. Iterative: JSON nests up to
    the decoder's recursion limit."""
    pending: list[Any] = [message]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, str):
            if "\0" in value:
                raise IntakeError("a string holds a NUL character")
            try:
                value.encode()
            except UnicodeEncodeError:
                raise IntakeError("a string holds an unpaired surrogate") from None


def _no_constant(name: str) -> None:
    raise IntakeError(f"{name} is not JSON")


def _reply(start_response: Callable[..., Any], status: str, body: dict[str, Any]) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]
