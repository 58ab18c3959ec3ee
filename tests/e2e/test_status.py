"""`opsagent status` against a state database prepared by real runs: the agent ran a
backup, a restore test and a failing check (which opened a case); the screen shows each,
puts the failure first, and exits 1. `/status` serves the same document."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.support.services import free_port, wait_for


def _opsagent(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agents", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
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
