"""Whether a scheduled job's last success is recent enough: younger than its period plus
grace. The daemon runs this as the built-in `<job>-freshness` check; `opsagent status`
applies it itself on a host whose jobs the systemd timers run, where no daemon does.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from agents.config import Config, RestoreTestConfig, Schedule
from agents.results import CheckResult, Severity, Status
from agents.units import format_duration


def freshness(
    job: str,
    host: str,
    last_success: datetime | None,
    limit: timedelta,
    since: datetime,
    now: datetime,
    began: str = "the agent started",
) -> CheckResult:
    """The `<job>-freshness` result: ok while the last success (before any, `since`, when
    watching `began`) is no older than `limit`, so a job that silently never ran is noticed."""
    age = now - (last_success or since)
    details = {
        "job": job,
        "limit_seconds": limit.total_seconds(),
        "age_seconds": round(age.total_seconds(), 1),
    }
    if age <= limit:
        summary = f"last success {format_duration(age)} ago" if last_success else "not due yet"
        status = Status.OK
    elif last_success is None:
        summary = f"no success in the {format_duration(age)} since {began}"
        status = Status.FAILED
    else:
        summary = f"last success {format_duration(age)} ago, over {format_duration(limit)}"
        status = Status.FAILED
    return CheckResult(
        name=f"{job}-freshness",
        kind="job_freshness",
        host=host,
        status=status,
        severity=Severity.CRITICAL,
        summary=summary,
        details=details,
    )


def watched_schedules(config: Config) -> dict[str, Schedule]:
    """The scheduled jobs whose freshness is watched (backup, restore test), by job name:
    the same ones the daemon schedules."""
    backup = config.backup
    if backup is None or not backup.sources:
        return {}
    watched = {}
    if backup.schedule is not None:
        watched["backup"] = backup.schedule
    plan = config.restore_test or RestoreTestConfig()
    if plan.schedule is not None:
        watched["restore_test"] = plan.schedule
    return watched


def limit_of(schedule: Schedule) -> timedelta:
    """How old a last success may be: one period and the grace."""
    return schedule.period + schedule.grace
