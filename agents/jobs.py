"""The jobs a config declares (health checks, backup, restore test, prune, freshness) and
their schedules. The daemon runs them; the command line plans with them (`next_runs`)
and the pipeline primes the metrics with their staleness limits, without the daemon."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import schedule as schedule_lib

from agents.config import Config, Schedule
from agents.freshness import freshness, limit_of
from agents.monitor.checks import run_check
from agents.results import CheckResult, Severity, run_guarded
from agents.state import StateDB

Sink = Callable[[CheckResult], None]


@dataclass
class JobContext:
    """What a running job may use: a stop flag to honour and a way to emit extra results."""

    stop: threading.Event
    emit: Sink

    @property
    def stopping(self) -> bool:
        return self.stop.is_set()


@dataclass(frozen=True)
class Job:
    """One schedulable unit of work; `body` returns the job's own result."""

    name: str
    kind: str
    schedule: Schedule
    body: Callable[[JobContext], CheckResult]
    severity: Severity = Severity.MAJOR
    catch_up: bool = False
    run_at_start: bool = False
    history: bool = True
    # jobs naming the same resource run one after the other (backup, prune and
    # restore test all use the repository), so they wait instead of failing on its lock;
    # the repository's jobs keep freed memory while they run (`Daemon._run_job`)
    resource: str | None = None
    # the same failure again within this many seconds is logged at debug, not warning
    # (the notification pass every 5 s while the case store is down: one line a minute)
    quiet_repeats: float = 0.0
    # the agent's own upkeep (delivering notifications, writing the textfile), not a
    # check result: its run is stored, exported and logged, but opens no case, is not
    # audited and pings no heartbeat
    upkeep: bool = False


def register(scheduler: schedule_lib.Scheduler, when: Schedule) -> schedule_lib.Job:
    """The `schedule` library's entry for a schedule (every N, weekly, or daily at)."""
    if when.every is not None:
        return scheduler.every(when.every.total_seconds()).seconds
    if when.weekly_on is not None:
        assert when.at is not None
        return getattr(scheduler.every(), when.weekly_on).at(when.at, when.timezone)
    assert when.daily_at is not None
    return scheduler.every().day.at(when.daily_at, when.timezone)


def next_runs(jobs: Iterable[Job]) -> dict[str, datetime | None]:
    """When each job would next run if the daemon started now (for plans and status)."""
    scheduler = schedule_lib.Scheduler()
    out: dict[str, datetime | None] = {}
    for job in jobs:
        entry = register(scheduler, job.schedule).do(lambda: None)
        out[job.name] = entry.next_run.astimezone(UTC) if entry.next_run else None
    return out


def check_jobs(config: Config) -> list[Job]:
    """One job per configured health check, at the check's interval."""
    jobs = []
    for check in config.monitor.checks:
        jobs.append(
            Job(
                name=check.name,
                kind=check.kind,
                schedule=Schedule(every=check.interval),
                body=lambda ctx, check=check: run_check(check, config.host),
                severity=check.severity,
                run_at_start=True,
                history=False,
                resource="checks",
            )
        )
    return jobs


def backup_job(config: Config) -> Job | None:
    """The daily backup of every source; caught up at start when stale."""
    if config.backup is None or config.backup.schedule is None or not config.backup.sources:
        return None
    from agents.backup.runner import open_repository, run_backup, run_forget

    def body(ctx: JobContext) -> CheckResult:
        assert config.backup is not None
        # once for backup and forget: the key costs
        repo = open_repository(config.backup, config.state_dir)
        result = run_backup(config, emit=ctx.emit, should_stop=lambda: ctx.stopping, repo=repo)
        if result.ok and config.backup.retention is not None:
            forgotten = run_guarded(
                "forget",
                "forget",
                config.host,
                Severity.MAJOR,
                lambda: run_forget(config, repo=repo)[0],
            )
            ctx.emit(forgotten)
        return result

    return Job(
        name="backup",
        kind="backup",
        schedule=config.backup.schedule,
        body=body,
        severity=Severity.CRITICAL,
        catch_up=True,
        resource="repository",
    )


def prune_job(config: Config) -> Job | None:
    """Prune on its own (weekly by default) schedule."""
    if config.backup is None or config.backup.prune.schedule is None:
        return None
    from agents.backup.runner import run_prune

    return Job(
        name="prune",
        kind="prune",
        schedule=config.backup.prune.schedule,
        body=lambda ctx: run_prune(config),
        severity=Severity.MAJOR,
        catch_up=True,
        resource="repository",
    )


def restore_test_job(config: Config, state: StateDB | None = None) -> Job | None:
    """The scheduled restore test (daily by default), caught up at start when stale."""
    if config.backup is None or not config.backup.sources:
        return None
    from agents.config import RestoreTestConfig
    from agents.restore_test.runner import run_restore_test

    plan = config.restore_test or RestoreTestConfig()
    if plan.schedule is None:
        return None

    def body(ctx: JobContext) -> CheckResult:
        assert state is not None
        return run_restore_test(config, state, should_stop=lambda: ctx.stopping)

    return Job(
        name="restore_test",
        kind="restore_test",
        schedule=plan.schedule,
        body=body,
        severity=Severity.CRITICAL,
        catch_up=True,
        resource="repository",
    )


def freshness_job(watched: Job, state: StateDB, host: str) -> Job:
    """A built-in check: the watched job's last success is younger than period + grace,
    so a backup that silently never ran is noticed even though nothing errored."""
    limit = limit_of(watched.schedule)
    started = datetime.now(UTC)

    def body(ctx: JobContext) -> CheckResult:
        record = state.job(watched.name)
        last = record.last_success if record else None
        return freshness(watched.name, host, last, limit, started, datetime.now(UTC))

    return Job(
        name=f"{watched.name}-freshness",
        kind="job_freshness",
        schedule=Schedule(every=timedelta(minutes=1)),
        body=body,
        severity=Severity.CRITICAL,
        run_at_start=True,
        history=False,
    )


def build_jobs(config: Config, state: StateDB | None = None) -> list[Job]:
    """Every job the config declares: health checks, then the scheduled jobs."""
    jobs = check_jobs(config)
    for job in (backup_job(config), restore_test_job(config, state), prune_job(config)):
        if job is not None:
            jobs.append(job)
    if state is not None:
        watched = [j for j in jobs if j.kind in ("backup", "restore_test")]
        jobs += [freshness_job(j, state, config.host) for j in watched]
    return jobs
