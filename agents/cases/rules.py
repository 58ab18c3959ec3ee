"""Rules that turn results into cases: failure past its threshold opens (or adds to) a
case, recovery resolves it (or notes it), a failure soon after a resolution reopens.

Thresholds damp flapping: a check counts as failed after `failures_before_alert`
consecutive failures and as recovered after `successes_before_recovery` successes.
Jobs (backup, restore test, prune) count at the first failure. Severity comes with
the result: backup and restore-test failures are critical.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime

from agents.cases.sla import BusinessCalendar, due_times, target_for
from agents.cases.store import Case, CaseStore, Failure
from agents.config import CasesConfig
from agents.results import CheckResult


@dataclass(frozen=True)
class Thresholds:
    failures: int = 1
    successes: int = 1


class CaseRules:
    """The daemon's case sink: `observe` every result."""

    def __init__(
        self,
        store: CaseStore,
        config: CasesConfig,
        thresholds: dict[str, Thresholds] | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.calendar = BusinessCalendar.from_config(config.calendar)
        self.thresholds = thresholds or {}
        self._failures: dict[str, int] = {}
        self._successes: dict[str, int] = {}
        self._lock = threading.Lock()

    def observe(self, result: CheckResult) -> Case | None:
        """Apply the rules to one result; returns the case it touched, if any."""
        if result.kind == "backup" and "sources" in result.details:
            return None  # each source has its own result, and its own case
        if result.kind == "outbox":
            return None  # a notification about failing notifications could not be delivered
        limits = self.thresholds.get(result.name, Thresholds())
        key = result.fingerprint
        with self._lock:
            if result.ok:
                self._failures[key] = 0
                self._successes[key] = self._successes.get(key, 0) + 1
                recovered = self._successes[key] == limits.successes  # once per recovery
            else:
                self._successes[key] = 0
                self._failures[key] = self._failures.get(key, 0) + 1
                failing = self._failures[key] >= limits.failures
        if result.ok:
            return self._recover(result) if recovered else None
        return self._fail(result) if failing else None

    def _fail(self, result: CheckResult) -> Case:
        at = result.started_at
        reopened = self.store.reopen_recent(result.fingerprint, at - self.config.reopen_within, at)
        if reopened is not None:
            return reopened
        target = target_for(self.config, result.severity)
        due = due_times(result.severity, at, self.calendar, target)
        case, _ = self.store.record_failure(
            Failure(
                fingerprint=result.fingerprint,
                title=f"{result.kind} {result.name} on {result.host}: {result.summary}"[:500],
                severity=result.severity,
                source=f"{result.kind}:{result.name}",
                host=result.host,
                at=at,
                response_due=due.response,
                resolution_due=due.resolution,
            )
        )
        return case

    def _recover(self, result: CheckResult) -> Case | None:
        case = self.store.open_case(result.fingerprint)
        if case is None:
            return None
        at = result.started_at
        note = f"recovered: {result.summary}"[:500]
        if self.config.auto_resolve:
            return self.store.resolve(case.id, at, "opsagent", note)
        return self.store.comment(case.id, at, "opsagent", note)


def time_left(due: datetime, now: datetime) -> float:
    """Seconds until a due time (negative once breached)."""
    return (due - now).total_seconds()
