"""`opsagent demo`: the whole loop in a temporary directory, nothing to configure.

Sample documents and a SQLite application database; the agent running with its exporter
on a free loopback port; a backup; a restore test that passes; one pack corrupted on
disk; the restore test again, which fails and opens a critical case. Every step says
what happened and which command shows more. The directory and the agent go away at the
end unless `--keep`.
"""

from __future__ import annotations

import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from agents.errors import OpsagentError
from agents.records.details import RestoreTestDetails

if TYPE_CHECKING:
    from agents.config import Config
    from agents.results import CheckResult

Say = Callable[[str], None]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _sample_data(root: Path) -> tuple[Path, Path]:
    docs = root / "app" / "documents"
    for folder in ("contracts", "invoices", "media"):
        (docs / folder).mkdir(parents=True, exist_ok=True)
    for i in range(30):
        (docs / "contracts" / f"contract-{i:03}.txt").write_text(
            f"Contract {i}\n" + "Clause: the provider backs up daily and proves it.\n" * 200
        )
        (docs / "invoices" / f"invoice-{i:03}.csv").write_text(
            "line,item,amount\n" + "".join(f"{n},service,{n * 10 + i}\n" for n in range(300))
        )
    (docs / "media" / "logo.bin").write_bytes(bytes(range(256)) * 2048)
    database = root / "app" / "app.db"
    db = sqlite3.connect(database)
    db.executescript(
        """
        CREATE TABLE clients (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
        CREATE TABLE orders (id INTEGER PRIMARY KEY, client_id INTEGER, total REAL);
        """
    )
    db.executemany("INSERT INTO clients (name) VALUES (?)", [(f"client {i}",) for i in range(50)])
    db.executemany(
        "INSERT INTO orders (client_id, total) VALUES (?, ?)",
        [(i % 50 + 1, i * 1.5) for i in range(2000)],
    )
    db.commit()
    db.close()
    return docs, database


def _config(root: Path, docs: Path, database: Path, port: int) -> Path:
    key = root / "repository.key"
    key.write_text("demo password: keep the real one off the host\n")
    key.chmod(0o600)
    config = root / "config.yml"
    config.write_text(
        f"""# written by `opsagent demo`
host: demo-host
state_dir: {root / "state"}
exporter: {{listen: "127.0.0.1:{port}"}}
monitor:
  checks:
    - {{name: app-disk, kind: disk, path: "{root}", min_free_percent: 1, interval: 30s}}
    - {{name: app-db-present, kind: file_age, glob: "{database}", max_age: 365d,
        interval: 30s}}
backup:
  repository: {root / "repository"}
  password_file: {key}
  schedule: null      # the demo runs each step itself
  sources:
    - {{name: documents, kind: files, paths: ["{docs}"]}}
    - {{name: app-db, kind: sqlite, path: "{database}"}}
  retention: {{keep_last: 7}}
  prune: {{schedule: null}}
restore_test:
  schedule: null
  sandbox: {{kind: local, root: {root / "sandbox"}}}
  max_rto: 5m
  max_rpo: 26h
"""
    )
    return config


def run_demo(keep: bool, say: Say) -> int:
    """Run the demo; returns the exit code (0 when every step did what it should)."""
    from agents.backup.runner import init_repository
    from agents.config import load_config

    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="opsagent-demo-"))
    agent: subprocess.Popen[str] | None = None
    try:
        docs, database = _sample_data(root)
        port = _free_port()
        config_path = _config(root, docs, database, port)
        config = load_config(config_path)
        assert config.backup is not None
        look = f"--config {config_path}"
        say(f"1. Sample application in {root / 'app'}: 61 documents and a SQLite database.")

        init_repository(config.backup, config.host)
        agent = subprocess.Popen(
            [sys.executable, "-m", "agents", "run", "--config", str(config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        url = f"http://127.0.0.1:{port}"
        _wait(lambda: _get(f"{url}/healthz") is not None, agent, "the agent to listen")
        say(f"2. Agent running (pid {agent.pid}); metrics at {url}/metrics")

        _backup_and_pass(config, look, say)
        failed = _corrupt_and_fail(config, root, say)
        _show_the_case(config, failed, url, look, say)
        say(f"Done in {time.monotonic() - started:.0f}s.")
        return 0
    except OpsagentError as exc:
        say(f"demo failed: {exc}")
        return 1
    finally:
        _clean_up(agent, root, keep, say)


def _backup_and_pass(config: Config, look: str, say: Say) -> None:
    """Steps 3 and 4: a backup of both sources, then a restore test that passes."""
    from agents.backup.runner import run_backup
    from agents.pipeline import record_outcome
    from agents.restore_test.runner import run_restore_test
    from agents.results import Severity, run_guarded
    from agents.state import StateDB

    sources: list[CheckResult] = []
    backup = run_guarded(
        "backup",
        "backup",
        config.host,
        Severity.CRITICAL,
        lambda: run_backup(config, emit=sources.append),
    )
    record_outcome(config, [*sources, backup])
    if not backup.ok:
        raise OpsagentError(f"the backup failed: {backup.summary}")
    say(f"3. Backup: {backup.summary}.  Look: opsagent backup snapshots {look}")

    passed = run_restore_test(config, StateDB(config.state_db))
    record_outcome(config, [passed])
    rto = RestoreTestDetails.of(passed).rto_seconds or 0
    if not passed.ok:
        raise OpsagentError(f"the first restore test failed: {passed.summary}")
    say(
        f"4. Restore test passed: both sources restored into a sandbox and verified"
        f" (RTO {rto:.1f}s).  Look: opsagent restore-test history {look}"
    )


def _corrupt_and_fail(config: Config, root: Path, say: Say) -> CheckResult:
    """Step 5: one byte of the largest pack flipped on disk; the restore test that
    follows must fail (its result is returned)."""
    from agents.pipeline import record_outcome
    from agents.restore_test.runner import run_restore_test
    from agents.state import StateDB

    pack = max((root / "repository" / "data").rglob("*"), key=_size)
    with open(pack, "r+b") as handle:  # one byte, in the middle of the pack
        handle.seek(_size(pack) // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))
    say(f"5. Corrupted one byte of pack {pack.name[:12]}... ({_size(pack)} bytes) on disk.")

    failed = run_restore_test(config, StateDB(config.state_db))
    record_outcome(config, [failed])
    if failed.ok:
        raise OpsagentError("the restore test passed on a corrupted repository")
    return failed


def _show_the_case(config: Config, failed: CheckResult, url: str, look: str, say: Say) -> None:
    """Steps 6 to 9: the failure, the case it opened, the metric and the status headline
    that show it, and the commands that show more."""
    from agents.cases.store import CaseStore

    store = CaseStore(config.cases_store)
    cases = [c for c in store.cases(status="open") if c.source.startswith("restore_test")]
    if not cases:
        raise OpsagentError("the failed restore test opened no case")
    case = cases[0]
    say(f"6. Restore test FAILED, as it must: {failed.summary}")
    say(
        f"7. Case #{case.id} opened, {case.severity.value}, response due"
        f" {case.response_due.astimezone():%Y-%m-%d %H:%M} (critical: 4 h, any hour)."
    )
    metrics = (_get(f"{url}/metrics") or b"").decode()
    exported = next(
        (
            line
            for line in metrics.splitlines()
            if line.startswith('opsagent_cases_open{severity="critical",status="open"}')
        ),
        "opsagent_cases_open: not exported",
    )
    say(f"8. The agent exports it: {exported}")
    from agents.status import collect

    say(f"9. opsagent status says: {collect(config).headline}")
    say("   Look further:")
    say(f"     opsagent status {look}")
    say(f"     opsagent cases list {look}")
    say(f"     opsagent backup check --read-data {look}")
    say(f"     curl -s {url}/metrics | grep -E 'opsagent_(cases_open|restore)'")


def _clean_up(agent: subprocess.Popen[str] | None, root: Path, keep: bool, say: Say) -> None:
    """Stop the agent; remove the directory unless asked to keep it."""
    if agent is not None:
        agent.terminate()
        try:
            agent.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.communicate()
    if keep:
        say(f"Kept {root} (the agent is stopped; the commands above still work).")
    else:
        shutil.rmtree(root, ignore_errors=True)


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else -1


def _get(url: str) -> bytes | None:
    try:
        return urllib.request.urlopen(url, timeout=2).read()
    except OSError:
        return None


def _wait(ready: Callable[[], bool], proc: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if ready():
            return
        if proc.poll() is not None:
            _out, err = proc.communicate()
            last = err.strip().splitlines()[-1] if err.strip() else "no output"
            raise OpsagentError(f"the agent exited while waiting for {what}: {last}")
        time.sleep(0.1)
    raise OpsagentError(f"timed out waiting for {what}")
