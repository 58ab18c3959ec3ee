"""The order of `opsagent status` problems: opsagent's own first, then least SLA time left."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agents.results import Severity
from agents.status import Problem

NOW = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


def problem(text: str, severity: Severity, source: str, due_in_hours: float) -> Problem:
    return Problem(severity, text, None, source, due=NOW + timedelta(hours=due_in_hours))


def test_most_urgent_first() -> None:
    problems = [
        problem("major case, 2 business days left", Severity.MAJOR, "alertmanager:x", 20),
        problem("moderate check, overdue", Severity.MODERATE, "http:web", -1),
        problem("critical case, 3 h left", Severity.CRITICAL, "tcp:db", 3),
        problem("notifications failed", Severity.MAJOR, "notifications", 10),
        problem("major case, 3 h left", Severity.MAJOR, "alertmanager:y", 3),
        problem("store unreachable", Severity.CRITICAL, "cases", 4),
        problem("timer inactive", Severity.CRITICAL, "timer:opsagent-backup.timer", 4),
    ]
    assert [p.text for p in sorted(problems, key=Problem.rank)] == [
        # opsagent's own: until fixed the rest may be stale or nobody told; by severity
        "store unreachable",
        "timer inactive",
        "notifications failed",
        # then the SLA clock: overdue first, severity breaks a tie
        "moderate check, overdue",
        "critical case, 3 h left",
        "major case, 3 h left",
        "major case, 2 business days left",
    ]


def _timer_host_doc(active: bool | None) -> dict:  # type: ignore[type-arg]
    timers = [{"unit": "opsagent-backup.timer", "active": active, "state": "x"}]
    agent = {"mode": "timers", "running": False, "version": "0.1.0", "timers": timers}
    return {"agent": agent, "checks": [], "backups": [], "cases": [], "ok": True, "headline": ""}


def test_the_fleet_reads_a_timer_host_as_one() -> None:
    from agents.cli.fleet import _status_cells
    from agents.fleet.runner import HostResult
    from agents.fleet.upgrade import _health

    def health(doc: dict) -> str:  # type: ignore[type-arg]
        return _health(HostResult("h", "h", "ok", data=doc), "0.1.0")

    assert _status_cells(_timer_host_doc(True))[1] == "timers"
    assert _status_cells(_timer_host_doc(False))[1] == "[red]1 timer(s) inactive[/]"
    assert health(_timer_host_doc(True)) == health(_timer_host_doc(None)) == ""
    assert health(_timer_host_doc(False)) == "timers not active: opsagent-backup.timer"
    daemon_down = _timer_host_doc(True)
    daemon_down["agent"]["mode"] = "daemon"
    assert health(daemon_down) == "agent is not running"


def test_the_fleet_reads_what_it_can_of_a_foreign_status_document() -> None:
    """Another release's document, with fields of other types or none: the health check and
    the status cells read the rest, never a traceback (a fleet upgrade would stop half-way)."""
    from agents.cli.fleet import _status_cells
    from agents.fleet.runner import HostResult
    from agents.fleet.upgrade import _health

    def health(doc: object) -> str:
        return _health(HostResult("h", "h", "ok", data=doc), "0.1.0")

    base = {"agent": {"mode": "daemon", "running": True, "version": "0.1.0"}, "ok": True}
    failing = {**base, "checks": [{"name": "c1", "status": "failed", "since": 1700000000}]}
    assert health(failing) == "checks failing: c1"
    assert health({**base, "cases": {"open": 2}, "problems": None}) == ""
    wrong_version = {**base, "agent": {"running": True, "version": 2}}
    assert health(wrong_version) == "agent runs None, not 0.1.0"
    nameless = {**base, "checks": [{"status": "failed"}, {"name": "c2", "status": "failed"}]}
    assert health(nameless) == "checks failing: c2"
    assert health([1, 2]).startswith("no status")
    cells = _status_cells({**failing, "cases": {"open": 2}, "backups": "none"})
    assert cells[2] == "[red]1 failing[/]"
