"""The command line answers `--help` at once: building its help imports none of the heavy
libraries (pydantic's config models, rich, the SSH, S3 and PostgreSQL clients).

Issue #20: these cost most of a second on every command. Checked in a fresh interpreter,
since this test process has imported them all already. No timing here: see
bench/cli_startup.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

HEAVY = (
    "agents.config.models",
    "rich",
    "pydantic",
    "paramiko",
    "boto3",
    "psycopg",
    "prometheus_client",
)

PROBE = """
import contextlib, io, json, sys
import agents.cli
with contextlib.redirect_stdout(io.StringIO()) as out:
    try:
        agents.cli.cli.main(args={args!r}, prog_name="opsagent")
    except SystemExit as exc:
        assert exc.code == 0, exc.code
assert "Usage: opsagent" in out.getvalue(), out.getvalue()
print(json.dumps(sorted(sys.modules)))
"""


def _modules_after(probe: str) -> list[str]:
    """The modules a fresh interpreter holds after `probe`, which prints them as JSON."""
    ran = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    return json.loads(ran.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.parametrize("args", [["--help"], ["backup", "--help"], ["cases", "--help"]])
def test_help_imports_no_heavy_library(args: list[str]) -> None:
    loaded = _modules_after(PROBE.format(args=args))
    heavy = [m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert heavy == [], f"opsagent {' '.join(args)} imported {heavy}"


REPOSITORY_PROBE = """
import json, sys
from agents.config.loading import parse_config
from agents.backup.restore import run_restore
from agents.records import RestoreTestDetails
config = parse_config("backup: {{repository: {repo}, password_file: /dev/null}}")
RestoreTestDetails.model_validate({{}})  # a record's validator built, as every job does
print(json.dumps(sorted(sys.modules)))
"""


def test_a_repository_command_imports_no_package_metadata_nor_psutil(tmp_path: Path) -> None:
    # pydantic's plugin loader imports importlib.metadata (email, csv, zipfile: about
    # 2-5 MiB of every command) even with plugins disabled; psutil came only for the lock's
    # "is that process alive"
    loaded = set(_modules_after(REPOSITORY_PROBE.format(repo=tmp_path / "repo")))
    assert "pydantic" in loaded  # the probe did build models
    assert not loaded & {"importlib.metadata", "email", "psutil"}
