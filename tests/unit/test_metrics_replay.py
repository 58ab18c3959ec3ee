"""A restarted agent exports its last backup and restore test from the state database,
so an alert on backup age does not reset (or vanish) with the process."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry

from agents.results import CheckResult, Status
from agents.state import StateDB
from exporters.metrics import ResultMetrics


def _result(name: str, kind: str, status: Status, at: datetime, **details: object) -> CheckResult:
    return CheckResult(name, kind, "h", status, "x", details=details, started_at=at)


def test_replay_keeps_the_last_success_when_the_last_run_failed(tmp_path: Path) -> None:
    state = StateDB(tmp_path / "state.db")
    day = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
    state.record_result(_result("backup/docs", "backup_source", Status.OK, day, source="docs"))
    later = day + timedelta(days=1)
    state.record_result(
        _result("backup/docs", "backup_source", Status.FAILED, later, source="docs")
    )
    state.record_result(_result("backup/gone", "backup_source", Status.OK, day, source="gone"))
    state.record_result(
        _result("restore_test", "restore_test", Status.OK, day, steps=[], rto_seconds=12.5)
    )
    state.record_result(_result("web", "http", Status.FAILED, day))

    registry = CollectorRegistry()
    metrics = ResultMetrics(registry, "test")
    assert metrics.replay(state, sources=["docs"]) == 2
    value = registry.get_sample_value
    assert value("opsagent_backup_up", {"source": "docs"}) == 0
    assert value("opsagent_backup_last_success_timestamp_seconds", {"source": "docs"}) == (
        day.timestamp()
    )
    assert value("opsagent_backup_up", {"source": "gone"}) is None  # no longer configured
    assert value("opsagent_restore_test_up") == 1
    assert value("opsagent_restore_test_rto_seconds") == 12.5
    assert value("opsagent_job_last_success_timestamp_seconds", {"task": "restore_test"}) == (
        day.timestamp()
    )
    assert value("opsagent_check_up", {"check": "web", "kind": "http"}) is None  # reruns soon
    assert value("opsagent_job_runs_total", {"task": "restore_test", "status": "ok"}) is None
