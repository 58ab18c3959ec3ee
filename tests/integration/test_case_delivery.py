"""Every case change reaches the notifiers, in order, once, from whichever agent has
them: changes by hand, outages of the receiver, a killed agent, ten agents sharing a
PostgreSQL store, and a store that goes away across a check's recovery."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
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

AGENT = [sys.executable, "-m", "agents"]


class Hook:
    """A webhook receiver that fails (503) while `down`, and records what it accepted."""

    def __init__(self, ok: int = 200) -> None:
        self.down = False
        self.lock = threading.Lock()
        self.accepted: list[dict[str, Any]] = []
        self.refused = 0
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with hook.lock:
                    status = 503 if hook.down else ok
                    if hook.down:
                        hook.refused += 1
                    else:
                        hook.accepted.append(json.loads(body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def events(self) -> dict[str, list[str]]:
        """Per case fingerprint, the events accepted in order, each delivery ID once."""
        seen: set[int] = set()
        out: dict[str, list[str]] = {}
        with self.lock:
            for message in self.accepted:
                if message["delivery_id"] in seen:
                    continue
                seen.add(message["delivery_id"])
                out.setdefault(message["case"]["fingerprint"], []).append(message["event"])
        return out


@pytest.fixture
def hook() -> Iterator[Hook]:
    receiver = Hook()
    yield receiver
    receiver.server.shutdown()


def failure(fingerprint: str, at: datetime, severity: Severity = Severity.CRITICAL) -> Failure:
    return Failure(
        fingerprint,
        f"{fingerprint} down",
        severity,
        f"tcp:{fingerprint}",
        "h1",
        at,
        at + timedelta(hours=4),
        at + timedelta(hours=24),
    )


def cli(config: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AGENT, "cases", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
    )


def test_changes_by_hand_reach_every_notifier(tmp_path: Path, store_url: str, hook: Hook) -> None:
    """ack, resolve, reopen, open, severity from the command line: notified at once, in
    order; PagerDuty gets acknowledge and resolve for the same dedup key."""
    pagerduty = Hook(ok=202)
    try:
        (tmp_path / "pd.key").write_text("R0UTINGKEY\n")
        (tmp_path / "pd.key").chmod(0o600)
        config = tmp_path / "c.yml"
        config.write_text(
            f"""
state_dir: {tmp_path / "state"}
host: h1
cases:
  store: "{store_url}"
  notify:
    - {{kind: webhook, name: ops-hook, url: "{hook.url}"}}
    - {{kind: pagerduty, name: oncall, url: "{pagerduty.url}",
        routing_key_file: {tmp_path / "pd.key"}}}
"""
        )
        store = CaseStore(store_url, notifier_routes(parse_config(config.read_text()).cases.notify))
        case, _ = store.record_failure(failure("web", datetime.now(UTC)))
        # the first command also delivers the queued "opened", before its own change
        for sent, args in (
            (4, ["ack", str(case.id)]),
            (2, ["resolve", str(case.id), "--note", "restarted"]),
            (2, ["reopen", str(case.id), "--note", "back again"]),
            (2, ["severity", str(case.id), "major", "--why", "only one client"]),
        ):
            done = cli(config, *args)
            assert done.returncode == 0, done.stderr
            assert f"({sent} notification(s) sent)" in done.stdout, done.stdout
        opened = cli(
            config,
            "open",
            "--severity",
            "major",
            "--title",
            "client calls: slow pages",
            "--body",
            "-",
            stdin="Phoned in by ACME at 09:12.\n",
        )
        assert opened.returncode == 0, opened.stderr
        assert "2 notification(s) sent" in opened.stdout
        events = hook.events()
        assert events["web"] == [
            "opened",
            "acknowledged",
            "resolved",
            "reopened",
            "severity changed",
        ]
        manual = [f for f in events if f.startswith("manual:")]
        assert len(manual) == 1 and events[manual[0]] == ["opened"]
        actions = [(m["event_action"], m["dedup_key"]) for m in pagerduty.accepted]
        assert actions[:6] == [
            ("trigger", "web"),
            ("acknowledge", "web"),
            ("resolve", "web"),
            ("trigger", "web"),  # reopened
            ("trigger", "web"),  # severity changed
            ("trigger", actions[5][1]),
        ]
        assert actions[-1] == ("trigger", manual[0])
        # who acted defaults to the person at the keyboard, and is on the timeline
        shown = json.loads(cli(config, "show", str(case.id), "--json").stdout)
        assert [e["kind"] for e in shown["events"]][:2] == ["opened", "acknowledged"]
        assert shown["events"][1]["actor"]
        assert shown["status"] == "reopened" and shown["severity"] == "major"
        assert shown["acknowledged_at"] is None  # a reopened case needs a new response
        missing = cli(config, "show", "999")
        assert missing.returncode == 2 and missing.stderr.strip() == "opsagent: no case #999"
        assert missing.stdout == ""
        found = json.loads(cli(config, "list", "--search", "ACME", "--json").stdout)
        assert [c["title"] for c in found] == ["client calls: slow pages"]
        assert json.loads(cli(config, "list", "--host", "elsewhere", "--json").stdout) == []
    finally:
        pagerduty.server.shutdown()


def test_a_host_without_notifiers_queues_for_the_agent_that_has_them(
    tmp_path: Path, store_url: str, hook: Hook
) -> None:
    config = parse_config(f'cases: {{notify: [{{kind: webhook, name: ops, url: "{hook.url}"}}]}}')
    agent_store = CaseStore(store_url)
    agent = Dispatcher(
        agent_store,
        build_notifiers(config.cases.notify),
        agent="agent-a",
        routes=notifier_routes(config.cases.notify),
    )
    now = datetime.now(UTC)
    agent.register(now)
    # agent B has no notifiers at all: its cases still get rows for "ops"
    lonely = CaseStore(store_url)
    case, _ = lonely.record_failure(failure("db", now))
    assert lonely.claim_due(now, names=[]) == []  # B never takes rows it cannot send
    lonely.acknowledge(case.id, now, "bob")
    assert agent.run_once(now) == (2, 0)  # the acknowledgement after the trigger
    assert hook.events() == {"db": ["opened", "acknowledged"]}
    # a notifier nobody has any more: its rows are undeliverable, and said so
    later = now + timedelta(minutes=30)
    lonely.resolve(case.id, later, None, None)
    assert lonely.undeliverable(later) == {"ops": 1}
    assert any("no agent has notifier ops" in p for p in lonely.notification_problems(later))


def test_backlog_after_a_minute_of_outage_is_delivered_in_order_once(
    tmp_path: Path, store_url: str, hook: Hook
) -> None:
    """The receiver fails for a minute while a case opens, resolves, reopens and is
    acknowledged; passes every 5 s (on a test clock) deliver all four, in order."""
    config = parse_config(f'cases: {{notify: [{{kind: webhook, name: ops, url: "{hook.url}"}}]}}')
    routes = notifier_routes(config.cases.notify)
    store = CaseStore(store_url, routes)
    dispatcher = Dispatcher(store, build_notifiers(config.cases.notify), "a", routes)
    t = datetime(2026, 11, 27, 10, tzinfo=UTC)
    hook.down = True
    case, _ = store.record_failure(failure("web", t))
    other, _ = store.record_failure(failure("db", t + timedelta(seconds=2)))
    for second in range(0, 600, 5):
        now = t + timedelta(seconds=second)
        if second == 30:
            store.resolve(case.id, now, "opsagent", "recovered")
        if second == 40:
            store.reopen(case.id, now, "alice")
        if second == 45:
            store.acknowledge(case.id, now, "alice")
        if second == 60:
            hook.down = False
        dispatcher.run_once(now)
    assert hook.refused > 0
    assert hook.events() == {
        "web": ["opened", "resolved", "reopened", "acknowledged"],
        "db": ["opened"],
    }
    assert len(hook.accepted) == 5  # each once
    assert store.outbox_backlog() == 0 and store.notifications(state="failed") == []
    assert other.id == case.id + 1  # case numbers are contiguous


def agent_config(
    path: Path,
    store_url: str,
    host: str,
    app_port: int,
    metrics_port: int,
    hook: Hook | None,
) -> Path:
    notify = f'notify: [{{kind: webhook, name: ops, url: "{hook.url}"}}]' if hook else ""
    path.mkdir(parents=True, exist_ok=True)
    config = path / "c.yml"
    config.write_text(
        f"""
state_dir: {path / "state"}
host: {host}
exporter: {{listen: "127.0.0.1:{metrics_port}"}}
monitor:
  host_metrics: false
  checks:
    - {{name: app, kind: tcp, host: 127.0.0.1, port: {app_port}, interval: 1s,
        timeout: 1s, severity: critical}}
cases:
  store: "{store_url}"
  {notify}
"""
    )
    return config


def listen(port: int) -> socket.socket:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen()
    return server


def scrape(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def test_a_killed_agent_delivers_its_backlog_in_order_once(tmp_path: Path, hook: Hook) -> None:
    app_port, metrics_port = services.free_port(), services.free_port()
    store_url = f"sqlite:///{(tmp_path / 'cases.db').absolute()}"
    config = agent_config(tmp_path / "a", store_url, "h1", app_port, metrics_port, hook)
    hook.down = True
    log = tmp_path / "agent.log"
    agent = services.spawn([*AGENT, "run", "--config", str(config)], log)
    server = None
    try:
        services.wait_for("a case", lambda: CaseStore(store_url).cases("open"), proc=agent.proc)
        server = listen(app_port)  # the check recovers while the receiver is down
        services.wait_for(
            "the case to resolve",
            lambda: CaseStore(store_url).cases("resolved"),
            timeout=30,
            proc=agent.proc,
        )
        agent.proc.send_signal(signal.SIGKILL)
        agent.proc.wait(10)
        assert CaseStore(store_url).outbox_backlog() == 2
        hook.down = False
        agent = services.spawn([*AGENT, "run", "--config", str(config)], log)
        services.wait_for(
            "the backlog delivered",
            lambda: CaseStore(store_url).outbox_backlog() == 0,
            timeout=90,  # the trigger's backoff may have reached 40 s
            proc=agent.proc,
        )
    finally:
        agent.stop()  # before the target goes, or its failure reopens the case
        if server is not None:
            server.close()
    fingerprint = CaseStore(store_url).cases()[0].fingerprint
    assert hook.events() == {fingerprint: ["opened", "resolved"]}
    assert "Traceback" not in log.read_text()


def test_ten_agents_on_one_postgres_store(tmp_path: Path, pg_database: Any, hook: Hook) -> None:
    """Ten agents, each with its own failing check, three with the notifier: every event
    of every case delivered exactly once, in order, none failed, and each agent's
    metrics count only what it delivered."""
    count, with_notifier = 10, 3
    apps = [services.free_port() for _ in range(count)]
    ports = [services.free_port() for _ in range(count)]
    agents = []
    servers: list[socket.socket] = []
    logs = []
    try:
        for n in range(count):
            config = agent_config(
                tmp_path / f"agent{n}",
                pg_database.dsn,
                f"host{n}",
                apps[n],
                ports[n],
                hook if n < with_notifier else None,
            )
            logs.append(tmp_path / f"agent{n}.log")
            agents.append(services.spawn([*AGENT, "run", "--config", str(config)], logs[-1]))
        store = CaseStore(pg_database.dsn)
        services.wait_for(
            "ten cases notified",
            lambda: sum(e == ["opened"] for e in hook.events().values()) == count,
            timeout=120,
        )
        servers = [listen(port) for port in apps]
        services.wait_for(
            "ten cases resolved and notified",
            lambda: sum(e == ["opened", "resolved"] for e in hook.events().values()) == count,
            timeout=120,
        )
        services.wait_for("the outbox empty", lambda: store.outbox_backlog() == 0, timeout=90)
        lines: dict[int, str | None] = {}

        def counted() -> int:
            # each exporter reads the store at most once a second: poll until fresh
            for n, port in enumerate(ports):
                text = scrape(port)
                assert 'opsagent_notifications_failed_total{notifier="ops"} 1' not in text
                lines[n] = next(
                    (x for x in text.splitlines() if x.startswith("opsagent_notifications_deliv")),
                    None,
                )
            return sum(int(float(x.rsplit(" ", 1)[1])) for x in lines.values() if x)

        services.wait_for("the agents' counts", lambda: counted() == 2 * count, timeout=60)
        delivered = counted()
        for n in range(count):
            if n < with_notifier:
                assert lines[n] is not None, f"agent {n} exports no deliveries"
            else:
                assert lines[n] is None, f"agent {n} has no notifier but exports {lines[n]}"
    finally:
        for agent in agents:
            agent.stop()
        for server in servers:
            server.close()
    events = hook.events()
    assert len(events) == count
    assert all(e == ["opened", "resolved"] for e in events.values()), events
    assert delivered == 2 * count  # each agent counted what it sent, nothing twice
    assert len(hook.accepted) == 2 * count  # nothing sent twice either
    assert store.notifications(state="failed") == []
    assert store.undeliverable(datetime.now(UTC)) == {}
    cases = sorted(c.id for c in store.cases())
    assert cases == list(range(cases[0], cases[0] + count))  # contiguous numbers
    for log in logs:
        assert "Traceback" not in log.read_text(), log


class TcpProxy:
    """A TCP forwarder on loopback that can be cut (every connection closed, new ones
    refused at once) and restored: a database that goes away and comes back."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.up = True
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()
                continue
            self.pairs.append((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.up = False
        for pair in self.pairs:
            for s in pair:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
        self.pairs.clear()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


def test_cases_converge_after_a_store_outage_both_ways(tmp_path: Path, pg_database: Any) -> None:
    """The store is cut across the check's recovery (the case must still resolve) and
    across its failure (the case must still open); the log says so in a few lines,
    without a traceback."""
    from tests.support.services import PG_ADMIN_DSN

    pg_port = int(PG_ADMIN_DSN.split("@", 1)[-1].split("/", 1)[0].rsplit(":", 1)[1])
    proxy = TcpProxy(pg_port)
    via_proxy = pg_database.dsn.replace(f":{pg_port}/", f":{proxy.port}/")
    app_port, metrics_port = services.free_port(), services.free_port()
    config = agent_config(tmp_path / "a", via_proxy, "h1", app_port, metrics_port, None)
    log = tmp_path / "agent.log"
    agent = services.spawn([*AGENT, "run", "--config", str(config)], log)
    store = CaseStore(pg_database.dsn)
    server = None
    try:
        services.wait_for("a case", lambda: store.cases("open"), proc=agent.proc)
        proxy.cut()
        server = listen(app_port)  # recovers while the store is away
        time.sleep(8)
        assert store.cases("open"), "resolved without a store?"
        proxy.restore()
        services.wait_for(
            "the case to resolve after the outage",
            lambda: not store.cases("open"),
            timeout=20,
            proc=agent.proc,
        )
        proxy.cut()
        server.close()  # fails while the store is away
        server = None
        time.sleep(8)
        assert not store.cases("open")
        proxy.restore()
        services.wait_for(
            "the case to open after the outage",
            lambda: store.cases("open"),
            timeout=20,
            proc=agent.proc,
        )
    finally:
        if server is not None:
            server.close()
        agent.stop()
        proxy.close()
    text = log.read_text()
    assert "Traceback" not in text
    waits = [line for line in text.splitlines() if "cases wait for the store" in line]
    assert 1 <= len(waits) <= 4, waits  # one line a minute at most, per outage
