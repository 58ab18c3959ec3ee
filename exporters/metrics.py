"""Metrics for results: every CheckResult updates the gauges and counters Prometheus scrapes.

Names follow Prometheus conventions (base units, `_total`, `_seconds`, `_bytes`) and
carry no `host` label: Prometheus adds `instance`. Labels are few and bounded (the
check or job name, from the config).
"""

from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry, Counter, Gauge, Info

from agents.results import CheckResult

JOB_KINDS = frozenset({"backup", "restore_test", "prune", "forget"})


class ResultMetrics:
    """Holds the result metrics of one registry; `observe` is the daemon's sink."""

    def __init__(self, registry: CollectorRegistry, version: str) -> None:
        self.registry = registry
        build = Info("opsagent_build", "opsagent build information.", registry=registry)
        build.info({"version": version, "python": platform.python_version()})
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
        self.check_last_run = Gauge(
            "opsagent_check_last_run_timestamp_seconds",
            "When the check last ran (Unix time).",
            ["check"],
            registry=registry,
        )
        self.job_up = Gauge(
            "opsagent_job_up",
            "1 when the job's last run succeeded.",
            ["job"],
            registry=registry,
        )
        self.job_duration = Gauge(
            "opsagent_job_duration_seconds",
            "Duration of the job's last run.",
            ["job"],
            registry=registry,
        )
        self.job_last_run = Gauge(
            "opsagent_job_last_run_timestamp_seconds",
            "When the job last finished (Unix time).",
            ["job"],
            registry=registry,
        )
        self.job_last_success = Gauge(
            "opsagent_job_last_success_timestamp_seconds",
            "When the job last succeeded (Unix time).",
            ["job"],
            registry=registry,
        )
        self.job_runs = Counter(
            "opsagent_job_runs",
            "Job runs by outcome.",
            ["job", "status"],
            registry=registry,
        )

    def observe(self, result: CheckResult) -> None:
        finished = result.started_at.timestamp() + result.duration_seconds
        if result.kind in JOB_KINDS or result.kind.startswith("backup"):
            self.job_up.labels(result.name).set(1 if result.ok else 0)
            self.job_duration.labels(result.name).set(result.duration_seconds)
            self.job_last_run.labels(result.name).set(finished)
            if result.ok:
                self.job_last_success.labels(result.name).set(finished)
            self.job_runs.labels(result.name, result.status.value).inc()
            return
        self.check_up.labels(result.name, result.kind).set(1 if result.ok else 0)
        self.check_duration.labels(result.name).set(result.duration_seconds)
        self.check_last_run.labels(result.name).set(finished)
