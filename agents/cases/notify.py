"""Notifiers and the outbox dispatcher.

A case change writes one outbox row per interested notifier in its own transaction;
the dispatcher claims due rows, sends them and marks them delivered, retrying with
exponential backoff (5 s doubling to 1 h) on timeouts, 429 and 5xx, and giving up
at once on other 4xx. An endpoint down for an hour loses nothing. Each request
carries the outbox row's ID (`X-Opsagent-Delivery`; PagerDuty deduplicates on the
case fingerprint), so a send repeated after a crash between "sent" and "marked
delivered" can be recognised by the receiver.

Every notifier has one method, `send(event, case) -> None`, raising `DeliveryError`.
A failing notifier never stops the others or the agent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import smtplib
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any, Protocol

from agents.cases.store import Case, CaseNotFound, CaseStore, CaseStoreError, Failure, OutboxItem
from agents.config import (
    EmailNotify,
    PagerDutyNotify,
    SlackNotify,
    WebhookNotify,
    resolve_secret,
)
from agents.results import Severity

log = logging.getLogger("opsagent.notify")

PAGERDUTY_SEVERITY = {
    Severity.CRITICAL: "critical",
    Severity.MAJOR: "error",
    Severity.MODERATE: "warning",
    Severity.MINOR: "info",
}
PAGERDUTY_ACTION = {
    "opened": "trigger",
    "severity changed": "trigger",
    "reopened": "trigger",
    "acknowledged": "acknowledge",
    "resolved": "resolve",
}


class DeliveryError(Exception):
    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class Notifier(Protocol):
    def send(self, event: str, case: Case, delivery_id: int) -> None: ...


@dataclass
class WebhookNotifier:
    config: WebhookNotify

    def send(self, event: str, case: Case, delivery_id: int) -> None:
        body = json.dumps(
            {"event": event, "delivery_id": delivery_id, "case": case.to_dict()}, sort_keys=True
        ).encode()
        headers = {"Content-Type": "application/json", "X-Opsagent-Delivery": str(delivery_id)}
        secret = resolve_secret(self.config.secret, self.config.secret_file)
        if secret:
            digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            headers["X-Opsagent-Signature"] = f"sha256={digest}"
        _post(self.config.url, body, headers, self.config.timeout.total_seconds(), (200, 299))


@dataclass
class PagerDutyNotifier:
    config: PagerDutyNotify

    def send(self, event: str, case: Case, delivery_id: int) -> None:
        key = resolve_secret(self.config.routing_key, self.config.routing_key_file)
        action = PAGERDUTY_ACTION.get(event)
        if action is None:
            return
        message: dict[str, Any] = {
            "routing_key": key,
            "event_action": action,
            "dedup_key": case.fingerprint,
        }
        if action == "trigger":
            message["payload"] = {
                "summary": f"[{case.severity.value}] {case.title}"[:1024],
                "source": case.host,
                "severity": PAGERDUTY_SEVERITY[case.severity],
                "component": case.source,
                "custom_details": {
                    "case": case.id,
                    "occurrences": case.occurrences,
                    "response_due": case.response_due.isoformat(),
                    "resolution_due": case.resolution_due.isoformat(),
                },
            }
        body = json.dumps(message).encode()
        _post(
            self.config.url,
            body,
            {"Content-Type": "application/json"},
            self.config.timeout.total_seconds(),
            (202, 202),
        )


@dataclass
class SlackNotifier:
    config: SlackNotify

    def send(self, event: str, case: Case, delivery_id: int) -> None:
        url = resolve_secret(self.config.webhook_url, self.config.webhook_url_file)
        text = f"*{event}* case #{case.id} [{case.severity.value}] {case.title}"
        body = json.dumps({"text": text[:3000]}).encode()
        _post(
            url or "",
            body,
            {"Content-Type": "application/json"},
            self.config.timeout.total_seconds(),
            (200, 299),
        )


@dataclass
class EmailNotifier:
    config: EmailNotify

    def send(self, event: str, case: Case, delivery_id: int) -> None:
        host, _, port = self.config.smtp.rpartition(":")
        message = EmailMessage()
        message["Subject"] = f"[opsagent {case.severity.value}] {event}: case #{case.id}"
        message["From"] = self.config.from_
        message["To"] = ", ".join(self.config.to)
        message["X-Opsagent-Delivery"] = str(delivery_id)
        message.set_content(
            f"{case.title}\n\nstatus: {case.status}\nhost: {case.host}\nsource: {case.source}\n"
            f"occurrences: {case.occurrences}\nresponse due: {case.response_due.isoformat()}\n"
            f"resolution due: {case.resolution_due.isoformat()}\n"
        )
        timeout = self.config.timeout.total_seconds()
        try:
            with smtplib.SMTP(host or self.config.smtp, int(port or 25), timeout=timeout) as smtp:
                if self.config.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.config.username:
                    password = resolve_secret(self.config.password, self.config.password_file)
                    smtp.login(self.config.username, password or "")
                smtp.send_message(message)
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(
                f"smtp {host}:{port}: {exc.smtp_code}", permanent=500 <= exc.smtp_code < 600
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"smtp {host}:{port}: {type(exc).__name__}") from None


class Dispatcher:
    """Delivers the due outbox rows of the notifiers this agent has; `run_once` is the
    daemon's notification job, and the command line's after a change by hand.

    Each notifier is served by its own thread in a pass, so a notifier that hangs or
    fails holds up only its own rows. A delivery a provider rejects for good opens a
    critical case about that notifier (sent by the others); its next delivery resolves
    it."""

    BATCH = 5
    PASS_SECONDS = 60.0  # one pass never runs longer than this; the next picks up

    def __init__(
        self,
        store: CaseStore,
        notifiers: dict[str, Notifier],
        agent: str | None = None,
        routes: list[tuple[str, frozenset[Severity]]] | None = None,
    ) -> None:
        self.store = store
        self.notifiers = notifiers
        self.agent = agent or socket.gethostname()
        self.routes = routes or []
        self.sent = 0
        self.failed = 0
        self._lock = threading.Lock()
        self._healthy: set[str] = set()  # no open case about it (checked since start)
        # a claimed batch is leased for as long as delivering it can take, and no longer:
        # rows a killed agent held are sent again soon after it restarts
        timeouts = [
            n.config.timeout.total_seconds() for n in notifiers.values() if hasattr(n, "config")
        ]
        self.lease = self.BATCH * max(timeouts, default=10.0) + 5.0

    def register(self, now: datetime | None = None) -> None:
        """Tell the store which notifiers this agent delivers (a heartbeat as well)."""
        self.store.register_notifiers(self.agent, self.routes, now or datetime.now(UTC))

    def run_once(self, now: datetime | None = None, case_id: int | None = None) -> tuple[int, int]:
        """(delivered, failed attempts) in this pass, every notifier in parallel."""
        now = now or datetime.now(UTC)
        before = (self.sent, self.failed)
        threads = [
            threading.Thread(
                target=self._serve, args=(name, now, case_id), name=f"notify-{name}", daemon=True
            )
            for name in self.notifiers
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return self.sent - before[0], self.failed - before[1]

    def _serve(self, name: str, now: datetime, case_id: int | None) -> None:
        """Deliver one notifier's due rows, batch after batch, until none is due, nothing
        moved, or the pass is over. A store outage ends the pass (one warning)."""
        deadline = time.monotonic() + self.PASS_SECONDS
        try:
            while time.monotonic() < deadline:
                batch = self.store.claim_due(now, self.BATCH, self.lease, [name], case_id)
                moved = [self._deliver(item, now) for item in batch]
                if not any(moved):
                    return
                now = max(now, datetime.now(UTC))
        except CaseStoreError as exc:
            log.warning("notifications to %s wait: %s", name, exc)

    def _deliver(self, item: OutboxItem, now: datetime) -> bool:
        notifier = self.notifiers[item.notifier]
        try:
            case = self.store.get(item.case_id)
        except CaseNotFound:
            self.store.retry_later(item.id, now, now, "its case is gone", True, self.agent)
            return True
        try:
            notifier.send(item.event, case, item.id)
        except Exception as exc:  # one notifier's failure, whatever it is, is its own
            error = exc if isinstance(exc, DeliveryError) else _unexpected(exc)
            backoff = timedelta(seconds=min(3600, 5 * 2**item.attempts))
            self.store.retry_later(
                item.id, now, now + backoff, str(error), error.permanent, self.agent
            )
            log.warning(
                "notification %d (%s of case #%d) to %s failed%s: %s",
                item.id,
                item.event,
                item.case_id,
                item.notifier,
                " for good" if error.permanent else f", retry in {backoff.seconds}s",
                error,
            )
            with self._lock:
                self.failed += 1
            if error.permanent:
                self._rejected(item.notifier, str(error), now)
                return True  # the next row of this case may go now
            return False
        self.store.delivered(item.id, datetime.now(UTC), self.agent)
        with self._lock:
            self.sent += 1
        self._accepted(item.notifier, now)
        return True

    def _rejected(self, name: str, error: str, now: datetime) -> None:
        """A provider refused a notification for good: people must hear of it from the
        other notifiers (the case about a notifier is never sent to that notifier)."""
        with self._lock:
            self._healthy.discard(name)
        due = self.store.clock(Severity.CRITICAL, now)
        self.store.record_failure(
            Failure(
                fingerprint=f"notifier:{name}",
                title=f"notifier {name} rejects notifications: {error}"[:500],
                severity=Severity.CRITICAL,
                source=f"notifier:{name}",
                host=self.agent,
                at=now,
                response_due=due.response,
                resolution_due=due.resolution,
            )
        )

    def _accepted(self, name: str, now: datetime) -> None:
        """A delivery went through: resolve the open case about this notifier, if any."""
        with self._lock:
            if name in self._healthy:
                return
            self._healthy.add(name)
        case = self.store.open_case(f"notifier:{name}")
        if case is not None:
            self.store.resolve(case.id, now, "opsagent", "delivered again")


def _unexpected(exc: Exception) -> DeliveryError:
    """A notifier raised something other than DeliveryError: retried, named, one line."""
    return DeliveryError(f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}")


def build_notifiers(configs: list[Any]) -> dict[str, Notifier]:
    """Notifiers by name (`<kind>-<index>`), for the kinds delivered over the outbox."""
    kinds = {
        "webhook": WebhookNotifier,
        "pagerduty": PagerDutyNotifier,
        "slack": SlackNotifier,
        "email": EmailNotifier,
    }
    return {notifier_name(i, c): kinds[c.kind](c) for i, c in enumerate(configs) if c.kind in kinds}


def notifier_name(index: int, config: Any) -> str:
    """The notifier's name in the outbox: the declared `name`, else `<kind>-<index>`.

    A shared store needs declared names: the same name on every agent means the same
    destination, and only agents that have it deliver its rows."""
    return config.name or f"{config.kind}-{index}"


def notifier_routes(configs: list[Any]) -> list[tuple[str, frozenset[Severity]]]:
    """(name, severities) of each outbox notifier: what the case store writes rows for."""
    delivered = build_notifiers(configs)
    return [
        (notifier_name(i, c), frozenset(c.severities))
        for i, c in enumerate(configs)
        if notifier_name(i, c) in delivered
    ]


def _post(
    url: str, body: bytes, headers: dict[str, str], timeout: float, ok: tuple[int, int]
) -> None:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryError(f"{_where(url)}: {reason}") from None
    if ok[0] <= status <= ok[1]:
        return
    permanent = 400 <= status < 500 and status != 429
    raise DeliveryError(f"{_where(url)}: HTTP {status}", permanent=permanent)


def _where(url: str) -> str:
    """The endpoint without path or query (webhook paths often carry tokens)."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or ''}".rstrip(":")


class Heartbeats:
    """Pings in the style of Healthchecks.io and Cronitor on job start, success and failure
    (`URL/start`, `URL`, `URL/fail`; `{job}` in the URL is the job's name), so an outside
    service notices when a host stops running its jobs at all. Failures are logged only."""

    def __init__(self, configs: list[Any]) -> None:
        self.configs = [c for c in configs if c.kind == "heartbeat"]

    def started(self, job: str) -> None:
        self._ping(job, "/start")

    def finished(self, result: Any) -> None:
        self._ping(result.name, "" if result.ok else "/fail")

    def _ping(self, job: str, suffix: str) -> None:
        for config in self.configs:
            if job not in config.jobs:
                continue
            url = config.url.replace("{job}", job).rstrip("/") + suffix
            try:
                with urllib.request.urlopen(url, timeout=config.timeout.total_seconds()):
                    pass
            except (urllib.error.URLError, OSError) as exc:
                log.warning("heartbeat to %s failed: %s", _where(url), getattr(exc, "reason", exc))
