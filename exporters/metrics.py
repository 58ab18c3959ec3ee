"""Metrics for results: every CheckResult updates the gauges and counters Prometheus scrapes.

Names follow Prometheus conventions (base units, `_total`, `_seconds`, `_bytes`) and
carry no `host` label: Prometheus adds `instance`. Labels are few and bounded (the
check or job name, from the config). A job's name is the `task` label, since Prometheus
owns `job` (the scrape job) and would rename ours to `exported_job`.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Info, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from agents.errors import OpsagentError
from agents.records import (
    JOB_KINDS,
    BackupDetails,
    BackupSourceDetails,
    ForgetDetails,
    HttpDetails,
    PruneDetails,
    RestoreTestDetails,
    details_of,
)
from agents.results import CheckResult, Severity

# `*_created` series double the counters' series for a timestamp nobody queries
disable_created_metrics()

SLA_WINDOW = timedelta(days=30)
_QUANTILES = ["severity", "quantile"]


class ResultMetrics:
    """Holds the result metrics of one registry; `observe` is the daemon's sink."""

    def __init__(self, registry: CollectorRegistry, version: str) -> None:
        self.registry = registry
        build = Info("opsagent_build", "opsagent build information.", registry=registry)
        build.info({"version": version, "python": platform.python_version()})
        self._failures: dict[str, int] = {}
        # the families in the order they have always been registered (and exposed)
        self._check_families(registry)
        self._job_families(registry)
        self._backup_families(registry)
        self._repository_families(registry)
        self._retention_families(registry)
        self._restore_test_families(registry)

    def _check_families(self, registry: CollectorRegistry) -> None:
        """The checks: up, duration, failures in a row, last run, and the figures some
        kinds report (certificate days, disk forecast, process CPU and memory)."""
        self.check_up = Gauge(
            "opsagent_check_up",
            "1 when the check's last run passed, 0 when it failed or errored.",
            ["check", "kind"],
            registry=registry,
        )
        self.check_duration = Gauge(
            "opsagent_check_duration_seconds",
            "Duration of the check's last run.",
            ["check"],
            registry=registry,
        )
        self.check_failures = Gauge(
            "opsagent_check_consecutive_failures",
            "Failed runs of the check in a row (0 after a pass).",
            ["check"],
            registry=registry,
        )
        self.check_cert_days = Gauge(
            "opsagent_check_certificate_days_left",
            "Days until the TLS certificate an http check saw expires.",
            ["check"],
            registry=registry,
        )
        self.check_detail = {
            "hours_to_full": Gauge(
                "opsagent_check_disk_hours_to_full",
                "Hours until the disk is full at the current rate (linear forecast).",
                ["check"],
                registry=registry,
            ),
            "cpu_seconds": Gauge(
                "opsagent_check_process_cpu_seconds",
                "CPU time used by the processes a process check matched.",
                ["check"],
                registry=registry,
            ),
            "rss_bytes": Gauge(
                "opsagent_check_process_resident_memory_bytes",
                "Resident memory of the processes a process check matched.",
                ["check"],
                registry=registry,
            ),
        }
        self.check_last_run = Gauge(
            "opsagent_check_last_run_timestamp_seconds",
            "When the check last ran (Unix time).",
            ["check"],
            registry=registry,
        )

    def _job_families(self, registry: CollectorRegistry) -> None:
        """The scheduled jobs: up, duration, last run and success, staleness limit, runs."""
        self.job_up = Gauge(
            "opsagent_job_up",
            "1 when the job's last run succeeded.",
            ["task"],
            registry=registry,
        )
        self.job_duration = Gauge(
            "opsagent_job_duration_seconds",
            "Duration of the job's last run.",
            ["task"],
            registry=registry,
        )
        self.job_last_run = Gauge(
            "opsagent_job_last_run_timestamp_seconds",
            "When the job last finished (Unix time).",
            ["task"],
            registry=registry,
        )
        self.job_last_success = Gauge(
            "opsagent_job_last_success_timestamp_seconds",
            "When the job last succeeded (Unix time).",
            ["task"],
            registry=registry,
        )
        self.job_stale_after = Gauge(
            "opsagent_job_stale_after_seconds",
            "The job's period plus grace: a last success older than this is stale.",
            ["task"],
            registry=registry,
        )
        self.job_runs = Counter(
            "opsagent_job_runs",
            "Job runs by outcome.",
            ["task", "status"],
            registry=registry,
        )

    def _backup_families(self, registry: CollectorRegistry) -> None:
        """Each source's last backup: up, last success, duration, sizes and files."""
        self.backup_up = Gauge(
            "opsagent_backup_up",
            "1 when the source's last backup succeeded.",
            ["source"],
            registry=registry,
        )
        self.backup_last_success = Gauge(
            "opsagent_backup_last_success_timestamp_seconds",
            "When the source was last backed up successfully (Unix time).",
            ["source"],
            registry=registry,
        )
        self.backup_duration = Gauge(
            "opsagent_backup_duration_seconds",
            "Duration of the source's last backup.",
            ["source"],
            registry=registry,
        )
        self.backup_size = Gauge(
            "opsagent_backup_last_size_bytes",
            "Bytes in the source's last snapshot (before dedup and compression).",
            ["source"],
            registry=registry,
        )
        self.backup_added = Gauge(
            "opsagent_backup_last_added_bytes",
            "New bytes the source's last backup added to the repository (before compression).",
            ["source"],
            registry=registry,
        )
        self.backup_read = Gauge(
            "opsagent_backup_last_read_bytes",
            "Bytes the source's last backup read (unchanged files are not read again).",
            ["source"],
            registry=registry,
        )
        self.backup_stored = Gauge(
            "opsagent_backup_last_stored_bytes",
            "Bytes the source's last backup stored (compressed and encrypted).",
            ["source"],
            registry=registry,
        )
        self.backup_files = Gauge(
            "opsagent_backup_last_files",
            "Files in the source's last snapshot.",
            ["source"],
            registry=registry,
        )

    def _repository_families(self, registry: CollectorRegistry) -> None:
        """The repository after the last backup: snapshots, stored and logical bytes."""
        self.repository_snapshots = Gauge(
            "opsagent_repository_snapshots",
            "Snapshots in the repository after the last backup.",
            registry=registry,
        )
        self.repository_size = Gauge(
            "opsagent_repository_size_bytes",
            "Bytes of pack data stored in the repository after the last backup.",
            registry=registry,
        )

        self.repository_logical = Gauge(
            "opsagent_repository_logical_bytes",
            "Bytes in all snapshots before dedup and compression, after the last backup.",
            registry=registry,
        )

    def _retention_families(self, registry: CollectorRegistry) -> None:
        """The last forget and prune: snapshots kept and removed, bytes reclaimed."""
        self.forget_kept = Gauge(
            "opsagent_forget_snapshots_kept",
            "Snapshots the retention policy kept at its last run.",
            registry=registry,
        )
        self.forget_removed = Gauge(
            "opsagent_forget_snapshots_removed",
            "Snapshots the retention policy removed at its last run.",
            registry=registry,
        )
        self.prune_reclaimed = Gauge(
            "opsagent_prune_last_reclaimed_bytes",
            "Bytes the last prune reclaimed.",
            registry=registry,
        )

    def _restore_test_families(self, registry: CollectorRegistry) -> None:
        """The last restore test: up, last success, RTO and RPO with targets, steps, coverage."""
        self.restore_up = Gauge(
            "opsagent_restore_test_up", "1 when the last restore test passed.", registry=registry
        )
        self.restore_last_success = Gauge(
            "opsagent_restore_test_last_success_timestamp_seconds",
            "When a restore test last passed (Unix time).",
            registry=registry,
        )
        self.restore_rto = Gauge(
            "opsagent_restore_test_rto_seconds",
            "Time the last restore test took from first byte downloaded to verified restore.",
            registry=registry,
        )
        self.restore_rpo = Gauge(
            "opsagent_restore_test_rpo_seconds",
            "Age of the newest snapshot at the last restore test.",
            registry=registry,
        )
        self.restore_step = Gauge(
            "opsagent_restore_test_step_duration_seconds",
            "Duration of each step of the last restore test (summed per step name).",
            ["step"],
            registry=registry,
        )
        self.restore_rto_target = Gauge(
            "opsagent_restore_test_rto_target_seconds",
            "The configured max_rto (absent when none is set).",
            registry=registry,
        )
        self.restore_rpo_target = Gauge(
            "opsagent_restore_test_rpo_target_seconds",
            "The configured max_rpo (absent when none is set).",
            registry=registry,
        )
        self.restore_coverage = Gauge(
            "opsagent_restore_test_data_coverage_ratio",
            "Share of packs whose data was verified within the full_every window.",
            registry=registry,
        )

    def describe_jobs(self, jobs: Iterable[Any], plan: Any = None) -> None:
        """Export each scheduled job's staleness limit and the restore test's targets,
        which the alerting rules compare the last success, RTO and RPO with."""
        for job in jobs:
            if job.catch_up:
                limit = job.schedule.period + job.schedule.grace
                self.job_stale_after.labels(job.name).set(limit.total_seconds())
        for target, gauge in (
            (getattr(plan, "max_rto", None), self.restore_rto_target),
            (getattr(plan, "max_rpo", None), self.restore_rpo_target),
        ):
            if target is not None:
                gauge.set(target.total_seconds())
            else:  # unlabelled gauges start at 0, which would read as a target of 0 s
                self.registry.unregister(gauge)

    def replay(self, state: Any, sources: Iterable[str] = ()) -> int:
        """Set the gauges from the state database's last job results, so a restarted agent
        still exports its last backup and restore test (an alert on backup age must not
        reset with the process). Checks rerun within seconds and are not replayed, nor are
        sources no longer configured; counters are left alone. Returns results replayed."""
        wanted = set(sources)
        replayed = 0
        for record in state.jobs():
            result = record.last_result
            if result is None or result.kind not in JOB_KINDS:
                continue
            if (
                result.kind == "backup_source"
                and BackupSourceDetails.of(result).source not in wanted
            ):
                continue
            self.observe(result, count=False)
            replayed += 1
            if record.last_success is None or result.ok:
                continue
            when = record.last_success.timestamp()  # the last result failed: keep the success
            if result.kind == "backup_source":
                self.backup_last_success.labels(_source(result)).set(when)
            elif result.kind == "restore_test":
                self.restore_last_success.set(when)
                self.job_last_success.labels(result.name).set(when)
            elif result.kind in JOB_KINDS:
                self.job_last_success.labels(result.name).set(when)
        return replayed

    def watch_cases(self, store: Any, agent: str = "", notifiers: list[str] | None = None) -> None:
        """Export open cases by severity and this agent's notifications, read from the
        store at scrape time."""
        from exporters.cache import SharedCollection

        # one case-store read per second however many scrapes arrive at once
        self.registry.register(SharedCollection(_OpenCases(store, agent, notifiers or [])))

    def observe(self, result: CheckResult, count: bool = True) -> None:
        finished = result.started_at.timestamp() + result.duration_seconds
        if result.kind == "backup_source":
            self._observe_backup_source(result, finished)
            return
        if result.kind == "backup":
            backup = BackupDetails.of(result)
            if backup.snapshots is not None:
                self.repository_snapshots.set(backup.snapshots)
                self.repository_size.set(backup.repository_bytes or 0)
                self.repository_logical.set(backup.logical_bytes or 0)
        if result.kind == "restore_test":
            tested = RestoreTestDetails.of(result)
            if tested.steps is not None:
                self._observe_restore_test(result, tested, finished)
        if result.kind == "forget" and result.ok:
            forget = ForgetDetails.of(result)
            self.forget_kept.set(forget.kept or 0)
            self.forget_removed.set(forget.removed or 0)
        if result.kind == "prune" and result.ok:
            self.prune_reclaimed.set(PruneDetails.of(result).bytes_reclaimed or 0)
        if result.kind in JOB_KINDS:
            self.job_up.labels(result.name).set(1 if result.ok else 0)
            self.job_duration.labels(result.name).set(result.duration_seconds)
            self.job_last_run.labels(result.name).set(finished)
            if result.ok:
                self.job_last_success.labels(result.name).set(finished)
            if count:
                self.job_runs.labels(result.name, result.status.value).inc()
            return
        self.check_up.labels(result.name, result.kind).set(1 if result.ok else 0)
        self.check_duration.labels(result.name).set(result.duration_seconds)
        self.check_last_run.labels(result.name).set(finished)
        streak = 0 if result.ok else self._failures.get(result.name, 0) + 1
        self._failures[result.name] = streak
        self.check_failures.labels(result.name).set(streak)
        details = details_of(result)
        if isinstance(details, HttpDetails) and details.cert_days_left is not None:
            self.check_cert_days.labels(result.name).set(details.cert_days_left)
        for field, gauge in self.check_detail.items():
            value = getattr(details, field, None)
            if value is not None:
                gauge.labels(result.name).set(value)

    def _observe_backup_source(self, result: CheckResult, finished: float) -> None:
        source = _source(result)
        self.backup_up.labels(source).set(1 if result.ok else 0)
        self.backup_duration.labels(source).set(result.duration_seconds)
        if not result.ok:
            return
        self.backup_last_success.labels(source).set(finished)
        stats = BackupSourceDetails.of(result)
        self.backup_size.labels(source).set(stats.bytes or 0)
        self.backup_added.labels(source).set(stats.bytes_added or 0)
        self.backup_read.labels(source).set(stats.bytes_read or 0)
        self.backup_stored.labels(source).set(stats.bytes_stored or 0)
        self.backup_files.labels(source).set(stats.files or 0)

    def _observe_restore_test(
        self, result: CheckResult, tested: RestoreTestDetails, finished: float
    ) -> None:
        self.restore_up.set(1 if result.ok else 0)
        if result.ok:
            self.restore_last_success.set(finished)
        self.restore_rto.set(tested.rto_seconds or 0)
        self.restore_rpo.set(tested.rpo_seconds or 0)
        totals: dict[str, float] = {}
        for step in tested.steps or []:
            totals[step.name] = totals.get(step.name, 0.0) + float(step.seconds)
        for name, seconds in totals.items():
            self.restore_step.labels(name).set(seconds)
        if tested.coverage is not None:
            self.restore_coverage.set(tested.coverage)


class _OpenCases:
    """`opsagent_cases_open{severity}` and the notification series, counted in the case
    store when scraped. Deliveries count per agent (the rows this agent handled), the
    backlog is of the notifiers this agent has, so agents sharing a store never export
    each other's figures; undeliverable rows (no agent has their notifier) are the
    store's, exported by every agent (alert on their max)."""

    def __init__(self, store: Any, agent: str = "", notifiers: list[str] | None = None) -> None:
        self.store = store
        self.agent = agent
        self.names = set(notifiers or [])

    def describe(self) -> list[Any]:
        return [
            GaugeMetricFamily("opsagent_cases_open", "", labels=["severity", "status"]),
            CounterMetricFamily("opsagent_sla_breaches", "", labels=["severity", "target"]),
            CounterMetricFamily("opsagent_notifications_delivered", "", labels=["notifier"]),
            CounterMetricFamily("opsagent_notifications_failed", "", labels=["notifier"]),
            GaugeMetricFamily("opsagent_notifications_waiting", "", labels=["notifier"]),
            GaugeMetricFamily("opsagent_notifications_undeliverable", "", labels=["notifier"]),
            GaugeMetricFamily("opsagent_cases_respond_seconds", "", labels=_QUANTILES),
            GaugeMetricFamily("opsagent_cases_resolve_seconds", "", labels=_QUANTILES),
            GaugeMetricFamily("opsagent_sla_compliance_ratio", "", labels=["severity"]),
        ]

    def collect(self) -> Iterator[Any]:
        try:
            open_cases = self.store.cases(status="open")
            breach_counts = self.store.breaches()
            outbox = self.store.outbox_stats(agent=self.agent)
            lost = self.store.undeliverable(datetime.now(UTC))
        except OpsagentError:
            return  # the store is unreachable: no series rather than a failed scrape
        family = GaugeMetricFamily(
            "opsagent_cases_open",
            "Open cases by severity and status.",
            labels=["severity", "status"],
        )
        counts = {(s.value, st): 0 for s in Severity for st in ("open", "acknowledged", "reopened")}
        for case in open_cases:
            counts[(case.severity.value, case.status)] += 1
        for (severity, status), count in counts.items():
            family.add_metric([severity, status], count)
        yield family
        breaches = CounterMetricFamily(
            "opsagent_sla_breaches",
            "SLA targets missed, by severity and target.",
            labels=["severity", "target"],
        )
        for severity, target, count in breach_counts:
            breaches.add_metric([severity, target], count)
        yield breaches
        delivered = CounterMetricFamily(
            "opsagent_notifications_delivered",
            "Notifications this agent delivered, by notifier.",
            labels=["notifier"],
        )
        failed = CounterMetricFamily(
            "opsagent_notifications_failed",
            "Notifications this agent gave up on (rejected for good), by notifier.",
            labels=["notifier"],
        )
        backlog = GaugeMetricFamily(
            "opsagent_notifications_waiting",
            "Notifications in the outbox not yet delivered, for this agent's notifiers.",
            labels=["notifier"],
        )
        stats = {name: (sent, gave_up, waiting) for name, sent, gave_up, waiting in outbox}
        for name in sorted(self.names | {n for n, (s, f, _) in stats.items() if s or f}):
            sent, gave_up, waiting = stats.get(name, (0, 0, 0))
            delivered.add_metric([name], sent)
            failed.add_metric([name], gave_up)
            if name in self.names:
                backlog.add_metric([name], waiting)
        yield delivered
        yield failed
        yield backlog
        undeliverable = GaugeMetricFamily(
            "opsagent_notifications_undeliverable",
            "Notifications waiting for a notifier that no running agent has.",
            labels=["notifier"],
        )
        for name, count in sorted(lost.items()):
            undeliverable.add_metric([name], count)
        yield undeliverable
        yield from self._sla()

    def _sla(self) -> Iterator[Any]:
        """Time to respond and resolve (median, p90) and compliance over the last 30 days,
        the figures `opsagent cases sla` prints."""
        from agents.cases.sla import sla_rows

        since = datetime.now(UTC) - SLA_WINDOW
        try:
            recent = [c for c in self.store.cases() if c.first_seen >= since]
            rows = sla_rows(recent, self.store.breached_cases(), since)
        except OpsagentError:
            return
        families = {
            what: GaugeMetricFamily(
                f"opsagent_cases_{what}_seconds",
                f"Time to {what} cases opened in the last 30 days, by severity (quantiles).",
                labels=["severity", "quantile"],
            )
            for what in ("respond", "resolve")
        }
        compliance = GaugeMetricFamily(
            "opsagent_sla_compliance_ratio",
            "Share of the last 30 days' cases that missed no SLA target, by severity.",
            labels=["severity"],
        )
        for row in rows:
            quantiles = {
                "respond": (row.respond_median_seconds, row.respond_p90_seconds),
                "resolve": (row.resolve_median_seconds, row.resolve_p90_seconds),
            }
            for what, family in families.items():
                for quantile, value in zip(("0.5", "0.9"), quantiles[what], strict=True):
                    if value is not None:
                        family.add_metric([row.severity, quantile], value)
            if row.compliance_percent is not None:
                compliance.add_metric([row.severity], row.compliance_percent / 100)
        yield from families.values()
        yield compliance


def _source(result: CheckResult) -> str:
    """The source a `backup_source` result is about (its name, in rows that lack it)."""
    source = BackupSourceDetails.of(result).source
    return source if source is not None else result.name
