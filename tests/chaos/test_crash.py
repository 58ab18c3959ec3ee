"""kill -9 at random points: seeded trials of `opsagent backup run`, `backup prune` and
`restore-test run` killed mid-run, each followed by a run that must succeed, on two
repositories at once (two workers). After every trial the repository checks clean; at the
end every snapshot restores byte for byte and `check --read-data` is clean. The seed and
the trial count are printed, so a failure can be replayed:

    OPSAGENT_CRASH_SEED=... OPSAGENT_CRASH_TRIALS=... pytest tests/chaos/test_crash.py

A second test kills the daemon while its outbox is delivering to a slow webhook: after a
restart every notification arrives, and any repeat carries the same delivery ID.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from agents.backup.checker import check
from agents.backup.restorer import restore
from agents.backup.runner import open_repository
from agents.config import parse_config
from tests.chaos import report
from tests.support.services import free_port, wait_for
from tests.support.trees import fingerprint, make_tree

SEED = int(os.environ.get("OPSAGENT_CRASH_SEED", "1127"))
# random kill timings complement the enumeration in test_crash_matrix.py; 24 trials fit well
# inside the timeout on a loaded two-core machine
TRIALS = int(os.environ.get("OPSAGENT_CRASH_TRIALS", "24"))
WORKERS = 2
OPERATIONS = {
    "backup": ["backup", "run"],
    "prune": ["backup", "prune"],
    "restore-test": ["restore-test", "run"],
}


def _setup(root: Path, seed: int) -> Path:
    source = root / "source"
    make_tree(source, small_files=120, large_mib=2, seed=seed)
    key = root / "repo.key"
    key.write_text("crash\n")
    key.chmod(0o600)
    config = root / "config.yml"
    config.write_text(
        f"""
host: crash-host
state_dir: {root / "state"}
backup:
  repository: {root / "repo"}
  password_file: {key}
  pack_size: 512KiB
  lock_wait: 0s
  sources: [{{name: files, kind: files, paths: ["{source}"]}}]
  retention: {{keep_last: 3}}
  prune: {{repack_threshold_percent: 1}}
restore_test:
  sandbox: {{kind: local, root: {root / "sandbox"}}}
  verify: {{data: {{full_every: 1d}}}}
"""
    )
    return config


def _opsagent(config: Path, argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "agents", *argv, "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _worker(root: Path, seed: int, trials: int) -> dict[str, Any]:
    rng = random.Random(seed)
    config_path = _setup(root, seed)
    config = parse_config(config_path.read_text(), str(config_path))
    assert config.backup is not None
    source = root / "source"
    init = subprocess.run(
        [sys.executable, "-m", "agents", "backup", "init", "--config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert init.returncode == 0, init.stderr
    expected: dict[str, dict] = {}  # type: ignore[type-arg]
    killed = {name: 0 for name in OPERATIONS}
    took = {name: 1.0 for name in OPERATIONS}  # last uninterrupted duration, seconds
    for trial in range(trials):
        operation = rng.choice(list(OPERATIONS))
        if operation == "backup":  # something new to store each time
            target = source / "docs" / f"trial-{trial % 7}.txt"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(f"trial {trial} {rng.random()}\n" * rng.randint(10, 3000))
        # anywhere from start-up (~0.45 s of Python) to just before the run would end
        delay = rng.uniform(0.3, max(0.4, took[operation] * 0.95))
        proc = _opsagent(config_path, OPERATIONS[operation])
        try:
            proc.wait(delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            killed[operation] += 1
        proc.communicate()
        began = time.monotonic()
        recovery = subprocess.run(
            [sys.executable, "-m", "agents", *OPERATIONS[operation], "--config", str(config_path)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        took[operation] = time.monotonic() - began
        needs_snapshot = operation == "restore-test" and not expected
        if needs_snapshot and recovery.returncode != 0:
            assert "no snapshot" in recovery.stdout + recovery.stderr, recovery.stdout
        else:
            assert recovery.returncode == 0, (
                f"seed {seed} trial {trial} ({operation} after kill at {delay:.2f}s):"
                f" {recovery.stdout[-500:]} {recovery.stderr[-500:]}"
            )
        repo = open_repository(config.backup)
        if operation == "backup":
            expected[repo.find_snapshot("latest").id] = fingerprint(source)
        verdict = check(repo)
        assert verdict.ok, f"seed {seed} trial {trial} ({operation}): {verdict.errors}"
        assert not list((root / "sandbox").glob("opsagent-rt-*")), "a sandbox was left behind"
    repo = open_repository(config.backup)
    kept = repo.snapshots()
    for snap in kept:
        if snap.id not in expected:
            continue  # from a killed run that completed its snapshot before the kill
        out = root / f"restore-{snap.short_id}"
        restore(repo, snap, out)
        assert fingerprint(out / str(source).lstrip("/")) == expected[snap.id], snap.id
    assert check(repo, read_data=True).ok
    return {"killed": killed, "snapshots": len(kept)}


def test_kill_9_matrix(tmp_path: Path) -> None:
    print(f"crash matrix: {TRIALS} trials, seed {SEED} (OPSAGENT_CRASH_SEED/_TRIALS to replay)")
    started = time.monotonic()
    per_worker = [TRIALS // WORKERS + (1 if i < TRIALS % WORKERS else 0) for i in range(WORKERS)]
    with ThreadPoolExecutor(WORKERS) as pool:
        futures = [
            pool.submit(_worker, tmp_path / f"w{i}", SEED + i, n) for i, n in enumerate(per_worker)
        ]
        outcomes = [f.result() for f in futures]
    killed: dict[str, int] = {}
    for outcome in outcomes:
        for name, count in outcome["killed"].items():
            killed[name] = killed.get(name, 0) + count
    assert sum(killed.values()) >= TRIALS // 3, f"too few runs were really killed: {killed}"
    assert all(count > 0 for count in killed.values()), killed
    report.record(
        "crash",
        {
            "seed": SEED,
            "trials": TRIALS,
            "killed_mid_run": killed,
            "seconds": round(time.monotonic() - started, 1),
        },
    )


def test_outbox_delivers_every_notification_across_kills(tmp_path: Path) -> None:
    deliveries: list[str] = []
    lock = threading.Lock()

    class SlowHook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            time.sleep(0.4)  # the agent can be killed while it waits for this answer
            with lock:
                deliveries.append(self.headers["X-Opsagent-Delivery"])
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    hook = ThreadingHTTPServer(("127.0.0.1", 0), SlowHook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    config = tmp_path / "config.yml"
    checks = "\n".join(
        f"    - {{name: down-{i}, kind: tcp, host: 127.0.0.1, port: {free_port()},"
        " interval: 1s, severity: critical}"
        for i in range(6)
    )
    config.write_text(
        f"""
host: outbox-host
state_dir: {tmp_path / "state"}
exporter: {{enabled: false}}
monitor:
  checks:
{checks}
cases:
  notify:
    - {{kind: webhook, url: "http://127.0.0.1:{hook.server_address[1]}/h", severities: [critical],
        timeout: 1s}}
"""
    )
    rng = random.Random(SEED)
    kills = 0
    try:
        for _ in range(4):
            agent = _opsagent(config, ["run"])
            time.sleep(rng.uniform(0.8, 2.0))
            agent.send_signal(signal.SIGKILL)
            agent.communicate(timeout=30)
            kills += 1
        agent = _opsagent(config, ["run"])
        try:
            import sqlite3

            def all_delivered() -> bool:
                db = sqlite3.connect(tmp_path / "state" / "cases.db")
                try:
                    rows = db.execute(
                        "SELECT COUNT(*), SUM(delivered_at IS NOT NULL) FROM outbox"
                    ).fetchone()
                finally:
                    db.close()
                return rows[0] >= 6 and rows[0] == rows[1]

            wait_for("every outbox row delivered", all_delivered, timeout=60, proc=agent)
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.communicate(timeout=60)
    finally:
        hook.shutdown()
    db = sqlite3.connect(tmp_path / "state" / "cases.db")
    ids = {str(row[0]) for row in db.execute("SELECT id FROM outbox")}
    db.close()
    assert set(deliveries) == ids, "every notification arrived"
    repeats = len(deliveries) - len(set(deliveries))
    report.record(
        "outbox_crash",
        {"kills": kills, "notifications": len(ids), "repeats_with_same_delivery_id": repeats},
    )
    assert json.dumps(sorted(deliveries))  # delivered IDs are plain, comparable values
