"""The soak harness shared by `bench/soak.py` (30 minutes by default) and the short soak in
the test suite: a real `opsagent run` with 50 checks every second, a backup and a restore
test on a short period, S3 through the fault proxy, 200 concurrent scrapes during a
backup; RSS, open files, threads and the state database's size sampled as it runs.

It fails (returns problems) when a resource grows without bound (the slope of a least-
squares line over the samples after warm-up, above a threshold), when a scheduled run was
missed, when a check stopped reporting, or when a result was lost.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from tests.support.faultproxy import FaultPlan, FaultProxy
from tests.support.services import free_port, wait_for
from tests.support.trees import make_tree


@dataclass
class Sample:
    seconds: float
    rss_bytes: int
    open_fds: int
    threads: int
    state_bytes: int


@dataclass
class Limits:
    """Growth allowed per minute (after warm-up) before a resource counts as leaking."""

    rss_bytes: float = 2 * 2**20
    open_fds: float = 2.0
    threads: float = 1.0
    state_bytes: float = 512 * 2**10


@dataclass
class SoakReport:
    duration_seconds: float
    samples: list[Sample]
    slopes_per_minute: dict[str, float]
    backups: int
    restore_tests: int
    expected_backups: int
    expected_restore_tests: int
    checks_reporting: int
    scrapes: dict[str, Any]
    faults_injected: int
    cpu_seconds: float
    problems: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        last = self.samples[-1]
        return {
            "duration_seconds": round(self.duration_seconds, 1),
            "samples": len(self.samples),
            "rss_mib_last": round(last.rss_bytes / 2**20, 1),
            "slopes_per_minute": {k: round(v, 1) for k, v in self.slopes_per_minute.items()},
            "backups": f"{self.backups} (expected >= {self.expected_backups})",
            "restore_tests": f"{self.restore_tests} (expected >= {self.expected_restore_tests})",
            "checks_reporting": self.checks_reporting,
            "scrapes_during_backup": self.scrapes,
            "faults_injected": self.faults_injected,
            "agent_cpu_seconds": round(self.cpu_seconds, 1),
            "problems": self.problems,
        }


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (0 with fewer than two points)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


def run_soak(
    workdir: Path,
    s3_port: int,
    bucket: str,
    access_key: str,
    secret_key: str,
    duration: float,
    sample_every: float,
    job_every: float,
    fault_rate: float = 0.05,
    checks: int = 50,
    limits: Limits | None = None,
) -> SoakReport:
    limits = limits or Limits()
    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / "source"
    make_tree(source, small_files=200, large_mib=2, seed=3)
    key = workdir / "repo.key"
    key.write_text("soak\n")
    key.chmod(0o600)
    for name, value in (("ak", access_key), ("sk", secret_key)):
        path = workdir / name
        path.write_text(value)
        path.chmod(0o600)
    proxy = FaultProxy(s3_port, FaultPlan(rate=0.0, seed=7)).start()
    port = free_port()
    check_lines = "\n".join(
        (
            f"    - {{name: tcp-{i}, kind: tcp, host: 127.0.0.1, port: {port}, interval: 1s}}"
            if i % 2 == 0
            else f"    - {{name: disk-{i}, kind: disk, path: {workdir}, interval: 1s}}"
        )
        for i in range(checks)
    )
    config = workdir / "config.yml"
    config.write_text(
        f"""
host: soak-host
state_dir: {workdir / "state"}
exporter: {{listen: "127.0.0.1:{port}"}}
monitor:
  max_parallel: 16
  checks:
{check_lines}
backup:
  repository: s3://{bucket}/soak-{port}
  s3: {{endpoint_url: "{proxy.endpoint_url}", path_style: true,
        access_key_id_file: {workdir / "ak"}, secret_access_key_file: {workdir / "sk"},
        max_attempts: 10, read_timeout: 5s}}
  password_file: {key}
  schedule: {{every: {int(job_every)}s, grace: {int(job_every)}s}}
  sources: [{{name: files, kind: files, paths: ["{source}"]}}]
  retention: {{keep_last: 3}}
  prune: {{schedule: null}}
restore_test:
  schedule: {{every: {int(job_every)}s, grace: {int(job_every)}s}}
  sandbox: {{kind: local, root: {workdir / "sandbox"}}}
"""
    )
    init = subprocess.run(
        [sys.executable, "-m", "agents", "backup", "init", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if init.returncode != 0:
        proxy.stop()
        raise RuntimeError(init.stderr)
    proxy.plan.rate = fault_rate
    agent = subprocess.Popen(
        [sys.executable, "-m", "agents", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    process = psutil.Process(agent.pid)
    url = f"http://127.0.0.1:{port}/metrics"
    samples: list[Sample] = []
    scrapes: dict[str, Any] = {}
    started = time.monotonic()
    state_db = workdir / "state" / "state.db"

    def scrape_storm() -> None:
        """200 concurrent scrapes while a backup is running."""
        deadline = time.monotonic() + duration / 2
        while time.monotonic() < deadline:
            body = urllib.request.urlopen(url, timeout=10).read().decode()
            running = _running(state_db, "backup")
            if running:
                break
            time.sleep(0.1)
        latencies: list[float] = []

        def one(_: int) -> int:
            began = time.monotonic()
            with urllib.request.urlopen(url, timeout=60) as response:
                response.read()
                latencies.append(time.monotonic() - began)
                return response.status

        with ThreadPoolExecutor(50) as pool:
            codes = list(pool.map(one, range(200)))
        ordered = sorted(latencies)
        scrapes.update(
            {
                "ok": sum(1 for c in codes if c == 200),
                "of": 200,
                "during_backup": bool(running),
                "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 1),
            }
        )
        del body

    try:
        wait_for("the soak agent", lambda: urllib.request.urlopen(url, timeout=2), proc=agent)
        storm = threading.Thread(target=scrape_storm, daemon=True)
        storm.start()
        while time.monotonic() - started < duration:
            size = _size(workdir / "state")
            samples.append(
                Sample(
                    round(time.monotonic() - started, 2),
                    process.memory_info().rss,
                    process.num_fds(),
                    process.num_threads(),
                    size,
                )
            )
            time.sleep(sample_every)
        storm.join(timeout=120)
        cpu = sum(process.cpu_times()[:2])
    finally:
        stopped_at = time.time()
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(120)
        except subprocess.TimeoutExpired:
            agent.kill()
        proxy.stop()
    elapsed = time.monotonic() - started
    problems: list[str] = []
    warm = [s for s in samples if s.seconds >= min(60.0, elapsed * 0.25)]
    xs = [s.seconds / 60 for s in warm]
    slopes = {
        name: slope(xs, [float(getattr(s, name)) for s in warm])
        for name in ("rss_bytes", "open_fds", "threads", "state_bytes")
    }
    for name, value in slopes.items():
        if value > getattr(limits, name):
            problems.append(f"{name} grows {value:.0f}/min (limit {getattr(limits, name):.0f})")
    db = sqlite3.connect(state_db)
    try:
        runs = dict(
            db.execute(
                "SELECT name, COUNT(*) FROM runs WHERE name IN ('backup', 'restore_test')"
                " AND status = 'ok' GROUP BY name"
            ).fetchall()
        )
        failed_runs = db.execute(
            "SELECT name, json_extract(result, '$.summary') FROM runs"
            " WHERE name IN ('backup', 'restore_test') AND status != 'ok'"
        ).fetchall()
        finishes = [
            datetime.fromisoformat(row[0]).timestamp()
            for row in db.execute("SELECT last_finish FROM jobs WHERE kind IN ('tcp', 'disk')")
            if row[0]
        ]
        reporting = sum(1 for f in finishes if f >= stopped_at - 10)
    finally:
        db.close()
    expected = max(1, int(elapsed // job_every) - 1)
    backups, restores = runs.get("backup", 0), runs.get("restore_test", 0)
    if backups < expected:
        problems.append(f"{backups} backups in {elapsed:.0f}s: a scheduled run was missed")
    if restores < expected:
        problems.append(f"{restores} restore tests in {elapsed:.0f}s: a scheduled run was missed")
    for name, summary in failed_runs:
        if "interrupted" in str(summary):
            continue  # the run the final SIGTERM stopped at a safe point: not a failure
        problems.append(f"{name} failed: {summary}")
    if reporting < checks:
        problems.append(f"only {reporting} of {checks} checks reported in the last seconds")
    if scrapes.get("ok") != 200:
        problems.append(f"scrapes during backup: {json.dumps(scrapes)}")
    return SoakReport(
        elapsed,
        samples,
        slopes,
        backups,
        restores,
        expected,
        expected,
        reporting,
        scrapes,
        sum(1 for r in proxy.requests if r.fault),
        cpu,
        problems,
    )


def _size(state_dir: Path) -> int:
    """Bytes of the state database with its WAL (which comes and goes under checkpoints)."""
    total = 0
    for path in state_dir.glob("state.db*"):
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            continue
    return total


def _running(state_db: Path, job: str) -> bool:
    """A job has started and not finished (read from the state database)."""
    try:
        db = sqlite3.connect(state_db, timeout=5)
        try:
            row = db.execute(
                "SELECT last_start, last_finish FROM jobs WHERE name = ?", (job,)
            ).fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return False
    return bool(row and row[0] and (row[1] is None or row[0] > row[1]))


def as_dict(report: SoakReport) -> dict[str, Any]:
    return {**report.summary(), "samples_raw": [asdict(s) for s in report.samples]}
