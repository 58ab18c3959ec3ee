"""`opsagent status` reads "the agent cannot update cases" from the agent's upkeep in the
state database, never as a check: also from a database an older agent wrote."""

from __future__ import annotations

import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agents import state as state_module
from agents.config import load_config
from agents.results import CheckResult, Status
from agents.state import StateDB
from agents.status import collect

WAITING = "notifications wait: attempt to write a readonly database"


def _config(tmp_path: Path) -> Path:
    config = tmp_path / "config.yml"
    config.write_text(f"host: upkeep-host\nstate_dir: {tmp_path / 'state'}\n")
    return config


def _running(state: StateDB) -> None:
    state.record_daemon_start("test")
    state.set_meta("daemon_pid", str(os.getpid()))


def _older_agents_database(path: Path) -> None:
    """Schema 4: the outbox's run stored as any other row of the jobs table."""
    path.parent.mkdir(parents=True)
    db = sqlite3.connect(path, isolation_level=None)
    for version in (1, 2, 3, 4):
        db.executescript(state_module._MIGRATIONS[version])
    db.execute("INSERT INTO meta VALUES ('schema_version', '4')")
    outbox = CheckResult("cases", "outbox", "upkeep-host", Status.FAILED, WAITING)
    db.execute(
        "INSERT INTO jobs (name, kind, last_finish, last_status, last_result,"
        " consecutive_failures, status_since) VALUES (?, ?, ?, 'failed', ?, 3, ?)",
        (
            "cases",
            "outbox",
            "2026-12-01T00:00:00+00:00",
            outbox.to_json(),
            "2026-12-01T00:00:00+00:00",
        ),
    )
    db.close()


@pytest.mark.parametrize("older", [False, True])
def test_the_agent_that_cannot_update_cases_is_a_problem_not_a_check(
    tmp_path: Path, older: bool
) -> None:
    config = load_config(_config(tmp_path))
    if older:
        _older_agents_database(config.state_db)
    state = StateDB(config.state_db)
    _running(state)
    if not older:
        state.record_start("cases", "outbox", datetime.now(UTC), upkeep=True)
        state.record_upkeep(CheckResult("cases", "outbox", "upkeep-host", Status.FAILED, WAITING))
    doc = collect(config)
    assert [c.name for c in doc.checks] == []
    texts = [p.text for p in doc.problems]
    assert texts == [f"the agent cannot update cases: {WAITING}"]


def test_a_passing_outbox_is_no_problem(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path))
    state = StateDB(config.state_db)
    _running(state)
    state.record_upkeep(CheckResult("cases", "outbox", "upkeep-host", Status.OK, "0 new"))
    doc = collect(config)
    assert doc.ok and doc.checks == [] and doc.problems == []
