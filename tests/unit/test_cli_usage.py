"""Usage errors exit 2 with one line naming the option, before any work is done."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("subset", "why"),
    [
        ("0/7", "expected N/M with 1 <= N <= M, got 0/7"),
        ("150%", "percent must be in (0, 100], got 150%"),
        ("half", "expected a percent (10%) or a part (3/7), got half"),
    ],
)
def test_a_bad_read_data_subset_is_a_usage_error(tmp_path: Path, subset: str, why: str) -> None:
    ran = subprocess.run(
        [sys.executable, "-m", "agents", "backup", "check", "--read-data-subset", subset],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "OPSAGENT_CONFIG": str(tmp_path / "none.yml")},
    )
    assert ran.returncode == 2, ran.stderr
    assert f"Invalid value for '--read-data-subset': {why}" in ran.stderr
    assert "Traceback" not in ran.stderr
