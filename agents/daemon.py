"""`opsagent run`: the scheduler that runs every configured job in its own worker thread.

Checks run at their intervals, backup / restore test / prune at a time of day in a
time zone (or every N). A job never overlaps itself, a slow job never delays the
others, each run's outcome goes to the state database and to the sinks (metrics,
cases), and a daily job whose last success is older than its period plus grace runs
at once at start-up, so a host that was down at 02:00 still gets its backup.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import TYPE_CHECKING, Any

import schedule as schedule_lib
from prometheus_client import CollectorRegistry

from agents.cases.rules import CaseRules, Thresholds
from agents.cases.service import case_store, dispatcher
from agents.cases.store import CaseStore
from agents.config import (
    Config,
    ExporterConfig,
    RestoreTestConfig,
    Schedule,
    secret_file_problems,
)
from agents.errors import OpsagentError
from agents.freshness import freshness, limit_of
from agents.monitor.checks import run_check
from agents.results import CheckResult, Severity, Status, run_guarded
from agents.state import StateDB
from exporters.alertmanager import PATH as INTAKE_PATH
from exporters.alertmanager import AlertmanagerIntake, intake_app
from exporters.http import ExporterServer, exporter_app
from exporters.metrics import ResultMetrics

if TYPE_CHECKING:
    from agents.cases.notify import Dispatcher

log = logging.getLogger("opsagent.daemon")

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
    # restore test all use the repository), so they wait instead of failing on its lock
    resource: str | None = None
    # the same failure again within this many seconds is logged at debug, not warning
    # (the notification pass every 5 s while the case store is down: one line a minute)
    quiet_repeats: float = 0.0


@dataclass
class _Running:
    thread: threading.Thread
    started: float = field(default_factory=time.monotonic)


class Daemon:
    """Schedules jobs, runs each in a worker thread, records and fans out results."""

    def __init__(
        self,
        jobs: Iterable[Job],
        state: StateDB,
        host: str,
        sinks: Iterable[Sink] = (),
        shutdown_timeout: float = 30.0,
        on_start: Iterable[Callable[[str], None]] = (),
        limits: dict[str, int] | None = None,
    ) -> None:
        self.jobs = {job.name: job for job in jobs}
        self.on_start = list(on_start)
        self.state = state
        self.host = host
        self.sinks = list(sinks)
        self.shutdown_timeout = shutdown_timeout
        self.stop_event = threading.Event()
        self._scheduler = schedule_lib.Scheduler()
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()
        # a resource admits one job at a time, or `limits[name]` (the checks' bounded pool)
        limits = limits or {}
        self._resources: dict[str, threading.Semaphore] = {
            j.resource: threading.BoundedSemaphore(limits.get(j.resource, 1))
            for j in self.jobs.values()
            if j.resource
        }
        self.skipped: dict[str, int] = {name: 0 for name in self.jobs}
        self._last_status: dict[str, Status] = {}
        self._said: dict[str, tuple[str, float]] = {}  # last failure warned of, and when

    # --- public ------------------------------------------------------------------------

    def run(self, version: str, install_signals: bool = True) -> int:
        """Run until SIGTERM/SIGINT (or `stop()`); returns the process exit code."""
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._on_signal)
        self.state.record_daemon_start(version)
        for job in self.jobs.values():
            _register(self._scheduler, job.schedule).do(self.launch, job.name)
        log.info("started with %d job(s)", len(self.jobs))
        for job in self.jobs.values():
            if job.run_at_start:
                self.launch(job.name)
        self.catch_up()
        while not self.stop_event.is_set():
            self._scheduler.run_pending()
            idle = self._scheduler.idle_seconds
            self.stop_event.wait(0.2 if idle is None else max(0.05, min(idle, 0.5)))
        return self._shutdown()

    def stop(self) -> None:
        self.stop_event.set()

    def launch(self, name: str) -> bool:
        """Start a job's run in a worker thread unless one is still running."""
        job = self.jobs[name]
        with self._lock:
            running = self._running.get(name)
            if running is not None and running.thread.is_alive():
                self.skipped[name] += 1
                log.warning(
                    "%s is still running after %.0fs; this run is skipped",
                    name,
                    time.monotonic() - running.started,
                )
                return False
            if self.stop_event.is_set():
                return False
            thread = threading.Thread(
                target=self._run_job, args=(job,), name=f"job-{name}", daemon=True
            )
            self._running[name] = _Running(thread)
            thread.start()
        return True

    def catch_up(self) -> list[str]:
        """Launch every catch-up job whose last success is older than period + grace."""
        now = datetime.now(UTC)
        launched = []
        for job in self.jobs.values():
            if not job.catch_up:
                continue
            state = self.state.job(job.name)
            last = state.last_success if state else None
            if last is None or now - last > job.schedule.period + job.schedule.grace:
                if last is None:
                    log.info("%s: never succeeded here; running now", job.name)
                else:
                    log.info("%s: last success %s is stale; running now", job.name, last)
                if self.launch(job.name):
                    launched.append(job.name)
        return launched

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no job is running (for tests and one-shot use)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                alive = [r for r in self._running.values() if r.thread.is_alive()]
            if not alive:
                return True
            time.sleep(0.02)
        return False

    # --- helpers -----------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        self.stop_event.set()

    def _run_job(self, job: Job) -> None:
        if job.resource is None:
            self._run_job_now(job)
            return
        with self._resources[job.resource]:
            if not self.stop_event.is_set():
                self._run_job_now(job)

    def _run_job_now(self, job: Job) -> None:
        context = JobContext(stop=self.stop_event, emit=self._publish)
        for hook in self.on_start:
            try:
                hook(job.name)
            except Exception:  # a start hook (heartbeat) never stops the job
                log.exception("start hook failed for %s", job.name)
        self.state.record_start(job.name, job.kind, datetime.now(UTC))
        result = run_guarded(job.name, job.kind, self.host, job.severity, lambda: job.body(context))
        self.state.record_result(result, keep_history=job.history)
        self._fan_out(result)
        # failures always; jobs with a history and status changes at info; a check that
        # passed again (every few seconds, all day) only at debug
        previous = self._last_status.get(job.name)
        self._last_status[job.name] = result.status
        now = time.monotonic()
        repeated = previous is result.status and self._said.get(job.name, ("", 0.0))[0] == (
            result.summary
        )
        if not result.ok and repeated and now - self._said[job.name][1] < job.quiet_repeats:
            level = logging.DEBUG
        elif not result.ok:
            level = logging.WARNING
            self._said[job.name] = (result.summary, now)
        elif job.history or previous is not result.status:
            level = logging.INFO
        else:
            level = logging.DEBUG
        log.log(
            level,
            "%s %s: %s (%.2fs)",
            job.name,
            result.status.value,
            result.summary,
            result.duration_seconds,
            extra={"job": job.name, "status": result.status.value},
        )

    def _publish(self, result: CheckResult) -> None:
        """Extra results a job emits (per-source backup results): stored and fanned out."""
        self.state.record_result(result)
        self._fan_out(result)

    def _fan_out(self, result: CheckResult) -> None:
        for sink in self.sinks:
            try:
                sink(result)
            except Exception:  # a broken sink must never break the job or the others
                log.exception("result sink %r failed for %s", sink, result.name)

    def _shutdown(self) -> int:
        deadline = time.monotonic() + self.shutdown_timeout
        with self._lock:
            running = [(n, r.thread) for n, r in self._running.items() if r.thread.is_alive()]
        for name, thread in running:
            log.info("waiting for %s to stop", name)
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("%s did not stop within %.0fs", name, self.shutdown_timeout)
        self.state.record_daemon_stop()
        log.info("stopped")
        return 0


def _register(scheduler: schedule_lib.Scheduler, when: Schedule) -> schedule_lib.Job:
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
        entry = _register(scheduler, job.schedule).do(lambda: None)
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
        repo = open_repository(config.backup)  # once for backup and forget: the key costs
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


def textfile_job(config: Config, registry: CollectorRegistry) -> Job | None:
    """Write the exposition atomically to a .prom file for node_exporter's textfile collector."""
    target = config.exporter.textfile
    if target is None:
        return None
    from prometheus_client import write_to_textfile

    def body(ctx: JobContext) -> CheckResult:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_to_textfile(str(target), registry)  # temp file + rename: never half written
        return CheckResult(
            name="textfile",
            kind="textfile",
            host=config.host,
            status=Status.OK,
            severity=Severity.MINOR,
            summary=str(target),
        )

    return Job(
        name="textfile",
        kind="textfile",
        schedule=Schedule(every=timedelta(seconds=15)),
        body=body,
        severity=Severity.MINOR,
        run_at_start=True,
        history=False,
        quiet_repeats=60.0,
    )


def prime_metrics(metrics: ResultMetrics, config: Config, jobs: list[Job], state: StateDB) -> None:
    """Staleness limits and RTO/RPO targets, then the last job results from the state
    database: what both the daemon's exporter and the timers' textfile start from."""
    metrics.describe_jobs(jobs, config.restore_test or RestoreTestConfig())
    metrics.replay(state, [s.name for s in config.backup.sources] if config.backup else [])


def write_textfile(config: Config, state: StateDB) -> None:
    """The job metrics of the state database as a .prom file, for node_exporter's textfile
    collector when no daemon serves them (the systemd timers' mode)."""
    from prometheus_client import write_to_textfile

    from agents import __version__

    assert config.exporter.textfile is not None
    registry = CollectorRegistry()
    metrics = ResultMetrics(registry, __version__)
    prime_metrics(metrics, config, build_jobs(config), state)
    config.exporter.textfile.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(config.exporter.textfile), registry)


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


def case_rules(config: Config, store: CaseStore | None = None) -> CaseRules:
    """The case sink, with each check's flapping thresholds."""
    thresholds = {
        c.name: Thresholds(c.failures_before_alert, c.recovery_threshold)
        for c in config.monitor.checks
    }
    return CaseRules(store or case_store(config), config.cases, thresholds)


def cases_job(config: Config, store: CaseStore, deliver: Dispatcher | None = None) -> Job:
    """Every few seconds: say which notifiers this agent has, record SLA breaches, then
    deliver due notifications."""
    deliver = deliver or dispatcher(config, store)

    def body(ctx: JobContext) -> CheckResult:
        now = datetime.now(UTC)
        try:
            deliver.register(now)
            breaches = store.record_breaches(now)
            for case, target in breaches:
                log.warning("case #%d missed its %s target", case.id, target)
            delivered, failed = deliver.run_once()
            backlog = store.outbox_backlog(deliver.notifiers)
        except OpsagentError as exc:  # the store is out: one line a minute (quiet_repeats)
            return CheckResult(
                name="cases",
                kind="outbox",
                host=config.host,
                status=Status.FAILED,
                severity=Severity.MINOR,
                summary=f"notifications wait: {exc}",
            )
        return CheckResult(
            name="cases",
            kind="outbox",
            host=config.host,
            status=Status.FAILED if failed else Status.OK,
            severity=Severity.MINOR,
            summary=f"{len(breaches)} new breach(es); notifications: {delivered} delivered,"
            f" {failed} failed, {backlog} waiting",
            details={
                "breaches": len(breaches),
                "delivered": delivered,
                "failed": failed,
                "backlog": backlog,
            },
        )

    return Job(
        name="cases",
        kind="outbox",
        schedule=Schedule(every=timedelta(seconds=5)),
        body=body,
        severity=Severity.MINOR,
        run_at_start=True,
        history=False,
        quiet_repeats=60.0,
    )


def agent_registry(config: Config, version: str) -> CollectorRegistry:
    """The exporter's registry: host metrics (at scrape time) and the agent's own process."""
    from prometheus_client import ProcessCollector

    from agents.monitor.host import HostCollector, SharedCollection

    registry = CollectorRegistry()
    if config.monitor.host_metrics:
        registry.register(SharedCollection(HostCollector(config.monitor.pseudo_fs_pattern)))
    ProcessCollector(namespace="opsagent", registry=registry)
    return registry


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas. glibc gives new threads arenas of their own (up to 8 per
    core); with a worker thread per job run, freed memory stays spread over them and the
    daemon's RSS climbs for hours before it levels off. Returns whether the cap was set."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-8, arenas))  # M_ARENA_MAX
    except (OSError, AttributeError):  # not glibc: nothing to do
        return False


def start_agent(config: Config, version: str) -> int:
    """`opsagent run`: state, exporter and scheduler wired together; returns the exit code."""
    limit_malloc_arenas()
    # a bad secret file disables only what uses it (a notifier's sends fail alone):
    # say so at start rather than first at the moment it is needed
    for problem in secret_file_problems(config):
        log.warning("%s; what uses it fails until this is fixed", problem)
    state = StateDB(config.state_db)
    registry = agent_registry(config, version)
    metrics = ResultMetrics(registry, version)
    store = case_store(config, lazy=True)  # the agent runs while the store is down
    deliver = dispatcher(config, store)
    rules = case_rules(config, store)
    rules.on_change = deliver.kick  # a new case is paged now, not at the next pass
    metrics.watch_cases(store, config.host, list(deliver.notifiers))
    jobs = [*build_jobs(config, state), cases_job(config, store, deliver)]
    prime_metrics(metrics, config, jobs, state)
    textfile = textfile_job(config, registry)
    if textfile is not None:
        jobs.append(textfile)
    intake = AlertmanagerIntake(store, config.cases, config.host)
    from agents.audit import result_sink
    from agents.cases.notify import Heartbeats

    beats = Heartbeats(config.cases.notify)
    daemon = Daemon(
        jobs,
        state,
        config.host,
        sinks=[metrics.observe, rules.observe, beats.finished, result_sink(config.state_db)],
        on_start=[beats.started],
        limits={"checks": config.monitor.max_parallel},
    )
    server = None
    if config.exporter.enabled:
        routes = {INTAKE_PATH: intake_app(intake), "/status": status_app(config)}
        app = exporter_app(registry, lambda: True, routes)
        tls = None
        web = None
        if config.exporter.web_config_file is not None:
            from exporters.webconfig import load_web_config, ssl_context, with_basic_auth

            web = load_web_config(config.exporter.web_config_file)
            app = with_basic_auth(app, web.basic_auth_users, open_paths=("/healthz",))
            tls = ssl_context(web.tls_server_config) if web.tls_server_config else None
        problem = exposure_problem(
            config.exporter, tls=tls is not None, basic_auth=bool(web and web.basic_auth_users)
        )
        if problem is not None:
            raise OpsagentError(problem)
        try:
            server = ExporterServer(config.exporter.host, config.exporter.port, app, tls).start()
        except OSError as exc:
            raise OpsagentError(
                f"exporter cannot listen on {config.exporter.listen}: {exc.strerror or exc}"
            ) from None
        scheme = "https" if tls else "http"
        host = config.exporter.host
        shown = f"[{host}]" if ":" in host else host
        log.info("exporter listening on %s://%s:%d/metrics", scheme, shown, server.port)
    try:
        return daemon.run(version)
    finally:
        if server is not None:
            server.stop()


def status_app(config: Config) -> Callable[..., Any]:
    """`/status`: the document of `opsagent status --json`, behind the exporter's auth."""
    import json

    from agents.status import collect

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET")])
            return [b""]
        try:
            body = json.dumps(collect(config).to_dict(), default=str).encode()
        except OpsagentError as exc:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [f"{exc}\n".encode()]
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]

    return app


def exposure_problem(exporter: ExporterConfig, tls: bool, basic_auth: bool) -> str | None:
    """Why the exporter must not start as configured (one line), or None. Beyond loopback
    it needs basic auth (the intake opens cases, /status tells about the host) and TLS
    (the password and the answers cross the network); `allow_plain_http` waives TLS."""
    if _loopback(exporter.host):
        return None
    where = f"exporter listens on {exporter.listen}, beyond loopback,"
    if not basic_auth:
        missing = "basic auth" if tls else "TLS and basic auth"
        keys = "basic_auth_users" if tls else "tls_server_config and basic_auth_users"
        return (
            f"{where} without {missing}: anyone could open cases through the Alertmanager"
            f" intake; set {keys} in exporter.web_config_file, or listen on 127.0.0.1"
        )
    if not tls and not exporter.allow_plain_http:
        return (
            f"{where} without TLS: the basic auth password would cross the network in clear;"
            " set tls_server_config in exporter.web_config_file, or exporter.allow_plain_http:"
            " true to accept that"
        )
    return None


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
