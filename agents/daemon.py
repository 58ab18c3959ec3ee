"""`opsagent run`: the scheduler that runs every configured job in its own worker thread.

Checks run at their intervals, backup / restore test / prune at a time of day in a
time zone (or every N). A job never overlaps itself, a slow job never delays the
others, each run's outcome goes through the results pipeline (`agents.pipeline`:
state, metrics, cases, heartbeats, audit), and a daily job whose last success is older
than its period plus grace runs at once at start-up, so a host that was down at 02:00
still gets its backup.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import TYPE_CHECKING, Any

import schedule as schedule_lib
from prometheus_client import CollectorRegistry

from agents.backup.heap import limit_arenas, memory_kept_for_job
from agents.cases.service import case_store, dispatcher
from agents.cases.sla import holidays_in_child
from agents.cases.store import CaseStore
from agents.config import Config, ExporterConfig, Schedule, secret_file_problems
from agents.errors import OpsagentError
from agents.jobs import Job, JobContext, build_jobs, register
from agents.pipeline import Pipeline, Sink, StartHook, agent_registry, prime_metrics
from agents.records.details import OutboxDetails
from agents.results import CheckResult, Severity, Status, run_guarded
from agents.state import StateDB
from exporters.alertmanager import PATH as INTAKE_PATH
from exporters.alertmanager import AlertmanagerIntake, intake_app
from exporters.http import ExporterServer, exporter_app
from exporters.metrics import ResultMetrics
from exporters.textfile import write_textfile

if TYPE_CHECKING:
    from agents.cases.notify import Dispatcher

log = logging.getLogger("opsagent.daemon")


@dataclass
class _Running:
    thread: threading.Thread
    started: float = field(default_factory=time.monotonic)


class Daemon:
    """Schedules jobs, runs each in a worker thread, hands every result to its pipeline."""

    def __init__(
        self,
        jobs: Iterable[Job],
        state: StateDB,
        host: str,
        sinks: Iterable[Sink] = (),
        shutdown_timeout: float = 30.0,
        on_start: Iterable[StartHook] = (),
        limits: dict[str, int] | None = None,
        pipeline: Pipeline | None = None,
    ) -> None:
        self.jobs = {job.name: job for job in jobs}
        self.state = state
        self.host = host
        # where the results go: the agent's pipeline, or the state and the sinks given
        self.pipeline = pipeline or Pipeline(state, sinks=sinks, on_start=on_start)
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
        try:
            self.state.record_daemon_start(version)
        except OpsagentError as exc:  # locked past the wait: the jobs matter more
            log.warning("daemon start not recorded: %s", exc)
        for job in self.jobs.values():
            register(self._scheduler, job.schedule).do(self.launch, job.name)
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
        # a repository's job moves its data through new buffers: memory kept meanwhile
        kept = memory_kept_for_job() if job.resource == "repository" else nullcontext()
        with self._resources[job.resource]:
            if not self.stop_event.is_set():
                with kept:
                    self._run_job_now(job)

    def _run_job_now(self, job: Job) -> None:
        context = JobContext(stop=self.stop_event, emit=self.pipeline.publish)
        self.pipeline.started(job.name, job.kind, upkeep=job.upkeep)
        result = run_guarded(job.name, job.kind, self.host, job.severity, lambda: job.body(context))
        if job.upkeep:
            self.pipeline.upkeep(result, keep_history=job.history)
        else:
            self.pipeline.publish(result, keep_history=job.history)
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

    def _shutdown(self) -> int:
        deadline = time.monotonic() + self.shutdown_timeout
        with self._lock:
            running = [(n, r.thread) for n, r in self._running.items() if r.thread.is_alive()]
        for name, thread in running:
            log.info("waiting for %s to stop", name)
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("%s did not stop within %.0fs", name, self.shutdown_timeout)
        try:
            self.state.record_daemon_stop()
        except OpsagentError as exc:
            log.warning("daemon stop not recorded: %s", exc)
        log.info("stopped")
        return 0


def textfile_job(config: Config, registry: CollectorRegistry) -> Job | None:
    """Write the exposition atomically to a .prom file for node_exporter's textfile collector."""
    target = config.exporter.textfile
    if target is None:
        return None

    def body(ctx: JobContext) -> CheckResult:
        write_textfile(target, registry)
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
        upkeep=True,
    )


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
            details=OutboxDetails(
                breaches=len(breaches), delivered=delivered, failed=failed, backlog=backlog
            ).to_details(),
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
        upkeep=True,
    )


def start_agent(config: Config, version: str) -> int:
    """`opsagent run`: state, exporter and scheduler wired together; returns the exit code."""
    limit_arenas()
    holidays_in_child()  # the first open case must not add 17 MB to the agent for good
    # a bad secret file disables only what uses it (a notifier's sends fail alone):
    # say so at start rather than first at the moment it is needed
    for problem in secret_file_problems(config):
        log.warning("%s; what uses it fails until this is fixed", problem)
    state = StateDB(config.state_db)
    registry = agent_registry(config, version)
    metrics = ResultMetrics(registry, version)
    store = case_store(config, lazy=True)  # the agent runs while the store is down
    deliver = dispatcher(config, store)
    pipeline = Pipeline.for_daemon(config, state, metrics, store, deliver)
    metrics.watch_cases(store, config.host, list(deliver.notifiers))
    jobs = [*build_jobs(config, state), cases_job(config, store, deliver)]
    prime_metrics(metrics, config, jobs, state)
    textfile = textfile_job(config, registry)
    if textfile is not None:
        jobs.append(textfile)
    intake = AlertmanagerIntake(store, config.cases, config.host)
    daemon = Daemon(
        jobs,
        state,
        config.host,
        pipeline=pipeline,
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
