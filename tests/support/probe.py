"""Run a snippet in a fresh interpreter and read back the JSON it prints: for facts about
what a process imports or builds, which the test's own process (already full of modules)
cannot show."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def run_probe(code: str) -> Any:
    """The JSON value the snippet prints last, run with only this checkout on the path."""
    ran = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO)},
        check=True,
    )
    return json.loads(ran.stdout)
