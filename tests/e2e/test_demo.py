"""`opsagent demo` runs the whole loop to completion in a subprocess and leaves nothing
behind: no directory, no process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psutil


def _demo(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agents", "demo", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TMPDIR": str(tmp)},
        cwd=tmp,
    )


def test_demo_runs_the_loop_and_cleans_up(tmp_path: Path) -> None:
    out = _demo(tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    for step in range(1, 10):
        assert re.search(rf"^{step}\. ", text, re.M), f"step {step} missing:\n{text}"
    assert "Restore test passed" in text
    assert "Restore test FAILED, as it must" in text and "fails authentication" in text
    assert re.search(r"Case #\d+ opened, critical", text)
    assert 'opsagent_cases_open{severity="critical",status="open"} 1.0' in text
    assert "opsagent status says: CRITICAL: restore test failing" in text
    assert "opsagent status --config" in text and "opsagent cases list --config" in text
    assert "Traceback" not in out.stderr
    assert list(tmp_path.iterdir()) == [], "the demo left files behind"
    pid = int(re.search(r"Agent running \(pid (\d+)\)", text).group(1))  # type: ignore[union-attr]
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_demo_keep_leaves_a_directory_the_commands_work_on(tmp_path: Path) -> None:
    out = _demo(tmp_path, "--keep")
    assert out.returncode == 0, out.stdout + out.stderr
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("opsagent-demo-")]
    assert len(kept) == 1
    config = kept[0] / "config.yml"
    status = subprocess.run(
        [sys.executable, "-m", "agents", "status", "--json", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 1
    import json

    doc = json.loads(status.stdout)
    assert doc["restore_test"]["status"] == "failed"
    assert [c["severity"] for c in doc["cases"]] == ["critical"], "only the restore test case"
