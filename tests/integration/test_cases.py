"""The case store and rules against real SQLite and PostgreSQL: one case per failure."""

from __future__ import annotations

import getpass
import json
import multiprocessing
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agents.cases.rules import CaseRules, Thresholds
from agents.cases.store import CaseStore, Failure
from agents.config import CasesConfig
from agents.results import CheckResult, Severity, Status
from tests.support import services


def failure(at: datetime | None = None, severity: Severity = Severity.MAJOR) -> Failure:
    at = at or datetime.now(UTC)
    return Failure(
        "fp-1",
        "web down",
        severity,
        "http:web",
        "h1",
        at,
        at + timedelta(hours=4),
        at + timedelta(hours=24),
    )


def _report_many(url: str, count: int) -> None:
    store = CaseStore(url)
    for _ in range(count):
        store.record_failure(failure())


def test_twenty_threads_make_one_case(store_url: str) -> None:
    store = CaseStore(store_url)
    threads = [threading.Thread(target=_report_many, args=(store_url, 1)) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cases = store.cases()
    assert len(cases) == 1
    assert cases[0].occurrences == 20 and cases[0].status == "open"
    kinds = [e.kind for e in store.events(cases[0].id)]
    assert kinds.count("opened") == 1 and kinds.count("occurrence") == 19


def test_two_processes_make_one_case(store_url: str) -> None:
    CaseStore(store_url)
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_report_many, args=(store_url, 10)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    cases = CaseStore(store_url).cases()
    assert len(cases) == 1 and cases[0].occurrences == 20


def test_database_refuses_a_second_open_case(store_url: str) -> None:
    store = CaseStore(store_url)
    case, created = store.record_failure(failure())
    assert created
    store.resolve(case.id, datetime.now(UTC), "me", "fixed")
    second, created = store.record_failure(failure())
    assert created and second.id != case.id
    from agents.cases.store import CaseStoreError

    with pytest.raises(CaseStoreError, match="another case is open for the same failure"):
        store.reopen(case.id, datetime.now(UTC), "me")


def result(status: Status, at: datetime, severity: Severity = Severity.MAJOR) -> CheckResult:
    return CheckResult(
        name="web",
        kind="http",
        host="h1",
        status=status,
        summary=status.value,
        severity=severity,
        started_at=at,
    )


def test_rules_damp_flapping_resolve_and_reopen(tmp_path: Path) -> None:
    store = CaseStore(f"sqlite:///{tmp_path / 'cases.db'}")
    rules = CaseRules(store, CasesConfig(), {"web": Thresholds(failures=3, successes=2)})
    t = datetime(2026, 11, 24, 10, tzinfo=UTC)
    seq = [Status.FAILED, Status.FAILED, Status.OK, Status.FAILED, Status.FAILED]
    for n, status in enumerate(seq):
        rules.observe(result(status, t + timedelta(seconds=n)))
    assert store.cases() == []  # never three failures in a row
    case = rules.observe(result(Status.FAILED, t + timedelta(seconds=10)))
    assert case is not None and case.status == "open"
    assert rules.observe(result(Status.OK, t + timedelta(seconds=11))) is None
    assert store.get(case.id).status == "open"  # one success is not recovery
    resolved = rules.observe(result(Status.OK, t + timedelta(seconds=12)))
    assert resolved is not None and resolved.status == "resolved"
    for n in range(3):
        again = rules.observe(result(Status.FAILED, t + timedelta(minutes=5, seconds=n)))
    assert again is not None and again.id == case.id and again.status == "reopened"
    assert [e.kind for e in store.events(case.id)] == ["opened", "resolved", "reopened"]


def test_severity_rise_and_no_auto_resolve(tmp_path: Path) -> None:
    store = CaseStore(f"sqlite:///{tmp_path / 'cases.db'}")
    rules = CaseRules(store, CasesConfig(auto_resolve=False))
    t = datetime(2026, 11, 24, 10, tzinfo=UTC)
    case = rules.observe(result(Status.FAILED, t))
    assert case is not None and case.severity is Severity.MAJOR
    case = rules.observe(result(Status.FAILED, t + timedelta(minutes=1), Severity.CRITICAL))
    assert case is not None and case.severity is Severity.CRITICAL
    # the clocks are recomputed from when they started, not from the escalation
    assert case.response_due == t + timedelta(hours=4)
    noted = rules.observe(result(Status.OK, t + timedelta(minutes=2)))
    assert noted is not None and noted.status == "open"
    kinds = [e.kind for e in store.events(case.id)]
    assert kinds == ["opened", "occurrence", "severity changed", "comment"]


def test_cli_list_show_ack_resolve(tmp_path: Path) -> None:
    config = tmp_path / "c.yml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\n")
    store = CaseStore(f"sqlite:///{(tmp_path / 'state' / 'cases.db').absolute()}")
    case, _ = store.record_failure(failure(severity=Severity.CRITICAL))
    base = [sys.executable, "-m", "agents", "cases"]
    listing = subprocess.run(
        [*base, "list", "--json", "--config", str(config)], capture_output=True, text=True
    )
    assert listing.returncode == 0, listing.stderr
    rows = json.loads(listing.stdout)
    assert rows[0]["id"] == case.id and rows[0]["severity"] == "critical"
    assert 0 < rows[0]["response_left_seconds"] <= 4 * 3600
    ack = subprocess.run(
        [*base, "ack", str(case.id), "--by", "alice", "--config", str(config)],
        capture_output=True,
        text=True,
    )
    assert ack.returncode == 0, ack.stderr
    resolve = subprocess.run(
        [*base, "resolve", str(case.id), "--note", "restarted", "--config", str(config)],
        capture_output=True,
        text=True,
    )
    assert resolve.returncode == 0
    twice = subprocess.run(
        [*base, "resolve", str(case.id), "--config", str(config)], capture_output=True, text=True
    )
    assert twice.returncode == 2  # refused: the case is already resolved
    assert twice.stderr == f"opsagent: case #{case.id} is resolved; cannot make it resolved\n"
    show = subprocess.run(
        [*base, "show", str(case.id), "--json", "--config", str(config)],
        capture_output=True,
        text=True,
    )
    timeline = json.loads(show.stdout)["events"]
    assert [(e["kind"], e["actor"]) for e in timeline] == [
        ("opened", None),
        ("acknowledged", "alice"),
        ("resolved", getpass.getuser()),  # --by defaults to the person at the keyboard
    ]


def test_daemon_opens_a_critical_case_and_resolves_it(tmp_path: Path) -> None:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    app_port = server.getsockname()[1]
    port = services.free_port()
    config = tmp_path / "c.yml"
    config.write_text(
        f"""
state_dir: {tmp_path / "state"}
exporter: {{listen: "127.0.0.1:{port}"}}
monitor:
  checks:
    - {{name: app, kind: tcp, host: 127.0.0.1, port: {app_port}, interval: 1s, timeout: 1s,
        severity: critical}}
"""
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "agents", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    store_url = f"sqlite:///{(tmp_path / 'state' / 'cases.db').absolute()}"
    metrics = f"http://127.0.0.1:{port}/metrics"
    try:
        services.wait_for("agent up", lambda: urllib.request.urlopen(metrics, timeout=1), proc=proc)
        server.close()
        stopped = time.monotonic()
        services.wait_for(
            "a case", lambda: CaseStore(store_url).cases("open"), timeout=10, proc=proc
        )
        assert time.monotonic() - stopped < 3  # within one check interval (plus the check)
        case = CaseStore(store_url).cases("open")[0]
        assert case.severity is Severity.CRITICAL and "app" in case.title
        open_metric = 'opsagent_cases_open{severity="critical",status="open"} 1.0'
        # the exporter reads the store at most once a second: the next reads show it
        services.wait_for(
            "the open case in the metrics",
            lambda: open_metric in urllib.request.urlopen(metrics, timeout=2).read().decode(),
            timeout=10,
            proc=proc,
        )
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", app_port))
        server.listen()
        services.wait_for(
            "the case to resolve",
            lambda: CaseStore(store_url).get(case.id).status == "resolved",
            timeout=10,
            proc=proc,
        )
    finally:
        server.close()
        proc.terminate()
        proc.communicate(timeout=10)


def test_sla_breach_recorded_once_and_exported(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from exporters.metrics import ResultMetrics

    store = CaseStore(f"sqlite:///{tmp_path / 'cases.db'}")
    t = datetime(2026, 11, 27, 10, tzinfo=UTC)
    case, _ = store.record_failure(failure(at=t, severity=Severity.CRITICAL))
    assert store.record_breaches(t + timedelta(hours=3)) == []
    found = store.record_breaches(t + timedelta(hours=5))
    assert [(c.id, target) for c, target in found] == [(case.id, "response")]
    assert store.record_breaches(t + timedelta(hours=6)) == []  # once
    store.acknowledge(case.id, t + timedelta(hours=7), "bob")
    found = store.record_breaches(t + timedelta(hours=25))
    assert [target for _, target in found] == ["resolution"]
    registry = CollectorRegistry()
    ResultMetrics(registry, "test").watch_cases(store)
    text = generate_latest(registry).decode()
    assert 'opsagent_sla_breaches_total{severity="critical",target="response"} 1.0' in text
    assert 'opsagent_sla_breaches_total{severity="critical",target="resolution"} 1.0' in text
    assert 'opsagent_cases_open{severity="critical",status="acknowledged"} 1.0' in text


def test_reopen_restarts_the_clocks_and_breaches_count_per_clock(store_url: str) -> None:
    """The decided rule: a reopened case is unacknowledged and both clocks start over at
    the reopening; a breach of the first clocks stays, and the new clocks can breach
    again. A severity change recomputes the clocks from their start."""
    store = CaseStore(store_url)
    t = datetime(2026, 11, 24, 10, tzinfo=UTC)  # a Tuesday, 05:00 in Toronto
    case, _ = store.record_failure(failure(at=t, severity=Severity.CRITICAL))
    assert [target for _, target in store.record_breaches(t + timedelta(hours=5))] == ["response"]
    store.acknowledge(case.id, t + timedelta(hours=6), "alice")
    store.resolve(case.id, t + timedelta(hours=7), "alice", "fixed")
    again = store.reopen(case.id, t + timedelta(days=2), "bob", "back")
    assert again.status == "reopened" and again.acknowledged_at is None
    assert again.clock_started == t + timedelta(days=2)
    assert again.response_due == t + timedelta(days=2, hours=4)  # not breached at once
    assert again.resolution_due == t + timedelta(days=3)
    assert store.record_breaches(t + timedelta(days=2, hours=1)) == []
    late = store.record_breaches(t + timedelta(days=2, hours=5))
    assert [(c.id, target) for c, target in late] == [(case.id, "response")]
    assert store.breached_cases() == {case.id: {"response"}}
    assert sum(kind == "sla breached" for kind in (e.kind for e in store.events(case.id))) == 2
    # critical -> major: both clocks from the reopening, on the business calendar
    major = store.set_severity(case.id, Severity.MAJOR, t + timedelta(days=2, hours=6), "bob", "x")
    assert major.severity is Severity.MAJOR
    assert major.response_due > major.clock_started + timedelta(hours=4)
    shown = [e for e in store.events(case.id) if e.kind == "severity changed"]
    assert shown[-1].actor == "bob" and shown[-1].text == "critical -> major: x"
