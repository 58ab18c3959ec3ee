"""The state database carries its schema version: migrations run forward only, after a
copy of the old file, and an older agent refuses a newer database with a clear message."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agents import state as state_module
from agents.results import CheckResult, Status
from agents.state import SCHEMA_VERSION, StateDB, StateError


def _v2_database(path: Path) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    for version in (1, 2):
        db.executescript(state_module._MIGRATIONS[version])
    db.execute("INSERT INTO meta VALUES ('schema_version', '2')")
    db.execute(
        "INSERT INTO jobs (name, kind, last_finish, last_status, consecutive_failures)"
        " VALUES ('web', 'http', '2026-11-01T00:00:00+00:00', 'ok', 0)"
    )
    db.close()


def test_migration_runs_forward_after_a_copy_of_the_old_database(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    _v2_database(path)
    state = StateDB(path)
    assert state.meta("schema_version") == str(SCHEMA_VERSION)
    copy = tmp_path / "state.db.schema2.bak"
    assert copy.exists()
    old = sqlite3.connect(copy)
    assert old.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("2",)
    record = state.job("web")
    assert record is not None and record.status_since is not None  # backfilled
    state.record_result(CheckResult("web", "http", "h", Status.FAILED, "down"))
    failing_since = state.job("web").status_since  # type: ignore[union-attr]
    state.record_result(CheckResult("web", "http", "h", Status.FAILED, "still down"))
    assert state.job("web").status_since == failing_since  # type: ignore[union-attr]
    state.record_result(CheckResult("web", "http", "h", Status.OK, "up"))
    assert state.job("web").status_since != failing_since  # type: ignore[union-attr]


def test_upkeep_rows_of_an_older_agent_are_marked_and_kept_apart(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = sqlite3.connect(path, isolation_level=None)
    for version in (1, 2, 3, 4):
        db.executescript(state_module._MIGRATIONS[version])
    db.execute("INSERT INTO meta VALUES ('schema_version', '4')")
    for name, kind in (("web", "http"), ("cases", "outbox"), ("textfile", "textfile")):
        db.execute("INSERT INTO jobs (name, kind, last_status) VALUES (?, ?, 'ok')", (name, kind))
    db.close()
    state = StateDB(path)
    assert [r.name for r in state.jobs()] == ["web"]
    assert [r.name for r in state.upkeep()] == ["cases", "textfile"]
    state.record_start("cases", "outbox", datetime.now(UTC), upkeep=True)
    state.record_upkeep(CheckResult("cases", "outbox", "h", Status.FAILED, "notifications wait"))
    assert [r.name for r in state.jobs()] == ["web"]
    cases = state.job("cases")
    assert cases is not None and cases.last_status == "failed"


def test_an_older_agent_refuses_a_newer_database(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    StateDB(path)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    db.close()
    with pytest.raises(StateError, match="newer than this agent understands"):
        StateDB(path)
    config = tmp_path / "config.yml"
    config.write_text(f"state_dir: {tmp_path}\n")
    out = subprocess.run(
        [sys.executable, "-m", "agents", "status", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 3
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert "upgrade opsagent" in out.stderr


_RACER = """
import sys, time
from pathlib import Path
from agents.state import StateDB
start = Path(sys.argv[2])
while not start.exists():
    time.sleep(0.001)
StateDB(Path(sys.argv[1]))
"""


def test_agents_starting_together_create_one_database_without_error(tmp_path: Path) -> None:
    """Two agents on one state directory start at once: each may read the schema version
    before the other's migrations commit, then find a table made or a column added.
    Every one must open the database (the loser retries and reads the new version)."""
    for round_ in range(6):
        path = tmp_path / f"state{round_}.db"
        go = tmp_path / f"go{round_}"
        racers = [
            subprocess.Popen(
                [sys.executable, "-c", _RACER, str(path), str(go)],
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(6)
        ]
        go.touch()
        for racer in racers:
            _, err = racer.communicate(timeout=120)
            assert racer.returncode == 0, err
        assert StateDB(path).meta("schema_version") == str(SCHEMA_VERSION)


def test_a_database_locked_past_the_wait_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Another process holding the write lock past the busy wait makes every accessor
    raise StateError naming the database (never a raw sqlite3 error, a traceback at the
    command line), and an action already done (a case opened) is kept with a warning
    that its audit record was not written."""
    from agents import audit

    monkeypatch.setattr(state_module, "BUSY_TIMEOUT", 0.2)
    path = tmp_path / "state.db"
    db = StateDB(path)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # as a long write of another agent would
    try:
        with pytest.raises(StateError, match=f"^{path}: .*database is locked"):
            db.audit("ann", "case open", "disk full", "ok", {})
        with pytest.raises(StateError, match="database is locked"):
            db.set_meta("k", "v")
        done = []
        with audit.action(path, "case open", "disk full", severity="critical"):
            done.append("opened")
        assert done == ["opened"]
        assert "audit record not written (case open disk full)" in caplog.text
    finally:
        holder.rollback()
        holder.close()
    db.audit("ann", "case open", "disk full", "ok", {})  # the lock gone, written at once
    assert [r.action for r in db.audit_records()] == ["case open"]
