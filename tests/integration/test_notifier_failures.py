"""Each notifier against real loopback servers: what it sends, which answers are retried,
and that a broken one fails alone with a DeliveryError, never another exception."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agents.cases.notify import (
    PAGERDUTY_ACTION,
    DeliveryError,
    Dispatcher,
    EmailNotifier,
    PagerDutyNotifier,
    SlackNotifier,
    WebhookNotifier,
    build_notifiers,
    notifier_routes,
    pagerduty_event_problems,
)
from agents.cases.store import Case, CaseStore, Failure
from agents.config import EmailNotify, PagerDutyNotify, SlackNotify, WebhookNotify, parse_config
from agents.results import Severity
from tests.support import services

T = datetime(2026, 11, 27, 10, tzinfo=UTC)


class Receiver:
    """Answers each POST with the next scripted status, then `final`; keeps the bodies."""

    def __init__(self, statuses: list[int], final: int = 200) -> None:
        self.statuses = list(statuses)
        self.final = final
        self.bodies: list[bytes] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                status = receiver.statuses.pop(0) if receiver.statuses else receiver.final
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook/T0KEN"

    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(body) for body in self.bodies]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver([], 202)
    yield server
    server.server.shutdown()


def raw_server(answer: bytes | None) -> tuple[socket.socket, str]:
    """A server that sends `answer` (None: nothing at all) to every connection."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.recv(65536)
            if answer is not None:
                conn.sendall(answer)
                conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener, f"http://127.0.0.1:{listener.getsockname()[1]}/x"


def case(**changes: Any) -> Case:
    base = Case(
        id=3,
        fingerprint="tcp:db",
        title="db port closed",
        severity=Severity.CRITICAL,
        status="open",
        source="tcp:db",
        host="db1",
        occurrences=1,
        first_seen=T,
        last_seen=T,
        acknowledged_at=None,
        acknowledged_by=None,
        resolved_at=None,
        response_due=T + timedelta(hours=4),
        resolution_due=T + timedelta(hours=24),
    )
    return replace(base, **changes)


def key_file(tmp_path: Path, text: str = "R0UTINGKEYR0UTINGKEYR0UTINGKEY12\n") -> Path:
    path = tmp_path / "pd.key"
    path.write_text(text)
    path.chmod(0o600)
    return path


def pagerduty(url: str, key: Path, timeout: str = "5s") -> PagerDutyNotifier:
    config = PagerDutyNotify(kind="pagerduty", url=url, routing_key_file=key, timeout=timeout)
    return PagerDutyNotifier(config, host="agent-host")


def failure(notifier: Any, event: str = "opened", c: Case | None = None) -> DeliveryError:
    with pytest.raises(DeliveryError) as info:
        notifier.send(event, c or case(), 1)
    assert "\n" not in str(info.value)
    return info.value


# --- PagerDuty: what is sent ---------------------------------------------------------------


def test_every_pagerduty_event_sent_validates(tmp_path: Path, receiver: Receiver) -> None:
    notifier = pagerduty(receiver.url, key_file(tmp_path))
    cases = [
        case(),
        case(host=""),
        case(host="\x00"),
        case(title="x" * 5000),
        case(title="Überlast – 東京 \U0001f525", host="hôte"),
        case(title="nul\x00 and\nnewline", source=""),
        case(fingerprint="f" * 400),
        *(case(severity=s) for s in Severity),
    ]
    events = [*PAGERDUTY_ACTION, "breached", "commented"]
    for c in cases:
        for event in events:
            notifier.send(event, c, 1)
    sent = receiver.messages()
    assert len(sent) == len(cases) * len(PAGERDUTY_ACTION)
    for message in sent:
        assert pagerduty_event_problems(message) == [], message
    sources = {m["payload"]["source"] for m in sent if m["event_action"] == "trigger"}
    assert sources == {"db1", "agent-host", "hôte"}


# --- PagerDuty: what is retried ------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "permanent"),
    [
        (400, True),  # invalid event or routing key: PagerDuty says do not retry
        (401, True),  # not PagerDuty's own (the key is in the body): a proxy or a wrong URL
        (403, True),
        (404, True),
        (413, True),
        (308, True),  # a POST is not followed: the URL needs fixing
        (302, True),  # nor re-sent as a GET without its body (urllib's default)
        (301, True),
        (408, False),
        (429, False),  # rate limited: retry after a while
        (500, False),
        (502, False),
        (503, False),
    ],
)
def test_pagerduty_answers(tmp_path: Path, status: int, permanent: bool) -> None:
    server = Receiver([status], 202)
    try:
        notifier = pagerduty(server.url, key_file(tmp_path))
        error = failure(notifier)
        assert error.permanent is permanent
        assert f"HTTP {status}" in str(error) and "T0KEN" not in str(error)
        notifier.send("opened", case(), 1)  # the next answer is 202
    finally:
        server.server.shutdown()


def test_a_redirect_is_never_followed_and_2xx_is_accepted(tmp_path: Path) -> None:
    """A 302 to a URL that answers 200 must not count as delivered (urllib would follow
    it with a GET that has no body); PagerDuty's 202, or any 2xx, is a delivery."""
    import http.server
    import threading

    requests: list[str] = []

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            requests.append(f"POST {self.path}")
            if self.path == "/moved":
                self.send_response(302)
                self.send_header("Location", "/elsewhere")
            else:
                self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            requests.append(f"GET {self.path}")
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        error = failure(pagerduty(f"{base}/moved", key_file(tmp_path)))
        assert error.permanent and "HTTP 302" in str(error) and "redirect" in str(error)
        hook = WebhookNotifier(WebhookNotify(kind="webhook", url=f"{base}/moved"))
        assert failure(hook).permanent
        assert requests == ["POST /moved", "POST /moved"]  # no GET followed
        pagerduty(f"{base}/ok", key_file(tmp_path)).send("opened", case(), 1)
    finally:
        server.shutdown()


def test_network_trouble_is_retried(tmp_path: Path) -> None:
    key = key_file(tmp_path)
    refused = f"http://127.0.0.1:{services.free_port()}/v2/enqueue"
    assert failure(pagerduty(refused, key)).permanent is False
    garbled, garbled_url = raw_server(b"this is not HTTP\r\n\r\n")
    silent, silent_url = raw_server(None)
    try:
        error = failure(pagerduty(garbled_url, key))
        assert error.permanent is False and "bad HTTP answer" in str(error)
        error = failure(pagerduty(silent_url, key, timeout="1s"))
        assert error.permanent is False and "timed out" in str(error)
    finally:
        garbled.close()
        silent.close()


# --- a broken notifier fails alone, with one line ----------------------------------------


def test_pagerduty_key_problems_fail_for_good(tmp_path: Path, receiver: Receiver) -> None:
    missing = tmp_path / "gone.key"
    error = failure(pagerduty(receiver.url, missing))
    assert error.permanent and str(error) == f"pagerduty: {missing}: secret file does not exist"
    world = key_file(tmp_path)
    world.chmod(0o644)
    error = failure(pagerduty(receiver.url, world))
    assert error.permanent and "readable by every user (mode 0644)" in str(error)
    world.chmod(0o640)
    assert "open to its group" in str(failure(pagerduty(receiver.url, world)))
    empty = key_file(tmp_path, "\n")
    assert str(failure(pagerduty(receiver.url, empty))).endswith("secret file is empty")
    binary = key_file(tmp_path)
    binary.write_bytes(b"\xff\xfe")
    assert "not UTF-8 text" in str(failure(pagerduty(receiver.url, binary)))
    assert "not a regular file" in str(failure(pagerduty(receiver.url, tmp_path)))
    unset = PagerDutyNotify(kind="pagerduty", url=receiver.url, routing_key="${OPSAGENT_NO_KEY}")
    error = failure(PagerDutyNotifier(unset))
    assert error.permanent and "environment variable OPSAGENT_NO_KEY is not set" in str(error)
    assert receiver.bodies == []  # nothing with a bad or missing key went out


def test_slack_whose_url_file_vanished_or_holds_no_url(tmp_path: Path) -> None:
    url_file = tmp_path / "slack.url"
    url_file.write_text("not a url, with a s3cret in it\n")
    notifier = SlackNotifier(SlackNotify(kind="slack", webhook_url_file=url_file))
    error = failure(notifier)
    assert error.permanent and "s3cret" not in str(error)
    url_file.unlink()
    error = failure(notifier)
    assert error.permanent and str(error) == f"slack: {url_file}: secret file does not exist"
    url_file.write_text("http://127.0.0.1:1/a path with spaces\n")
    assert failure(notifier).permanent


@pytest.mark.parametrize(
    ("status", "permanent"),
    [(400, True), (403, True), (404, True), (410, True), (429, False), (500, False)],
)
def test_slack_answers(tmp_path: Path, status: int, permanent: bool) -> None:
    server = Receiver([status], 200)
    try:
        url_file = tmp_path / "slack.url"
        url_file.write_text(server.url + "\n")
        notifier = SlackNotifier(SlackNotify(kind="slack", webhook_url_file=url_file))
        error = failure(notifier)
        assert error.permanent is permanent and "T0KEN" not in str(error)
        notifier.send("opened", case(title="\x00 nul, Überlast"), 1)
        assert server.messages()[-1] == {"text": "*opened* case #3 [critical] \x00 nul, Überlast"}
    finally:
        server.server.shutdown()


def test_webhook_url_or_secret_unusable_at_send_time(tmp_path: Path, receiver: Receiver) -> None:
    for url in ("not a url", "http://127.0.0.1:1/\x00", "http://h:99999/x", "ftp://h/x"):
        bad = WebhookNotify.model_construct(
            kind="webhook", url=url, secret=None, secret_file=None, timeout=timedelta(seconds=1)
        )
        error = failure(WebhookNotifier(bad))
        assert error.permanent and url not in str(error)
    gone = tmp_path / "hook.secret"
    config = WebhookNotify(kind="webhook", url=receiver.url, secret_file=gone)
    error = failure(WebhookNotifier(config))
    assert error.permanent and str(error) == f"webhook: {gone}: secret file does not exist"
    os.environ["OPSAGENT_T_HOOK"] = "s3cret\udcff"  # undecodable bytes from the environment
    try:
        by_env = WebhookNotify(kind="webhook", url=receiver.url, secret="${OPSAGENT_T_HOOK}")
        WebhookNotifier(by_env).send("opened", case(), 1)
    finally:
        del os.environ["OPSAGENT_T_HOOK"]
    assert receiver.messages()[-1]["event"] == "opened"


def test_email_failures_are_delivery_errors(tmp_path: Path) -> None:
    port = services.free_port()
    refused = EmailNotify(
        kind="email", smtp=f"127.0.0.1:{port}", to=["a@b.c"], starttls=False, **{"from": "o@p.q"}
    )
    assert failure(EmailNotifier(refused)).permanent is False
    no_password = EmailNotify(
        kind="email",
        smtp=f"127.0.0.1:{port}",
        to=["a@b.c"],
        username="ops",
        password_file=tmp_path / "smtp.pass",
        **{"from": "o@p.q"},
    )
    error = failure(EmailNotifier(no_password))
    assert error.permanent and "smtp.pass: secret file does not exist" in str(error)


# --- through the dispatcher: the healthy notifier delivers everything ----------------------


def test_broken_notifiers_do_not_hold_up_a_healthy_one(tmp_path: Path) -> None:
    hook = Receiver([], 200)
    slack_url = tmp_path / "slack.url"
    slack_url.write_text(hook.url + "\n")
    world_key = key_file(tmp_path)
    world_key.chmod(0o644)
    try:
        config = parse_config(
            f"""
cases:
  notify:
    - {{kind: pagerduty, name: pd-missing, routing_key_file: {tmp_path / "missing.key"}}}
    - {{kind: pagerduty, name: pd-world, routing_key_file: {world_key}}}
    - {{kind: slack, name: slack, webhook_url_file: {slack_url}}}
    - {{kind: webhook, name: down, url: "http://127.0.0.1:{services.free_port()}/x"}}
    - {{kind: webhook, name: healthy, url: "{hook.url}"}}
"""
        )
        slack_url.unlink()  # it vanished after the config was checked
        store = CaseStore(
            f"sqlite:///{tmp_path / 'cases.db'}", notifier_routes(config.cases.notify)
        )
        dispatcher = Dispatcher(store, build_notifiers(config.cases.notify))
        for n in range(3):
            opened, _ = store.record_failure(
                Failure(
                    f"fp-{n}",
                    f"failure {n}",
                    Severity.CRITICAL,
                    "tcp:x",
                    "h1",
                    T,
                    T + timedelta(hours=4),
                    T + timedelta(hours=24),
                )
            )
        store.resolve(opened.id, T + timedelta(minutes=1), "opsagent", "recovered")
        # each notifier is served by its own thread: a case about a notifier that failed
        # late in one pass goes out in the next
        for _ in range(3):
            dispatcher.run_once(T + timedelta(minutes=2))
        messages = hook.messages()
        events = [
            (m["event"], m["case"]["id"])
            for m in messages
            if not m["case"]["fingerprint"].startswith("notifier:")
        ]
        assert sorted(events) == [("opened", 1), ("opened", 2), ("opened", 3), ("resolved", 3)]
        # the notifiers that fail for good are each a critical case of their own, which
        # the healthy one is told of ("down" is retried: not a case yet)
        about = sorted(
            m["case"]["fingerprint"]
            for m in messages
            if m["case"]["fingerprint"].startswith("notifier:")
        )
        assert about == ["notifier:pd-missing", "notifier:pd-world", "notifier:slack"]
    finally:
        hook.server.shutdown()


def test_hostile_case_text_still_reaches_slack_and_mail(tmp_path: Path) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    received: list[Any] = []

    class Keep(Message):
        def handle_message(self, message: Any) -> None:
            received.append(message)

    hostile = case(title="nul\x00 surrogate \ud800 Überlast\r\nBcc: x@y.z", host="")
    port = services.free_port()
    controller = Controller(Keep(), hostname="127.0.0.1", port=port)
    controller.start()
    slack = Receiver([], 200)
    try:
        mail = EmailNotify(
            kind="email",
            smtp=f"127.0.0.1:{port}",
            to=["a@b.c"],
            starttls=False,
            **{"from": "o@p.q"},
        )
        EmailNotifier(mail).send("opened", hostile, 1)
        url_file = tmp_path / "slack.url"
        url_file.write_text(slack.url + "\n")
        SlackNotifier(SlackNotify(kind="slack", webhook_url_file=url_file)).send(
            "opened", hostile, 1
        )
    finally:
        controller.stop()
        slack.server.shutdown()
    assert len(received) == 1 and received[0]["Bcc"] is None
    assert "surrogate ? Überlast" in slack.messages()[0]["text"]
