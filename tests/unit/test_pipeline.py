"""The results pipeline: a result goes in once; state, audit, cases and the textfile come
out, and the agent's upkeep stays out of the cases and the audit."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from agents.cases.store import CaseStore
from agents.config import Config, Schedule, parse_config
from agents.daemon import Daemon
from agents.jobs import Job
from agents.pipeline import Pipeline, record_outcome
from agents.results import CheckResult, Severity, Status
from agents.state import StateDB
from exporters.metrics import ResultMetrics


def _config(tmp_path: Path, extra: str = "") -> Config:
    return parse_config(f"host: h\nstate_dir: {tmp_path / 'state'}\n{extra}")


def _backup(status: Status) -> CheckResult:
    return CheckResult(
        name="backup",
        kind="backup",
        host="h",
        status=status,
        severity=Severity.CRITICAL,
        summary="s",
    )


def test_a_command_records_state_audit_cases_and_textfile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    target = tmp_path / "textfile" / "opsagent.prom"
    config = _config(tmp_path, f"exporter: {{textfile: {target}}}\n")
    record_outcome(config, [_backup(Status.FAILED)])
    state = StateDB(config.state_db)
    job = state.job("backup")
    assert job is not None and job.last_status == "failed"
    assert [(r.action, r.target, r.outcome) for r in state.audit_records()] == [
        ("backup", "backup", "failed")
    ]
    cases = CaseStore(config.cases_store).cases(status="open")
    assert [c.source for c in cases] == ["backup:backup"]
    assert 'opsagent_job_up{task="backup"} 0.0' in target.read_text()


def test_a_command_stands_when_the_case_store_is_down(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")
    config = _config(tmp_path, f"cases: {{store: 'sqlite:///{blocked}/cases.db'}}\n")
    with caplog.at_level(logging.WARNING, logger="opsagent"):
        record_outcome(config, [_backup(Status.FAILED), _backup(Status.FAILED)])
    said = [r.getMessage() for r in caplog.records if "cases not updated" in r.getMessage()]
    assert len(said) == 1
    job = StateDB(config.state_db).job("backup")
    assert job is not None and job.consecutive_failures == 2


def test_upkeep_is_stored_and_exported_but_is_no_result(tmp_path: Path) -> None:
    state = StateDB(tmp_path / "state.db")
    registry = CollectorRegistry()
    metrics = ResultMetrics(registry, "test")
    seen: list[CheckResult] = []
    started: list[str] = []
    pipeline = Pipeline(
        state, sinks=[seen.append], on_start=[started.append], upkeep_sinks=[metrics.observe]
    )

    def body(ctx: object) -> CheckResult:
        return CheckResult("cases", "outbox", "h", Status.FAILED, "notifications wait: x")

    job = Job("cases", "outbox", Schedule(every=timedelta(seconds=5)), body, upkeep=True)
    daemon = Daemon([job], state, "h", pipeline=pipeline)
    daemon._run_job_now(job)
    assert seen == [] and started == []
    record = state.job("cases")
    assert record is not None and record.last_status == "failed"
    assert [r.name for r in state.jobs()] == [] and [r.name for r in state.upkeep()] == ["cases"]
    assert (
        'opsagent_check_up{check="cases",kind="outbox"} 0.0' in generate_latest(registry).decode()
    )


def test_a_state_database_locked_past_the_wait_loses_no_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Another process held state.db's write lock past the wait: a job's start killed
    the daemon's job thread, and a backup already written was reported failed and never
    reached the cases (the attack's "never backed up here"). Now the job runs, every
    sink gets the result, and the state gets it, in order, once the lock is gone."""
    import sqlite3

    from agents import state as state_module

    monkeypatch.setattr(state_module, "BUSY_TIMEOUT", 0.2)
    path = tmp_path / "state.db"
    state = StateDB(path)
    seen: list[str] = []
    pipeline = Pipeline(state, sinks=[lambda r: seen.append(r.summary)])
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        pipeline.started("backup", "backup")  # no exception: the job runs
        first = CheckResult("backup", "backup", "h", Status.FAILED, "first")
        second = CheckResult("backup", "backup", "h", Status.OK, "second")
        pipeline.publish(first)
        pipeline.publish(second)
        assert seen == ["first", "second"]  # the sinks were not held back
        assert "result of backup not recorded in the state database yet" in caplog.text
    finally:
        holder.rollback()
        holder.close()
    assert state.job("backup") is None
    pipeline.publish(CheckResult("backup", "backup", "h", Status.OK, "third"))
    job = state.job("backup")
    assert job is not None and job.last_result is not None
    assert job.last_result.summary == "third" and job.last_status == "ok"
    assert job.consecutive_failures == 0
    history = sqlite3.connect(path).execute("SELECT COUNT(*) FROM runs").fetchone()
    assert history == (3,)  # the two that waited, then the third
    pipeline.finish()
    assert "lost" not in caplog.text


def test_a_timer_run_command_starts_while_the_state_database_is_locked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Run by a systemd timer, a command marks the timer's run in the state database
    first: with it locked, `backup run` exited 3 after its snapshot was written (the
    second attack). The mark is now a warning, and the command's result is kept."""
    import sqlite3

    from agents import state as state_module

    monkeypatch.setattr(state_module, "BUSY_TIMEOUT", 0.2)
    monkeypatch.setenv("INVOCATION_ID", "abc")
    monkeypatch.setenv("TRIGGER_UNIT", "opsagent-backup.timer")
    config = _config(tmp_path)
    StateDB(config.state_db)
    holder = sqlite3.connect(config.state_db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        pipeline = Pipeline.one_shot(config)
        pipeline.publish(_backup(Status.OK))
    finally:
        holder.rollback()
        holder.close()
    assert "run of timer opsagent-backup.timer not recorded" in caplog.text
    pipeline.finish()  # the lock gone: the result is written
    job = StateDB(config.state_db).job("backup")
    assert job is not None and job.last_status == "ok"
