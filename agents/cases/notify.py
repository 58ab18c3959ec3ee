"""Notifiers and the outbox dispatcher.

A case change writes one outbox row per interested notifier in its own transaction;
the dispatcher of each agent that has the notifier claims due rows, sends them and
marks them delivered, the rows of one case to one notifier strictly in order.
Delivery is at least once: a send cut off by a crash, or by an outage of the store
between "sent" and "marked delivered", is sent again with the same outbox row ID
(`X-Opsagent-Delivery`; PagerDuty deduplicates on the case fingerprint), so the
receiver can recognise it. The payload is the case as it is when sent, with the
event that happened.

What is retried (with exponential backoff, 5 s doubling to 1 h, or the receiver's
`Retry-After` when longer) and what fails for good
follows the providers' documented semantics, the same for every HTTP notifier:

- retried: timeouts, connection and TLS errors, HTTP 408, 429 and 5xx. PagerDuty's
  Events API v2 documents 429, 5xx and network errors as "retry"; Slack's incoming
  webhooks answer 429 when rate limited and 5xx on their own failures.
- failed for good: every other answer. PagerDuty answers 400 to an invalid event or
  routing key ("do not retry"); it documents no 401/403 (the key is in the body), so
  one comes from something in between or a wrong URL and needs a person, as does a
  redirect (never followed: urllib would re-send it as a GET without the body).
  Slack answers 400, 403, 404 or 410 to a bad payload, a revoked URL or an archived
  channel.
- failed for good before sending: a secret that cannot be read (missing file, not
  0600, unset variable, empty), a URL that is not http(s), an event PagerDuty would
  refuse (`pagerduty_event_problems`). Retrying cannot help until a person fixes it.
- e-mail: SMTP 5xx answers fail for good, 4xx and connection errors are retried.

Every notifier has one method, `send(event, case, delivery_id) -> None`, and raises
nothing but `DeliveryError`: a broken notifier fails alone and never stops the others
or the agent.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
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
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Protocol

from agents.cases.store import Case, CaseNotFound, CaseStore, CaseStoreError, Failure, OutboxItem
from agents.config import (
    ConfigError,
    EmailNotify,
    PagerDutyNotify,
    SlackNotify,
    WebhookNotify,
    resolve_secret,
    url_problem,
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
# limits of PagerDuty's Events API v2 (developer.pagerduty.com, "Send an Alert Event")
PAGERDUTY_SUMMARY_MAX = 1024
PAGERDUTY_DEDUP_KEY_MAX = 255


class DeliveryError(Exception):
    def __init__(
        self, message: str, permanent: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        # the receiver's Retry-After (429, 503): the next attempt waits at least this long
        self.retry_after = retry_after


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A notification is never re-sent elsewhere: urllib would follow a 301/302/303 with
    a GET without the body and call the notification delivered. A redirect is an
    answer like any other 3xx: failed for good, the URL needs fixing."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


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
        if self.config.secret is not None or self.config.secret_file is not None:
            secret = _secret(self.config.secret, self.config.secret_file, "webhook")
            key = secret.encode("utf-8", "surrogateescape")
            digest = hmac.new(key, body, hashlib.sha256).hexdigest()
            headers["X-Opsagent-Signature"] = f"sha256={digest}"
        _post(self.config.url, body, headers, self.config.timeout.total_seconds(), (200, 299))


@dataclass
class PagerDutyNotifier:
    config: PagerDutyNotify
    # the event's source when the case names no host (an intake alert without `instance`)
    host: str = field(default_factory=socket.gethostname)

    def send(self, event: str, case: Case, delivery_id: int) -> None:
        action = PAGERDUTY_ACTION.get(event)
        if action is None:
            return
        key = _secret(self.config.routing_key, self.config.routing_key_file, "pagerduty")
        message = pagerduty_event(action, key, case, self.host)
        problems = pagerduty_event_problems(message)
        if problems:
            raise DeliveryError(f"pagerduty: invalid event: {'; '.join(problems)}", True)
        _post(
            self.config.url,
            json.dumps(message).encode(),
            {"Content-Type": "application/json"},
            self.config.timeout.total_seconds(),
            (200, 299),  # PagerDuty answers 202; any 2xx means it took the event
        )


@dataclass
class SlackNotifier:
    config: SlackNotify

    def send(self, event: str, case: Case, delivery_id: int) -> None:
        url = _secret(self.config.webhook_url, self.config.webhook_url_file, "slack")
        text = _valid(f"*{event}* case #{case.id} [{case.severity.value}] {case.title}")
        body = json.dumps({"text": text[:3000]}).encode()
        _post(
            url,
            body,
            {"Content-Type": "application/json"},
            self.config.timeout.total_seconds(),
            (200, 299),
        )


@dataclass
class EmailNotifier:
    config: EmailNotify

    def send(self, event: str, case: Case, delivery_id: int) -> None:
        host, port = self.config.endpoint
        where = f"smtp {host}:{port}"
        password = None
        if self.config.username:
            password = _secret(self.config.password, self.config.password_file, "smtp")
        try:
            message = _mail(self.config, event, case, delivery_id)
        except ValueError as exc:  # a header the mail library refuses: resending cannot help
            raise DeliveryError(f"{where}: cannot build the message: {exc}", True) from None
        timeout = self.config.timeout.total_seconds()
        try:
            with smtplib.SMTP(host, port, timeout=timeout) as smtp:
                if self.config.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.config.username:
                    smtp.login(self.config.username, password or "")
                smtp.send_message(message)
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(
                f"{where}: {exc.smtp_code}", permanent=500 <= exc.smtp_code < 600
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"{where}: {type(exc).__name__}") from None
        except ValueError as exc:  # UnicodeError: an address the server cannot take
            raise DeliveryError(f"{where}: {type(exc).__name__}", True) from None


def pagerduty_event(action: str, routing_key: str, case: Case, agent_host: str) -> dict[str, Any]:
    """The Events API v2 message for `action` on `case`; the source is the case's host, else
    the agent's."""
    message: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": _dedup_key(case),
    }
    if action == "trigger":
        message["payload"] = {
            "summary": _clip(_printable(f"[{case.severity.value}] {case.title}").strip()),
            "source": _printable(case.host).strip() or _printable(agent_host).strip() or "opsagent",
            "severity": PAGERDUTY_SEVERITY[case.severity],
            "timestamp": _utc(case.last_seen).isoformat(),
            "custom_details": {
                "case": case.id,
                "occurrences": case.occurrences,
                "response_due": case.response_due.isoformat(),
                "resolution_due": case.resolution_due.isoformat(),
            },
        }
        if case.source.strip():
            message["payload"]["component"] = _printable(case.source)
    return message


def pagerduty_event_problems(message: Mapping[str, Any]) -> list[str]:
    """What PagerDuty's Events API v2 would refuse in `message`; empty if it is valid."""
    problems = []
    if not _text(message.get("routing_key")):
        problems.append("routing_key must be a non-empty string")
    action = message.get("event_action")
    if action not in ("trigger", "acknowledge", "resolve"):
        problems.append(f"event_action must be trigger, acknowledge or resolve, got {action!r}")
    dedup_key = message.get("dedup_key")
    if dedup_key is not None and not _text(dedup_key, PAGERDUTY_DEDUP_KEY_MAX):
        problems.append(f"dedup_key must be 1-{PAGERDUTY_DEDUP_KEY_MAX} characters")
    if dedup_key is None and action != "trigger":
        problems.append(f"dedup_key is required to {action}")
    if action != "trigger":
        return problems
    payload = message.get("payload")
    if not isinstance(payload, Mapping):
        return [*problems, "payload is required to trigger"]
    if not _text(payload.get("summary"), PAGERDUTY_SUMMARY_MAX):
        problems.append(f"payload.summary must be 1-{PAGERDUTY_SUMMARY_MAX} characters")
    if not _text(payload.get("source")):
        problems.append("payload.source must be a non-empty string")
    if payload.get("severity") not in PAGERDUTY_SEVERITY.values():
        problems.append("payload.severity must be critical, error, warning or info")
    if "timestamp" in payload and not _iso8601(payload["timestamp"]):
        problems.append("payload.timestamp must be an ISO 8601 date and time with its offset")
    for key in ("component", "group", "class"):
        if key in payload and not _unicode(payload[key]):
            problems.append(f"payload.{key} must be a string of valid text")
    if "custom_details" in payload and not isinstance(payload["custom_details"], Mapping):
        problems.append("payload.custom_details must be an object")
    return problems


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
        judge: bool = True,
    ) -> None:
        self.store = store
        # whether deliveries open and resolve the cases about notifiers: only the agent's
        # own dispatcher judges (a command run as root can read keys the agent cannot)
        self.judge = judge
        self.notifiers = notifiers
        self.agent = agent or socket.gethostname()
        self.routes = routes or []
        self.sent = 0
        self.failed = 0
        self._lock = threading.Lock()
        self._healthy: set[str] = set()  # no open case about it (checked since start)
        self._kicked = self._again = False
        # a claimed batch is leased for as long as delivering it can take, and no longer:
        # rows a killed agent held are sent again soon after it restarts
        timeouts = [
            n.config.timeout.total_seconds() for n in notifiers.values() if hasattr(n, "config")
        ]
        self.lease = self.BATCH * max(timeouts, default=10.0) + 5.0

    def kick(self) -> None:
        """Deliver soon, off the caller's thread: a case just changed, so its page goes
        out now rather than at the next pass. Kicks during a pass make one more pass."""
        if not self.notifiers:
            return
        with self._lock:
            if self._kicked:
                self._again = True
                return
            self._kicked = True
        threading.Thread(target=self._kicked_passes, name="notify-kick", daemon=True).start()

    def _kicked_passes(self) -> None:
        while True:
            try:
                self.run_once()
            except Exception as exc:  # the regular pass will retry; never kill the agent
                log.warning("notification pass failed: %s", exc)
            with self._lock:
                if not self._again:
                    self._kicked = False
                    return
                self._again = False

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
            if error.permanent and not self.judge:  # the agent tries again, and judges
                error = DeliveryError(str(error), retry_after=error.retry_after)
            backoff = timedelta(
                seconds=min(3600, max(5 * 2**item.attempts, error.retry_after or 0))
            )
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
            if error.permanent and self.judge:
                self._rejected(item.notifier, str(error), now)
                return True  # the next row of this case may go now
            return False
        self.store.delivered(item.id, datetime.now(UTC), self.agent)
        with self._lock:
            self.sent += 1
        if self.judge:
            self._accepted(item.notifier, now)
        return True

    def _rejected(self, name: str, error: str, now: datetime) -> None:
        """A provider refused a notification for good: people must hear of it from the
        other notifiers (the case about a notifier is never sent to that notifier)."""
        with self._lock:
            self._healthy.discard(name)
        fingerprint = f"notifier:{name}"
        # a flapping notifier reopens its recent case instead of paging a new one
        if self.store.reopen_recent(fingerprint, now - timedelta(hours=1), now) is not None:
            return
        due = self.store.clock(Severity.CRITICAL, now)
        self.store.record_failure(
            Failure(
                fingerprint=fingerprint,
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


def build_notifiers(configs: list[Any], host: str | None = None) -> dict[str, Notifier]:
    """Notifiers by name, for the kinds delivered over the outbox; `host` is the agent's
    (PagerDuty's event source when a case names none)."""
    kinds: dict[str, Any] = {
        "webhook": WebhookNotifier,
        "slack": SlackNotifier,
        "email": EmailNotifier,
    }
    built: dict[str, Notifier] = {}
    for i, c in enumerate(configs):
        if c.kind == "pagerduty":
            built[notifier_name(i, c)] = (
                PagerDutyNotifier(c, host) if host else PagerDutyNotifier(c)
            )
        elif c.kind in kinds:
            built[notifier_name(i, c)] = kinds[c.kind](c)
    return built


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
    """POST `body`; DeliveryError unless the status is in `ok`, permanent unless the same
    request may succeed later."""
    if url_problem(url) is not None:  # not echoed: a Slack webhook URL is a secret
        raise DeliveryError("the URL is not an http:// or https:// URL with a host", True)
    where = _where(url)
    try:
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        with _OPENER.open(request, timeout=timeout) as response:
            status = response.status
            retry_after = None
    except urllib.error.HTTPError as exc:
        status = exc.code
        retry_after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
        exc.close()
    except (urllib.error.URLError, OSError) as exc:
        reason = " ".join(str(getattr(exc, "reason", exc)).split())
        raise DeliveryError(f"{where}: {reason}") from None
    except http.client.HTTPException as exc:  # a garbled answer, like a dropped connection
        raise DeliveryError(f"{where}: bad HTTP answer ({type(exc).__name__})") from None
    except ValueError as exc:  # a URL or header http.client refuses: resending cannot help
        raise DeliveryError(f"{where}: cannot send ({type(exc).__name__})", True) from None
    if ok[0] <= status <= ok[1]:
        return
    what = f"HTTP {status} (a redirect: fix the URL)" if 300 <= status < 400 else f"HTTP {status}"
    raise DeliveryError(f"{where}: {what}", not _retryable(status), retry_after)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (seconds or an HTTP date), at most an hour."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            seconds = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), 3600.0)


def _retryable(status: int) -> bool:
    """Whether the same request may succeed later: 408, 429 and 5xx (see the module doc)."""
    return status in (408, 429) or 500 <= status <= 599


def _where(url: str) -> str:
    """The endpoint without path or query (webhook paths often carry tokens)."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return "(invalid URL)"
    return f"{parts.scheme}://{parts.hostname}:{port or ''}".rstrip(":")


def _secret(ref: str | None, file: Path | None, notifier: str) -> str:
    """A notifier's secret; a permanent DeliveryError when it cannot be had."""
    try:
        secret = resolve_secret(ref, file)
    except ConfigError as exc:
        raise DeliveryError(f"{notifier}: {exc}", permanent=True) from None
    if not secret:
        what = f"{file}: secret file" if file is not None else "secret"
        raise DeliveryError(f"{notifier}: {what} is empty", permanent=True)
    return secret


def _mail(config: EmailNotify, event: str, case: Case, delivery_id: int) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = f"[opsagent {case.severity.value}] {event}: case #{case.id}"
    message["From"] = config.from_
    message["To"] = ", ".join(config.to)
    message["X-Opsagent-Delivery"] = str(delivery_id)
    message.set_content(
        _valid(
            f"{case.title}\n\nstatus: {case.status}\nhost: {case.host}\nsource: {case.source}\n"
            f"occurrences: {case.occurrences}\nresponse due: {case.response_due.isoformat()}\n"
            f"resolution due: {case.resolution_due.isoformat()}\n"
        )
    )
    return message


def _dedup_key(case: Case) -> str:
    """PagerDuty's dedup key: the case fingerprint, hashed when longer than PagerDuty takes."""
    fingerprint = case.fingerprint
    if not fingerprint.strip():
        return f"opsagent-case-{case.id}"
    if _length(fingerprint) <= PAGERDUTY_DEDUP_KEY_MAX and _unicode(fingerprint):
        return fingerprint
    return "sha256:" + hashlib.sha256(fingerprint.encode("utf-8", "surrogatepass")).hexdigest()


def _valid(text: str) -> str:
    """`text` with lone surrogates (from a hostile intake body) made `?`: valid UTF-8."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _printable(text: str) -> str:
    """`text` with control characters (NUL, newlines, lone surrogates) made spaces."""
    return "".join(c if c.isprintable() else " " for c in text)


def _clip(text: str, limit: int = PAGERDUTY_SUMMARY_MAX) -> str:
    """At most `limit` characters, counted as UTF-16 units (stricter than code points)."""
    units = 0
    for i, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit:
            return text[:i]
    return text


def _length(text: str) -> int:
    return sum(2 if ord(char) > 0xFFFF else 1 for char in text)


def _text(value: Any, limit: int | None = None) -> bool:
    """Whether `value` is a string with something in it, within `limit` characters."""
    if not _unicode(value) or not value.strip():
        return False
    return limit is None or _length(value) <= limit


def _unicode(value: Any) -> bool:
    """Whether `value` is a string JSON can carry as UTF-8 (no lone surrogates)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _utc(moment: datetime) -> datetime:
    """`moment` with its offset; a naive one is taken as UTC, as the store writes them."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _iso8601(value: Any) -> bool:
    try:
        return isinstance(value, str) and datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False


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
            except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
                log.warning("heartbeat to %s failed: %s", _where(url), getattr(exc, "reason", exc))
