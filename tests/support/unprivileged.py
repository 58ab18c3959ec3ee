"""Run the CLI as an unprivileged user from a suite that runs as root.

The service runs as a user of its own, and what that user cannot read is exactly what
these tests are about; root reads everything. The test interpreter may live where that
user cannot go (a pyenv under /root), so a system interpreter of the same version with
the test environment's packages on PYTHONPATH stands in for it.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

NOBODY = 65534
REPO = Path(__file__).resolve().parents[2]


def interpreter(uid: int = NOBODY) -> tuple[str, dict[str, str]] | None:
    """(python, environment) that `uid` can run with the agent importable; None if none."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/",
        "LANG": "C.UTF-8",
        "PYTHONPATH": os.pathsep.join([str(REPO), *site.getsitepackages()]),
    }
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (sys.executable, shutil.which(version, path="/usr/local/bin:/usr/bin")):
        if candidate and _runs(candidate, env, uid):
            return candidate, env
    return None


def _runs(python: str, env: dict[str, str], uid: int) -> bool:
    try:
        proc = subprocess.run(
            [python, "-c", "import agents.cli"],
            env=env,
            user=uid,
            group=uid,
            extra_groups=[],
            cwd="/",
            capture_output=True,
            timeout=60,
        )
    except OSError:
        return False
    return proc.returncode == 0


def runner_or_skip(uid: int = NOBODY) -> tuple[str, dict[str, str]]:
    """`interpreter(uid)`, or the test skipped: not root, or no interpreter `uid` runs."""
    import pytest

    if os.geteuid() != 0:
        pytest.skip("needs root to run as another user")
    runner = interpreter(uid)
    if runner is None:
        pytest.skip("no interpreter the unprivileged user can run")
    return runner


def run(
    runner: tuple[str, dict[str, str]], args: list[str], timeout: float = 60, uid: int = NOBODY
) -> subprocess.CompletedProcess[str]:
    """`python ARGS` as `uid` (its own group, no others) from /, output captured as text."""
    python, env = runner
    return subprocess.run(
        [python, *args],
        env=env,
        user=uid,
        group=uid,
        extra_groups=[],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=timeout,
    )
