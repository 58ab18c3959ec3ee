"""The real `opsagent run` process: schedules checks, serves metrics, stops cleanly on SIGTERM."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.support.services import free_port, wait_for


def test_run_serves_metrics_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    ticks = tmp_path / "ticks"
    config = tmp_path / "config.yml"
    config.write_text(
        f"""
host: e2e-host
state_dir: {tmp_path / "state"}
exporter: {{listen: "127.0.0.1:{port}"}}
monitor:
  checks:
    - name: tick
      kind: command
      command: [sh, -c, "echo x >> {ticks}"]
      interval: 1s
    - {{name: never-ok, kind: command, command: ["false"], interval: 1s, severity: minor}}
"""
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "agents", "--log-format", "json", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            "three ticks",
            lambda: ticks.exists() and len(ticks.read_text().splitlines()) >= 3,
            timeout=15,
            proc=proc,
        )
        url = f"http://127.0.0.1:{port}/metrics"
        body = urllib.request.urlopen(url, timeout=5).read().decode()
        assert 'opsagent_check_up{check="tick",kind="command"} 1.0' in body
        assert 'opsagent_check_up{check="never-ok",kind="command"} 0.0' in body
        assert "e2e-host" not in body  # no host label: Prometheus adds instance
        health = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert health.status == 200
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=10)
        assert time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert '"message": "stopped"' in err
    db = sqlite3.connect(tmp_path / "state" / "state.db")
    meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    assert meta["daemon_stopped_at"]
    rows = dict(db.execute("SELECT name, last_status FROM jobs").fetchall())
    assert rows == {"tick": "ok", "never-ok": "failed"}
