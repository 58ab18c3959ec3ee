"""`opsagent status` against a state database prepared by real runs: the agent ran a
backup, a restore test and a failing check (which opened a case); the screen shows each,
puts the failure first, and exits 1. `/status` serves the same document.

It tells the truth when that is bad news: a case store it cannot read, notifications
that failed for good and open major cases from the Alertmanager intake are problems, and
a host whose jobs the systemd timers run is judged by its timers, not by a daemon it was
never meant to run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.services import free_port, wait_for

# what systemd puts in the environment of a unit it starts; scrubbed from every other run
SYSTEMD_VARIABLES = ("INVOCATION_ID", "TRIGGER_UNIT")


def _opsagent(
    config: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in SYSTEMD_VARIABLES}
    return subprocess.run(
        [sys.executable, "-m", "agents", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env=base | (env or {}),
    )


def test_status_shows_every_item_and_the_failure_first(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(5):
        (data / f"f{i}.txt").write_text(f"file {i}\n" * 1000)
    key = tmp_path / "repo.key"
    key.write_text("status-test\n")
    key.chmod(0o600)
    port = free_port()
    config = tmp_path / "config.yml"
    config.write_text(
        f"""
host: status-host
state_dir: {tmp_path / "state"}
exporter: {{listen: "127.0.0.1:{port}"}}
monitor:
  checks:
    - {{name: always-ok, kind: command, command: ["true"], interval: 1s}}
    - {{name: db-port, kind: tcp, host: 127.0.0.1, port: {free_port()}, interval: 1s,
        severity: critical, failures_before_alert: 1}}
backup:
  repository: {tmp_path / "repo"}
  password_file: {key}
  schedule: {{every: 1h}}
  sources:
    - {{name: docs, kind: files, paths: ["{data}"]}}
restore_test:
  schedule: {{every: 1h}}
  sandbox: {{kind: local, root: {tmp_path / "sandbox"}}}
  max_rto: 1h
"""
    )
    assert _opsagent(config, "backup", "init").returncode == 0
    before = _opsagent(config, "status", "--json")
    assert before.returncode == 1
    assert json.loads(before.stdout)["headline"].startswith("CRITICAL: agent is not running")

    agent = subprocess.Popen(
        [sys.executable, "-m", "agents", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def status() -> dict:  # type: ignore[type-arg]
            return json.loads(_opsagent(config, "status", "--json").stdout)

        wait_for(
            "a backup, a restore test and a case",
            lambda: (
                (s := status())["restore_test"] is not None
                and s["restore_test"]["status"] == "ok"
                and s["backups"][0]["status"] == "ok"
                and s["cases"]
            ),
            timeout=60,
            proc=agent,
        )
        served = json.loads(
            urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10).read()
        )
        assert served["host"] == "status-host"
        assert served["agent"]["running"] is True
        assert {c["name"] for c in served["checks"]} >= {"always-ok", "db-port"}

        screen = _opsagent(config, "status")
        doc = status()
    finally:
        agent.terminate()
        agent.communicate(timeout=60)
    assert screen.returncode == 1, screen.stdout + screen.stderr
    lines = screen.stdout.splitlines()
    # the one line that matters most comes first, with its case and SLA clock
    assert lines[0].startswith("CRITICAL: check db-port failing since "), lines[0]
    assert "(case #1, response due in " in lines[0]
    assert "\x1b[" not in screen.stdout  # no colour when piped
    text = screen.stdout
    assert "agent     0." in text and "on status-host, up " in text
    assert "FAIL db-port" in text and "ok   always-ok" in text
    assert "ok   docs" in text and "last success " in text
    assert "restore test  passed" in text and "RTO " in text
    assert "repository    1 snapshots" in text
    assert "cases  1 critical" in text and "#1" in text
    assert doc["ok"] is False
    assert doc["backups"][0]["bytes"] == sum(f.stat().st_size for f in data.iterdir())
    assert doc["repository"]["snapshots"] == 1
    assert doc["cases"][0]["severity"] == "critical"
    assert doc["cases"][0]["seconds_left"] > 0
    failing = next(c for c in doc["checks"] if c["name"] == "db-port")
    assert failing["status"] == "failed" and failing["since"] is not None

    # what the daemon did on its own is in the audit log, by the scheduler
    audit = json.loads(_opsagent(config, "audit", "--json").stdout)
    scheduled = {(r["action"], r["outcome"]) for r in audit if r["actor"] == "opsagent (scheduled)"}
    assert {("backup", "ok"), ("restore-test", "ok")} <= scheduled

    after = json.loads(_opsagent(config, "status", "--json").stdout)
    assert after["agent"]["running"] is False
    assert after["headline"].startswith("CRITICAL: agent is not running")


# --- a host run by the systemd timers ---------------------------------------------------

# systemd is not PID 1 where the tests run, so this stands in for `systemctl show`: it
# prints, for each timer asked about, what systemd prints, from a file per timer
# ($TIMERS/<unit> holds its ActiveState; no file: the unit is not installed)
FAKE_SYSTEMCTL = """#!/bin/sh
[ "$1" = show ] || exit 1
for arg; do
  case "$arg" in
    *.timer)
      if [ -f "$TIMERS/$arg" ]; then
        printf 'LoadState=loaded\\nActiveState=%s\\n\\n' "$(cat "$TIMERS/$arg")"
      else
        printf 'LoadState=not-found\\nActiveState=inactive\\n\\n'
      fi;;
  esac
done
"""


def _timer_host(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A host set up as the README's install guide says for the timers: no daemon, the
    backup and the restore test run once each by their timers. Returns the config and the
    environment that makes `systemctl` answer from $TIMERS (both timers active)."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("timer host\n" * 100)
    key = tmp_path / "repo.key"
    key.write_text("timer-test\n")
    key.chmod(0o600)
    config = tmp_path / "config.yml"
    config.write_text(
        f"""
host: timer-host
state_dir: {tmp_path / "state"}
exporter: {{enabled: false}}
backup:
  repository: {tmp_path / "repo"}
  password_file: {key}
  schedule: {{daily_at: "02:00"}}
  sources:
    - {{name: docs, kind: files, paths: ["{data}"]}}
restore_test:
  schedule: {{daily_at: "06:00"}}
  sandbox: {{kind: local, root: {tmp_path / "sandbox"}}}
"""
    )
    assert _opsagent(config, "backup", "init").returncode == 0
    for timer, command in (
        ("opsagent-backup.timer", ["backup", "run"]),
        ("opsagent-restore-test.timer", ["restore-test", "run"]),
    ):
        systemd = {"INVOCATION_ID": uuid.uuid4().hex, "TRIGGER_UNIT": timer}
        ran = _opsagent(config, *command, env=systemd)
        assert ran.returncode == 0, ran.stdout + ran.stderr
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(FAKE_SYSTEMCTL)
    (bin_dir / "systemctl").chmod(0o755)
    timers = tmp_path / "timers"
    timers.mkdir()
    for unit in ("opsagent-backup.timer", "opsagent-restore-test.timer"):
        (timers / unit).write_text("active")
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "TIMERS": str(timers)}
    return config, env


def test_a_timer_host_is_judged_by_its_timers(tmp_path: Path) -> None:
    config, env = _timer_host(tmp_path)
    backed_up = time.monotonic()  # the backup finished before this
    healthy = _opsagent(config, "status", env=env)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert healthy.stdout.startswith("OK: all well (0 open case(s))"), healthy.stdout
    assert "not running" not in healthy.stdout
    assert "agent     systemd timers on timer-host" in healthy.stdout
    assert "ok   opsagent-backup.timer" in healthy.stdout
    assert "ok   backup-freshness" in healthy.stdout
    doc = json.loads(_opsagent(config, "status", "--json", env=env).stdout)
    assert doc["agent"]["mode"] == "timers" and doc["agent"]["running"] is False
    assert [t["unit"] for t in doc["agent"]["timers"]] == [
        "opsagent-backup.timer",
        "opsagent-restore-test.timer",
    ]
    assert all(t["active"] is True for t in doc["agent"]["timers"])

    # a timer someone stopped runs nothing: that is the problem, not a missing daemon
    (Path(env["TIMERS"]) / "opsagent-restore-test.timer").write_text("inactive")
    stopped = _opsagent(config, "status", env=env)
    assert stopped.returncode == 1
    assert stopped.stdout.startswith(
        "CRITICAL: opsagent-restore-test.timer not active (inactive): its job no longer runs"
    ), stopped.stdout
    assert "FAIL opsagent-restore-test.timer" in stopped.stdout

    # systemd cannot be asked (not PID 1, as here): the timers are judged by their jobs
    unknown = _opsagent(config, "status", "--json", env={"PATH": "/usr/local/nothing"})
    doc = json.loads(unknown.stdout)
    assert unknown.returncode == 0 and doc["ok"] is True, unknown.stdout
    assert all(t["active"] is None for t in doc["agent"]["timers"])

    # a timer that says active but runs nothing shows as a stale job: a schedule that
    # wants a backup every 2 s makes the one backup stale after 3 s
    (Path(env["TIMERS"]) / "opsagent-restore-test.timer").write_text("active")
    text = config.read_text().replace('daily_at: "02:00"', "every: 2s, grace: 1s")
    config.write_text(text)
    time.sleep(max(0.0, 3.5 - (time.monotonic() - backed_up)))  # a fast machine is here early
    stale = _opsagent(config, "status", env=env)
    assert stale.returncode == 1, stale.stdout
    assert stale.stdout.startswith("CRITICAL: backup stale: last success "), stale.stdout
    assert ", over 3s since " in stale.stdout.splitlines()[0]


@pytest.mark.parametrize("store", ["postgresql", "sqlite"])
def test_a_case_store_that_cannot_be_read_is_a_problem(tmp_path: Path, store: str) -> None:
    if store == "postgresql":  # nothing listens there: the store is down
        url = f"postgresql://postgres@127.0.0.1:{free_port()}/cases"
    else:  # the store's directory is a regular file
        (tmp_path / "not-a-dir").write_text("")
        url = f"sqlite:///{tmp_path / 'not-a-dir' / 'cases.db'}"
    config, env = _timer_host(tmp_path)
    with config.open("a") as f:  # the store the jobs reported to is gone
        f.write(f"cases: {{store: '{url}'}}\n")
    screen = _opsagent(config, "status", env=env)
    assert screen.returncode == 1, screen.stdout + screen.stderr
    first = screen.stdout.splitlines()[0]
    assert first.startswith("CRITICAL: case store "), first
    assert "OK" not in first
    doc = json.loads(_opsagent(config, "status", "--json", env=env).stdout)
    assert doc["ok"] is False and doc["cases_error"] == doc["problems"][0]["text"]


# --- cases from the Alertmanager intake and notifications nobody got ---------------------


class _Refusing(BaseHTTPRequestHandler):
    """A webhook receiver that rejects every request with 400: never retried."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(400)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def refusing_receiver() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


def _alert(name: str, severity: str) -> dict:  # type: ignore[type-arg]
    return {
        "status": "firing",
        "labels": {"alertname": name, "severity": severity, "instance": "app-01"},
        "annotations": {"summary": f"{name} on app-01"},
        "startsAt": datetime.now(UTC).isoformat(),
        "fingerprint": uuid.uuid4().hex[:16],
    }


def _post_alerts(port: int, *alerts: dict) -> None:  # type: ignore[type-arg]
    body = {"version": "4", "status": "firing", "receiver": "opsagent", "alerts": list(alerts)}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/alertmanager",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def _daemon(tmp_path: Path, notify: str = "") -> tuple[Path, int, subprocess.Popen[str]]:
    port = free_port()
    config = tmp_path / "config.yml"
    config.write_text(
        f"""
host: intake-host
state_dir: {tmp_path / "state"}
exporter: {{listen: "127.0.0.1:{port}"}}
cases: {{notify: [{notify}]}}
"""
    )
    agent = subprocess.Popen(
        [sys.executable, "-m", "agents", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k not in SYSTEMD_VARIABLES},
    )
    wait_for(
        "the agent's intake",
        lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1),
        timeout=30,
        proc=agent,
    )
    return config, port, agent


def test_open_major_cases_are_problems_most_urgent_first(tmp_path: Path) -> None:
    config, port, agent = _daemon(tmp_path)
    try:
        _post_alerts(port, _alert("DiskFilling", "major"))
        major = _opsagent(config, "status")
        assert major.returncode == 1, major.stdout + major.stderr
        first = major.stdout.splitlines()[0]
        assert first.startswith("MAJOR: DiskFilling: DiskFilling on app-01 since "), first
        assert "(case #1, response due in " in first

        # a critical case has 4 h (wall clock), the major one a business day, and a minor
        # alert is no problem on its own
        _post_alerts(port, _alert("AppDown", "critical"), _alert("SlowPage", "info"))
        doc = json.loads(_opsagent(config, "status", "--json").stdout)
    finally:
        agent.terminate()
        # the agent's log, shown on a failure (a 503 from the intake said why in it)
        print(agent.communicate(timeout=60)[1][-4000:])
    assert doc["ok"] is False and len(doc["cases"]) == 3
    assert [p["text"] for p in doc["problems"]] == [
        "AppDown: AppDown on app-01",
        "DiskFilling: DiskFilling on app-01",
    ]
    lefts = [p["seconds_left"] for p in doc["problems"]]
    assert lefts == sorted(lefts) and 0 < lefts[0] <= 4 * 3600
    assert doc["headline"].startswith("CRITICAL: AppDown: AppDown on app-01 since ")
    assert doc["headline"].endswith("; 1 more problem(s)")


def test_notifications_that_failed_for_good_are_a_problem(
    tmp_path: Path, refusing_receiver: str
) -> None:
    notifier = f"{{name: hook, kind: webhook, url: '{refusing_receiver}'}}"
    config, port, agent = _daemon(tmp_path, notifier)
    try:
        _post_alerts(port, _alert("QueueBacklog", "moderate"))

        def failed_problem() -> str:
            doc = json.loads(_opsagent(config, "status", "--json").stdout)
            return next(p["text"] for p in doc["problems"] if "failed for good" in p["text"])

        wait_for("the rejected notification in status", failed_problem, timeout=60, proc=agent)
        screen = _opsagent(config, "status")
    finally:
        agent.terminate()
        agent.communicate(timeout=60)
    assert screen.returncode == 1, screen.stdout + screen.stderr
    # a moderate case is no problem on its own: the lost notification is
    headline = screen.stdout.splitlines()[0]
    assert headline.startswith("MAJOR: 1 notification(s) to hook failed for good"), headline
    assert "HTTP 400" in headline and "opsagent cases retry --failed" in headline
