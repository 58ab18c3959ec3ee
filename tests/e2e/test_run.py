"""The real `opsagent run` process: schedules checks, serves metrics, stops cleanly on SIGTERM."""

from __future__ import annotations

import os
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
            timeout=60,
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
    assert rows == {"tick": "ok", "never-ok": "failed", "cases": "ok"}


def _agent(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "agents", "--log-format", "json", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _backup_config(tmp_path: Path, source: Path, port: int) -> Path:
    key = tmp_path / "repo.key"
    key.write_text("pw\n")
    config = tmp_path / "config.yml"
    config.write_text(
        f"""
host: e2e-host
state_dir: {tmp_path / "state"}
exporter: {{listen: "127.0.0.1:{port}"}}
backup:
  repository: {tmp_path / "repo"}
  password_file: {key}
  schedule: {{daily_at: "03:00", timezone: America/Toronto}}
  sources: [{{name: docs, kind: files, paths: ["{source}"]}}]
  retention: {{keep_last: 3}}
restore_test:
  sandbox: {{root: {tmp_path / "sandbox"}}}
"""
    )
    subprocess.run(
        [sys.executable, "-m", "agents", "backup", "init", "--config", str(config)],
        check=True,
        capture_output=True,
    )
    return config


def test_run_catches_up_a_never_run_backup(tmp_path: Path) -> None:
    source = tmp_path / "docs"
    source.mkdir()
    (source / "a.txt").write_text("invoice\n")
    port = free_port()
    config = _backup_config(tmp_path, source, port)
    proc = _agent(config)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_for(
            "backup metrics",
            lambda: (
                'opsagent_job_up{task="backup"} 1.0'
                in urllib.request.urlopen(url, timeout=2).read().decode()
            ),
            timeout=30,
            proc=proc,
        )
        body = urllib.request.urlopen(url, timeout=2).read().decode()
        assert 'opsagent_backup_last_files{source="docs"} 1.0' in body
        assert 'opsagent_backup_last_success_timestamp_seconds{source="docs"}' in body
        assert "opsagent_repository_snapshots 1.0" in body
        assert 'opsagent_job_up{task="backup"} 1.0' in body
        wait_for(
            "forget and prune after the first backup",
            lambda: (
                'opsagent_job_up{task="prune"} 1.0'
                in urllib.request.urlopen(url, timeout=2).read().decode()
            ),
            timeout=30,
            proc=proc,
        )
        body = urllib.request.urlopen(url, timeout=2).read().decode()
        assert "opsagent_forget_snapshots_kept 1.0" in body
        wait_for(
            "the first restore test",
            lambda: (
                "opsagent_restore_test_up 1.0"
                in urllib.request.urlopen(url, timeout=2).read().decode()
            ),
            timeout=30,
            proc=proc,
        )
        body = urllib.request.urlopen(url, timeout=2).read().decode()
        assert "opsagent_restore_test_data_coverage_ratio 1.0" in body
        assert 'opsagent_restore_test_step_duration_seconds{step="files"}' in body
        assert "opsagent_prune_last_reclaimed_bytes 0.0" in body
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    snapshots = list((tmp_path / "repo" / "snapshots").iterdir())
    assert len(snapshots) == 1


def test_sigterm_during_backup_stops_cleanly_without_partial_snapshot(tmp_path: Path) -> None:
    source = tmp_path / "big"
    source.mkdir()
    for i in range(16):
        (source / f"f{i}.bin").write_bytes(os.urandom(16 * 2**20))
    port = free_port()
    config = _backup_config(tmp_path, source, port)
    proc = _agent(config)
    data = tmp_path / "repo" / "data"
    try:
        wait_for(
            "backup under way",
            lambda: data.exists() and any(data.rglob("*")),
            timeout=30,
            proc=proc,
        )
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        stop_seconds = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert stop_seconds < 10
    snapshots = tmp_path / "repo" / "snapshots"
    assert not snapshots.exists() or list(snapshots.iterdir()) == []
    assert "backup interrupted" in err
    db = sqlite3.connect(tmp_path / "state" / "state.db")
    status = db.execute("SELECT last_status FROM jobs WHERE name='backup'").fetchone()
    assert status == ("error",)
    assert list((tmp_path / "repo" / "locks").iterdir()) == []
