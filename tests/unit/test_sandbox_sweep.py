"""Two runs in one sandbox root: a sweep spares the run under way and takes a killed one's
leftovers (the run's directory is locked by its process while it runs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from agents.config import Sandbox
from agents.restore_test.sandbox import LocalSandbox, new_run_id, sweep

ROOT = Path(__file__).resolve().parents[2]
HOLD = """
import sys, time
from pathlib import Path
from agents.config import Sandbox
from agents.restore_test.sandbox import LocalSandbox, new_run_id
box = LocalSandbox(Sandbox(kind="local", root=Path(sys.argv[1])), new_run_id())
box.create(0)
print(box.directory, flush=True)
time.sleep(600)
"""


def test_a_run_under_way_survives_another_runs_sweep(tmp_path: Path) -> None:
    config = Sandbox(kind="local", root=tmp_path)
    running = LocalSandbox(config, new_run_id())
    running.create(0)
    assert list(running.directory.iterdir()) == []  # the restore sees only what it restores
    (running.directory / "docs").mkdir()  # what it restored so far
    assert sweep(config, timedelta(hours=6)) == []
    assert (running.directory / "docs").is_dir()
    assert running.teardown() == []
    assert list(tmp_path.iterdir()) == []  # its lock file went with it


def test_a_killed_run_is_swept_and_an_old_versions_leftover_too(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert child.stdout is not None
        directory = Path(child.stdout.readline().strip())
        assert directory.is_dir()
        assert sweep(Sandbox(kind="local", root=tmp_path), timedelta(hours=6)) == []
        assert directory.is_dir()  # alive: spared
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    older = tmp_path / f"opsagent-rt-{new_run_id()}"  # an older version's: no lock file
    older.mkdir()
    removed = sweep(Sandbox(kind="local", root=tmp_path), timedelta(hours=6))
    assert sorted(removed) == sorted([str(directory), str(older)])
    assert list(tmp_path.iterdir()) == []


def test_a_kept_run_is_released_and_kept_until_its_time(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    config = Sandbox(kind="local", root=tmp_path)
    kept = LocalSandbox(config, new_run_id())
    kept.create(0)
    until = datetime.now(UTC) + timedelta(hours=1)
    kept.keep_until(until)
    assert sweep(config, timedelta(hours=6)) == []
    assert kept.directory.is_dir()
    assert sweep(config, timedelta(hours=6), now=until + timedelta(seconds=1)) == [
        str(kept.directory)
    ]
