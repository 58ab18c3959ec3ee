"""What a command leaves behind when it exits. The CLI ends without the interpreter's
final garbage collection (`agents.cli._no_collection_at_exit`); whatever that
collection used to close must be closed by the command itself."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path


def test_a_case_opened_by_a_command_is_in_the_case_database_file_itself(
    tmp_path: Path,
) -> None:
    """A restore test that fails (no repository) opens a case and exits: the SQLite case
    store is closed, so its WAL is checkpointed into cases.db and removed, and a copy
    of cases.db alone (a backup of the state directory that skips -wal) has the case."""
    key = tmp_path / "key"
    key.write_text("a password\n")
    key.chmod(0o600)
    state = tmp_path / "state"
    config = tmp_path / "config.yml"
    config.write_text(
        f"host: exit-test\nstate_dir: {state}\nbackup:\n"
        f"  repository: {tmp_path / 'missing-repo'}\n  password_file: {key}\n"
        f"  sources: [{{name: docs, kind: files, paths: ['{tmp_path}']}}]\n"
    )
    # whether a collection during the run frees the store first depends on the heap's
    # layout (the length of a path was enough): with none, the store is alive at exit
    cli = "import gc, sys; gc.disable(); from agents.cli import main; main(sys.argv[1:])"
    done = subprocess.run(
        [sys.executable, "-c", cli, "restore-test", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, "OPSAGENT_CONFIG": str(config)},
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    leftovers = sorted(p.name for p in state.iterdir() if p.name.startswith("cases.db"))
    assert leftovers == ["cases.db"]
    copy = tmp_path / "copy.db"
    copy.write_bytes((state / "cases.db").read_bytes())
    with sqlite3.connect(copy) as db:
        rows = db.execute("SELECT severity, status FROM cases").fetchall()
    assert rows == [("critical", "open")]
