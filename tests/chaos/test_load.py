"""Load on the Alertmanager intake of a real `opsagent run`: 1,000 webhook requests in about
10 s from 20 threads, with duplicates and resolves, then 1,000 alerts through a real
Alertmanager. Every request answered, open cases equal the distinct firing fingerprints
that were not resolved, and p99 latency is reported."""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.chaos import report
from tests.support import services
from tests.support.services import free_port, wait_for

PATH = "/api/v1/alertmanager"


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    config = tmp_path / "config.yml"
    config.write_text(
        f"host: load-host\nstate_dir: {tmp_path / 'state'}\n"
        f"exporter: {{listen: '127.0.0.1:{port}'}}\nmonitor: {{host_metrics: false}}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "agents", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            "the agent", lambda: urllib.request.urlopen(f"{url}/healthz").status == 200, proc=proc
        )
        yield url, tmp_path / "state" / "cases.db"
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def _message(fingerprint: str, status: str) -> bytes:
    alert = {
        "status": status,
        "labels": {"alertname": "Load", "instance": fingerprint, "severity": "minor"},
        "annotations": {"summary": f"load {fingerprint}"},
        "fingerprint": fingerprint,
        "startsAt": datetime.now(UTC).isoformat(),
    }
    return json.dumps(
        {"version": "4", "status": status, "receiver": "opsagent", "alerts": [alert]}
    ).encode()


def _open_cases(db: Path) -> int:
    connection = sqlite3.connect(db)
    try:
        return connection.execute(
            "SELECT COUNT(*) FROM cases WHERE status IN ('open','acknowledged','reopened')"
            " AND source LIKE 'alertmanager:%'"
        ).fetchone()[0]
    finally:
        connection.close()


def test_1000_webhooks_in_10_seconds(agent: tuple[str, Path]) -> None:
    url, db = agent
    rng = random.Random(1127)
    distinct = [f"fp-{i:04d}" for i in range(400)]
    firing = distinct + [rng.choice(distinct) for _ in range(500)]  # 500 duplicates
    rng.shuffle(firing)
    resolved = rng.sample(distinct, 100)
    plan = [(fp, "firing") for fp in firing] + [(fp, "resolved") for fp in resolved]
    assert len(plan) == 1000
    latencies: list[float] = []
    answers: list[int] = []
    lock = threading.Lock()
    start = time.monotonic()

    def sender(worker: int) -> None:
        for index in range(worker, len(plan), 20):
            # paced: request i leaves at about i/100 s, so 1,000 take 10 s
            wait = start + index / 100 - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            fingerprint, status = plan[index]
            began = time.monotonic()
            request = urllib.request.Request(
                f"{url}{PATH}",
                data=_message(fingerprint, status),
                method="POST",
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                code = response.status
            with lock:
                latencies.append(time.monotonic() - began)
                answers.append(code)

    firing_threads = [threading.Thread(target=sender, args=(w,)) for w in range(20)]
    for thread in firing_threads:
        thread.start()
    for thread in firing_threads:
        thread.join()
    elapsed = time.monotonic() - start
    assert answers == [200] * 1000, "every request answered 200"
    # resolves were sent last (indexes 900+); each was paced after every firing had left,
    # but a firing could still be in flight: resolve again now that all are answered
    for fingerprint in resolved:
        urllib.request.urlopen(
            urllib.request.Request(
                f"{url}{PATH}",
                data=_message(fingerprint, "resolved"),
                method="POST",
                headers={"Content-Type": "application/json"},
            ),
            timeout=30,
        ).read()
    assert _open_cases(db) == 300
    ordered = sorted(latencies)
    p50, p99 = ordered[len(ordered) // 2], ordered[int(len(ordered) * 0.99) - 1]
    report.record(
        "intake_load",
        {
            "direct_requests": 1000,
            "direct_seconds": round(elapsed, 2),
            "direct_p50_ms": round(p50 * 1000, 1),
            "direct_p99_ms": round(p99 * 1000, 1),
            "distinct_fingerprints": 400,
            "resolved": 100,
            "open_cases": 300,
        },
    )


def test_1000_alerts_through_a_real_alertmanager(agent: tuple[str, Path], tmp_path: Path) -> None:
    url, db = agent
    config = f"""
route: {{receiver: opsagent, group_by: [instance], group_wait: 1s, group_interval: 1s,
         repeat_interval: 1h}}
receivers:
  - name: opsagent
    webhook_configs: [{{url: "{url}{PATH}", send_resolved: true, max_alerts: 0}}]
"""
    am = services.start_alertmanager(tmp_path / "am", config)
    try:
        now = datetime.now(UTC)
        alerts = [
            {
                "labels": {
                    "alertname": "Viaam",
                    "instance": f"host-{i % 100:03d}",
                    "disk": f"d{i // 100}",
                    "severity": "moderate",
                },
                "annotations": {"summary": f"alert {i}"},
                "startsAt": now.isoformat(),
                "endsAt": (now + timedelta(hours=1)).isoformat(),
            }
            for i in range(1000)
        ]
        started = time.monotonic()
        for chunk in range(0, 1000, 100):
            body = json.dumps(alerts[chunk : chunk + 100]).encode()
            urllib.request.urlopen(
                urllib.request.Request(
                    f"{am.url}/api/v2/alerts",
                    data=body,
                    method="POST",
                    headers={"Content-Type": "application/json"},
                ),
                timeout=30,
            ).read()
        # the same alerts again: duplicates Alertmanager folds into the same fingerprints
        urllib.request.urlopen(
            urllib.request.Request(
                f"{am.url}/api/v2/alerts",
                data=json.dumps(alerts[:300]).encode(),
                method="POST",
                headers={"Content-Type": "application/json"},
            ),
            timeout=30,
        ).read()
        wait_for("1,000 cases", lambda: _open_cases(db) == 1000, timeout=60)
        opened = time.monotonic() - started
        ended = datetime.now(UTC) - timedelta(seconds=1)
        for alert in alerts[:250]:
            alert["endsAt"] = ended.isoformat()
        urllib.request.urlopen(
            urllib.request.Request(
                f"{am.url}/api/v2/alerts",
                data=json.dumps(alerts[:250]).encode(),
                method="POST",
                headers={"Content-Type": "application/json"},
            ),
            timeout=30,
        ).read()
        wait_for("250 resolved", lambda: _open_cases(db) == 750, timeout=60)
        report.record(
            "intake_load_alertmanager",
            {
                "alerts": 1000,
                "duplicates": 300,
                "resolved": 250,
                "seconds_to_all_cases": round(opened, 2),
                "open_cases": 750,
            },
        )
    finally:
        am.process.stop()
