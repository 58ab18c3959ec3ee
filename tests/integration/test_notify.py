"""Notifications through the outbox to real HTTP receivers on loopback."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agents.cases.notify import Dispatcher, build_notifiers, notifier_routes
from agents.cases.store import CaseStore, Failure
from agents.config import parse_config
from agents.results import Severity
from tests.support import services


class Receiver:
    """Answers with the scripted statuses, then `final`; records every request."""

    def __init__(self, statuses: list[int], final: int) -> None:
        self.statuses = list(statuses)
        self.final = final
        self.requests: list[tuple[dict[str, str], bytes, int]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.statuses.pop(0) if receiver.statuses else receiver.final
                receiver.requests.append((dict(self.headers.items()), body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook/secret-token"

    def accepted(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body, status in self.requests if status < 300]


@pytest.fixture
def receivers() -> Iterator[tuple[Receiver, Receiver]]:
    hook = Receiver([500, 500], 200)
    pagerduty = Receiver([], 202)
    yield hook, pagerduty
    hook.server.shutdown()
    pagerduty.server.shutdown()


def setup(tmp_path: Path, hook: Receiver, pagerduty: Receiver) -> tuple[CaseStore, Dispatcher]:
    (tmp_path / "hook.secret").write_text("s3cret\n")
    (tmp_path / "pd.key").write_text("R0UTINGKEY\n")
    config = parse_config(
        f"""
cases:
  notify:
    - {{kind: webhook, url: "{hook.url}", secret_file: {tmp_path / "hook.secret"}}}
    - {{kind: pagerduty, url: "{pagerduty.url}", routing_key_file: {tmp_path / "pd.key"},
        severities: [critical, major]}}
"""
    )
    notifiers = build_notifiers(config.cases.notify)
    routes = notifier_routes(config.cases.notify)
    store = CaseStore(f"sqlite:///{tmp_path / 'cases.db'}", routes)
    return store, Dispatcher(store, notifiers)


def test_each_notification_is_delivered_once_despite_failures(
    tmp_path: Path, receivers: tuple[Receiver, Receiver]
) -> None:
    hook, pagerduty = receivers
    store, dispatcher = setup(tmp_path, hook, pagerduty)
    t = datetime(2026, 11, 27, 10, tzinfo=UTC)
    case, _ = store.record_failure(
        Failure(
            "fp-9",
            "x" * 2000,
            Severity.CRITICAL,
            "http:web",
            "h1",
            t,
            t + timedelta(hours=4),
            t + timedelta(hours=24),
        )
    )
    store.resolve(case.id, t + timedelta(minutes=1), "opsagent", "recovered")
    now = t + timedelta(minutes=2)
    for _ in range(6):  # the webhook answers 500 twice: retried after backoff, then delivered
        dispatcher.run_once(now)
        now += timedelta(minutes=5)
    assert store.outbox_backlog() == 0
    events = [body["event"] for body in hook.accepted()]
    assert events == ["opened", "resolved"]
    ids = [h["X-Opsagent-Delivery"] for h, _, s in hook.requests if s < 300]
    assert len(ids) == len(set(ids)) == 2
    headers, body, _ = next(r for r in hook.requests if r[2] < 300)
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert headers["X-Opsagent-Signature"] == f"sha256={expected}"
    sent = pagerduty.accepted()
    assert [m["event_action"] for m in sent] == ["trigger", "resolve"]
    trigger = sent[0]
    assert trigger["routing_key"] == "R0UTINGKEY" and trigger["dedup_key"] == "fp-9"
    assert trigger["payload"]["severity"] == "critical"
    assert len(trigger["payload"]["summary"]) == 1024
    assert trigger["payload"]["source"] == "h1"
    assert sent[1] == {"routing_key": "R0UTINGKEY", "event_action": "resolve", "dedup_key": "fp-9"}
    kinds = [e.kind for e in store.events(case.id)]
    assert kinds.count("notified") == 4
    from prometheus_client import CollectorRegistry, generate_latest

    from exporters.metrics import ResultMetrics

    registry = CollectorRegistry()
    ResultMetrics(registry, "test").watch_cases(store, dispatcher.agent, ["webhook-0"])
    text = generate_latest(registry).decode()
    assert 'opsagent_notifications_delivered_total{notifier="webhook-0"} 2.0' in text
    assert 'opsagent_notifications_failed_total{notifier="webhook-0"} 0.0' in text
    assert 'opsagent_notifications_waiting{notifier="webhook-0"} 0.0' in text
    # another agent's figures are its own: it delivered nothing
    other = CollectorRegistry()
    ResultMetrics(other, "test").watch_cases(store, "another-host", ["webhook-0"])
    assert 'opsagent_notifications_delivered_total{notifier="webhook-0"} 0.0' in (
        generate_latest(other).decode()
    )


def test_restart_sends_nothing_twice_and_400_is_not_retried(
    tmp_path: Path, receivers: tuple[Receiver, Receiver]
) -> None:
    hook, pagerduty = receivers
    hook.statuses = []
    pagerduty.statuses = [400]
    store, dispatcher = setup(tmp_path, hook, pagerduty)
    t = datetime(2026, 11, 27, 10, tzinfo=UTC)
    store.record_failure(
        Failure(
            "fp-2",
            "disk",
            Severity.MAJOR,
            "disk:root",
            "h1",
            t,
            t + timedelta(days=1),
            t + timedelta(days=3),
        )
    )
    dispatcher.run_once(t)
    _, again = setup(tmp_path, hook, pagerduty)  # a restarted agent on the same store
    for n in range(3):
        again.run_once(t + timedelta(hours=n + 1))
    assert len(pagerduty.requests) == 1  # 400: given up at once
    # the webhook got the case once, and the case about the rejecting pager (never sent
    # to the pager itself)
    sent = hook.accepted()
    assert [(m["event"], m["case"]["fingerprint"]) for m in sent] == [
        ("opened", "fp-2"),
        ("opened", "notifier:pagerduty-1"),
    ]
    about = store.open_case("notifier:pagerduty-1")
    assert about is not None and about.severity is Severity.CRITICAL
    assert "HTTP 400" in about.title
    failed = store.notifications(state="failed")
    assert [(n.notifier, n.event) for n in failed] == [("pagerduty-1", "opened")]
    assert any("pagerduty-1 failed for good" in p for p in store.notification_problems(t))
    # fixed: requeued by hand, delivered, and the case about the pager resolves itself
    assert store.retry_failed(t + timedelta(hours=5)) == 1
    again.run_once(t + timedelta(hours=5))
    assert [m["event_action"] for m in pagerduty.accepted()] == ["trigger"]
    assert store.get(about.id).status == "resolved"
    again.run_once(t + timedelta(hours=5))
    assert [m["event"] for m in hook.accepted()][-1] == "resolved"
    assert store.outbox_backlog() == 0


def test_minor_cases_skip_pagerduty(tmp_path: Path, receivers: tuple[Receiver, Receiver]) -> None:
    hook, pagerduty = receivers
    hook.statuses = []
    store, dispatcher = setup(tmp_path, hook, pagerduty)
    t = datetime(2026, 11, 27, 10, tzinfo=UTC)
    store.record_failure(
        Failure(
            "fp-3",
            "slow",
            Severity.MINOR,
            "http:x",
            "h1",
            t,
            t + timedelta(days=3),
            t + timedelta(days=20),
        )
    )
    dispatcher.run_once(t)
    assert len(hook.accepted()) == 1 and pagerduty.requests == []


def test_email_reaches_an_smtp_server(tmp_path: Path) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    received: list[Any] = []

    class Keep(Message):
        def handle_message(self, message: Any) -> None:
            received.append(message)

    port = services.free_port()
    controller = Controller(Keep(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        config = parse_config(
            f"""
cases:
  notify:
    - {{kind: email, smtp: "127.0.0.1:{port}", from: ops@example.com,
        to: [oncall@example.com], starttls: false, severities: [critical]}}
"""
        )
        routes = notifier_routes(config.cases.notify)
        store = CaseStore(f"sqlite:///{tmp_path / 'cases.db'}", routes)
        dispatcher = Dispatcher(store, build_notifiers(config.cases.notify))
        t = datetime(2026, 11, 27, 10, tzinfo=UTC)
        store.record_failure(
            Failure(
                "fp-5",
                "backup failed",
                Severity.CRITICAL,
                "backup:b",
                "h1",
                t,
                t + timedelta(hours=4),
                t + timedelta(hours=24),
            )
        )
        assert dispatcher.run_once(t) == (1, 0)
    finally:
        controller.stop()
    assert len(received) == 1
    mail = received[0]
    assert mail["Subject"] == "[opsagent critical] opened: case #1"
    assert mail["To"] == "oncall@example.com"
    assert "backup failed" in mail.get_payload()


def _ping_server() -> tuple[ThreadingHTTPServer, list[str]]:
    """A Healthchecks.io-style endpoint on loopback: answers 200 and keeps each path pinged."""
    paths: list[str] = []

    class Ping(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            paths.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Ping)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, paths


def test_heartbeats_on_job_start_success_and_failure(tmp_path: Path) -> None:
    from datetime import timedelta as td

    from agents.cases.notify import Heartbeats
    from agents.config import Schedule
    from agents.daemon import Daemon
    from agents.jobs import Job
    from agents.results import CheckResult, Status
    from agents.state import StateDB

    server, paths = _ping_server()
    config = parse_config(
        f"""
cases:
  notify:
    - {{kind: heartbeat, url: "http://127.0.0.1:{server.server_address[1]}/ping/{{job}}",
        jobs: [backup, restore_test]}}
"""
    )
    beats = Heartbeats(config.cases.notify)
    outcomes = iter([Status.OK, Status.FAILED])

    def body(ctx: Any) -> CheckResult:
        return CheckResult(
            name="backup", kind="backup", host="h", status=next(outcomes), summary="s"
        )

    daemon = Daemon(
        [
            Job("backup", "backup", Schedule(every=td(hours=1)), body),
            Job(
                "web",
                "http",
                Schedule(every=td(hours=1)),
                lambda ctx: CheckResult(
                    name="web", kind="http", host="h", status=Status.OK, summary="s"
                ),
            ),
        ],
        StateDB(tmp_path / "state.db"),
        "h",
        sinks=[beats.finished],
        on_start=[beats.started],
    )
    for _ in range(2):
        daemon.launch("backup")
        assert daemon.wait_idle(10)
    daemon.launch("web")
    assert daemon.wait_idle(10)
    server.shutdown()
    assert paths == [
        "/ping/backup/start",
        "/ping/backup",
        "/ping/backup/start",
        "/ping/backup/fail",
    ]


def test_a_command_pings_the_heartbeats_of_its_jobs(tmp_path: Path) -> None:
    """A host run by the systemd timers has no daemon: the job command itself pings the
    heartbeat with its outcome, so the outside service sees the host still backs up."""
    from agents.pipeline import record_outcome
    from agents.results import CheckResult, Status

    server, paths = _ping_server()
    config = parse_config(
        f"""
state_dir: {tmp_path / "state"}
cases:
  store: sqlite:///{tmp_path / "cases.db"}
  notify:
    - {{kind: heartbeat, url: "http://127.0.0.1:{server.server_address[1]}/ping/{{job}}",
        jobs: [backup]}}
"""
    )
    (tmp_path / "state").mkdir()

    def result(name: str, kind: str, status: Status) -> CheckResult:
        return CheckResult(name=name, kind=kind, host="h", status=status, summary="s")

    source = result("docs", "backup_source", Status.OK)
    record_outcome(config, [source, result("backup", "backup", Status.OK)])
    record_outcome(config, [result("backup", "backup", Status.FAILED)])
    server.shutdown()
    assert paths == ["/ping/backup", "/ping/backup/fail"]


def test_slack_incoming_webhook(tmp_path: Path) -> None:
    slack = Receiver([429], 200)
    try:
        (tmp_path / "slack.url").write_text(slack.url + "\n")
        config = parse_config(
            f"cases: {{notify: [{{kind: slack, webhook_url_file: {tmp_path / 'slack.url'}}}]}}"
        )
        routes = notifier_routes(config.cases.notify)
        store = CaseStore(f"sqlite:///{tmp_path / 'cases.db'}", routes)
        dispatcher = Dispatcher(store, build_notifiers(config.cases.notify))
        t = datetime(2026, 11, 27, 10, tzinfo=UTC)
        store.record_failure(
            Failure(
                "fp-7",
                "queue stuck",
                Severity.MODERATE,
                "command:q",
                "h1",
                t,
                t + timedelta(days=2),
                t + timedelta(days=10),
            )
        )
        assert dispatcher.run_once(t) == (0, 1)  # 429: retried later
        assert dispatcher.run_once(t + timedelta(minutes=1)) == (1, 0)
        assert slack.accepted() == [{"text": "*opened* case #1 [moderate] queue stuck"}]
    finally:
        slack.server.shutdown()
