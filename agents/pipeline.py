"""The results pipeline: where every result goes, once.

A result (a check, a backup or one of its sources, a restore test, a prune) goes in; the
state database, the audit log, the case rules (and the notifications they queue), the
metrics or the node_exporter textfile and the heartbeats come out. The daemon builds one
for its life (`Pipeline.for_daemon`: a lazy case store, its dispatcher kicked on every
case change); a one-shot command, the demo and the systemd timers' jobs build one per
command (`Pipeline.one_shot`: the store opened when needed, what was queued delivered at
the end, the textfile rewritten from the state database).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from agents.audit import result_sink, whoami
from agents.cases.service import case_rules, case_store, deliver_now
from agents.config import Config, RestoreTestConfig
from agents.errors import OpsagentError
from agents.jobs import Job, build_jobs
from agents.results import CheckResult
from agents.state import StateDB
from agents.timers import timer_unit
from exporters.metrics import ResultMetrics
from exporters.textfile import write_textfile

if TYPE_CHECKING:
    from agents.cases.notify import Dispatcher
    from agents.cases.rules import CaseRules
    from agents.cases.store import CaseStore

# the fan-out's own lines keep the logger name they have always had
log = logging.getLogger("opsagent.daemon")

_UNWRITTEN_KEPT = 1000  # results kept for the state database while it refuses them
Sink = Callable[[CheckResult], None]
StartHook = Callable[[str], None]


class Pipeline:
    """The state database, then every sink in order; a broken sink (or start hook) is
    logged and never breaks the job or the other sinks. `finish` runs what a one-shot
    command does after its last result."""

    def __init__(
        self,
        state: StateDB,
        sinks: Iterable[Sink] = (),
        on_start: Iterable[StartHook] = (),
        on_finish: Iterable[Callable[[], None]] = (),
        upkeep_sinks: Iterable[Sink] = (),
    ) -> None:
        self.state = state
        self.sinks = list(sinks)
        self.on_start = list(on_start)
        self.on_finish = list(on_finish)
        # where the agent's upkeep runs go besides the state database: the metrics only
        self.upkeep_sinks = list(upkeep_sinks)
        # results the state database refused, oldest first, with the job's name
        self._unwritten: list[tuple[Callable[[], None], str]] = []
        self._queue_lock = threading.Lock()
        self._writing = threading.Lock()  # held by the thread writing them

    @classmethod
    def for_daemon(
        cls,
        config: Config,
        state: StateDB,
        metrics: ResultMetrics,
        store: CaseStore,
        deliver: Dispatcher,
    ) -> Pipeline:
        """The daemon's pipeline: metrics, cases (a new case is paged now, not at the
        next delivery pass), heartbeats and the audit of the jobs that change data."""
        from agents.cases.notify import Heartbeats

        rules = case_rules(config, store)
        rules.on_change = deliver.kick
        beats = Heartbeats(config.cases.notify)
        return cls(
            state,
            sinks=[metrics.observe, rules.observe, beats.finished, result_sink(config.state_db)],
            on_start=[beats.started],
            upkeep_sinks=[metrics.observe],
        )

    @classmethod
    def one_shot(cls, config: Config) -> Pipeline:
        """A command's pipeline: results stored as the daemon would store them (with the
        systemd timer that ran the command, if one did), audited under the person who
        ran it, applied to the cases (a failed backup from a timer opens its case too);
        at `finish`, what was queued is delivered (a host run by timers has no daemon)
        and the textfile for node_exporter is rewritten when `exporter.textfile` is set.
        Heartbeats are pinged with each job's outcome, so a host run by the timers tells
        the outside service it still runs its jobs (the command records no start)."""
        from agents.cases.notify import Heartbeats

        state = StateDB(config.state_db)
        timer = timer_unit()
        if timer is not None:  # how `opsagent status` knows the timers, not a daemon, run jobs
            try:
                state.record_timer_run(timer, datetime.now(UTC))
            except OpsagentError as exc:  # the job matters more than this mark
                log.warning("run of timer %s not recorded: %s", timer, exc)
        cases = _CommandCases(config)
        finish: list[Callable[[], None]] = [cases.deliver]
        if config.exporter.textfile is not None:
            finish.append(lambda: write_job_textfile(config, state))
        beats = Heartbeats(config.cases.notify)
        return cls(
            state,
            sinks=[result_sink(config.state_db, whoami()), cases.observe, beats.finished],
            on_finish=finish,
        )

    def started(self, job: str, kind: str, upkeep: bool = False) -> None:
        """A job starts: the start hooks (heartbeats; not for the agent's upkeep), then its
        start in the state database."""
        for hook in () if upkeep else self.on_start:
            try:
                hook(job)
            except Exception:  # a start hook (heartbeat) never stops the job
                log.exception("start hook failed for %s", job)
        try:
            self.state.record_start(job, kind, datetime.now(UTC), upkeep=upkeep)
        except OpsagentError as exc:  # the job runs all the same; its result is what counts
            log.warning("start of %s not recorded: %s", job, exc)

    def publish(self, result: CheckResult, keep_history: bool = True) -> None:
        """One result: into the state database, then out to every sink. A state database
        that cannot be written (locked past the wait, read-only, full) costs a warning,
        never the job's outcome or the other sinks (a backup already written must still
        reach the cases and the metrics); the result is kept and written before the
        next one (`_record`)."""
        self._record(
            lambda: self.state.record_result(result, keep_history=keep_history), result.name
        )
        self._fan_out(result, self.sinks)

    def upkeep(self, run: CheckResult, keep_history: bool = False) -> None:
        """A run of the agent's own upkeep: into the state database as upkeep, not as a
        result (`status` reads the notification pass from there), and the metrics; never
        to the cases or the audit."""
        self._record(lambda: self.state.record_upkeep(run, keep_history=keep_history), run.name)
        self._fan_out(run, self.upkeep_sinks)

    def _record(self, write: Callable[[], None], name: str) -> None:
        """Write a result to the state database after those that could not be written
        yet, in their order (the daemon's next result retries them; a command that ends
        first loses them, and says so)."""
        with self._queue_lock:
            self._unwritten.append((write, name))
        self._flush()

    def _flush(self) -> None:
        """Write what waits, oldest first, on one thread at a time: a job thread that
        finds another one writing leaves its result to it (while the database is
        locked, the daemon's jobs do not queue up behind each other's 30-second waits)."""
        while self._writing.acquire(blocking=False):
            try:
                written = self._write_waiting()
            finally:
                self._writing.release()
            with self._queue_lock:
                if not written or not self._unwritten:  # else one came while releasing
                    return

    def _write_waiting(self) -> bool:
        while True:
            with self._queue_lock:
                if not self._unwritten:
                    return True
                retry, name = self._unwritten[0]
            try:
                retry()
            except OpsagentError as exc:
                with self._queue_lock:
                    del self._unwritten[:-_UNWRITTEN_KEPT]
                log.warning("result of %s not recorded in the state database yet: %s", name, exc)
                return False
            with self._queue_lock:
                self._unwritten.pop(0)

    @staticmethod
    def _fan_out(result: CheckResult, sinks: Iterable[Sink]) -> None:
        for sink in sinks:
            try:
                sink(result)
            except Exception:  # a broken sink must never break the job or the others
                log.exception("result sink %r failed for %s", sink, result.name)

    def record(self, results: Iterable[CheckResult]) -> None:
        """A command's results, one after the other, then `finish`."""
        for result in results:
            self.publish(result)
        self.finish()

    def finish(self) -> None:
        """What comes after the last result of a command (deliveries, the textfile)."""
        self._flush()  # a last try
        for name in dict.fromkeys(name for _, name in self._unwritten):
            log.warning("result of %s lost: the state database could not be written", name)
        for step in self.on_finish:
            step()


class _CommandCases:
    """A command's case sink: the store is opened at the first result; when it cannot be
    used, one line says so and the command's outcome (and exit code) stands."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.rules: CaseRules | None = None
        self.failed = False

    def _open(self) -> CaseRules | None:
        if self.rules is None and not self.failed:
            try:
                self.rules = case_rules(self.config, case_store(self.config))
            except OpsagentError as exc:
                self._give_up(exc)
        return self.rules

    def _give_up(self, exc: OpsagentError) -> None:
        self.failed, self.rules = True, None
        logging.getLogger("opsagent").warning("cases not updated: %s", exc)

    def observe(self, result: CheckResult) -> None:
        rules = self._open()
        if rules is None:
            return
        try:
            rules.observe(result)
        except OpsagentError as exc:
            self._give_up(exc)

    def deliver(self) -> None:
        """A host run by timers has no daemon: the command delivers what it queued."""
        rules = self._open()
        if rules is None:
            return
        try:
            deliver_now(self.config, rules.store)
        except OpsagentError as exc:
            self._give_up(exc)


def record_outcome(config: Config, results: list[CheckResult]) -> None:
    """Store a command's job results as the daemon would (see `Pipeline.one_shot`)."""
    Pipeline.one_shot(config).record(results)


def prime_metrics(metrics: ResultMetrics, config: Config, jobs: list[Job], state: StateDB) -> None:
    """Staleness limits and RTO/RPO targets, then the last job results from the state
    database: what both the daemon's exporter and the timers' textfile start from."""
    metrics.describe_jobs(jobs, config.restore_test or RestoreTestConfig())
    metrics.replay(state, [s.name for s in config.backup.sources] if config.backup else [])


def write_job_textfile(config: Config, state: StateDB) -> None:
    """The job metrics of the state database as a .prom file, for node_exporter's textfile
    collector when no daemon serves them (the systemd timers' mode)."""
    from agents import __version__

    assert config.exporter.textfile is not None
    registry = CollectorRegistry()
    metrics = ResultMetrics(registry, __version__)
    prime_metrics(metrics, config, build_jobs(config), state)
    write_textfile(config.exporter.textfile, registry)


def agent_registry(config: Config, version: str) -> CollectorRegistry:
    """The exporter's registry: host metrics (at scrape time) and the agent's own process."""
    from prometheus_client import ProcessCollector

    from agents.monitor.host import HostCollector
    from exporters.cache import SharedCollection

    registry = CollectorRegistry()
    if config.monitor.host_metrics:
        registry.register(SharedCollection(HostCollector(config.monitor.pseudo_fs_pattern)))
    ProcessCollector(namespace="opsagent", registry=registry)
    return registry
