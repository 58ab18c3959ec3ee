"""Rules that turn results into cases: failure past its threshold opens (or adds to) a
case, recovery resolves it (or notes it), a failure soon after a resolution reopens.

Thresholds damp flapping: a check counts as failed after `failures_before_alert`
consecutive failures and as recovered after `successes_before_recovery` successes.
Jobs (backup, restore test, prune) count at the first failure. Severity comes with
the result: backup and restore-test failures are critical.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from agents.cases.sla import BusinessCalendar, due_times, target_for
from agents.cases.store import Case, CaseStore, CaseStoreError, Failure
from agents.config import CasesConfig
from agents.records.details import BackupDetails
from agents.results import CheckResult

log = logging.getLogger("opsagent.cases")


@dataclass(frozen=True)
class Thresholds:
    failures: int = 1
    successes: int = 1


class CaseRules:
    """The daemon's case sink: `observe` every result.

    Level-triggered: every failing result past its threshold is written to the store
    (opening the case or counting an occurrence), and every passing result past its
    threshold resolves the open case until the store has confirmed it, so the cases
    converge on the checks' state within one interval of any store outage, both ways.
    An unreachable store is one warning line a minute, never a traceback."""

    WARN_EVERY = 60.0

    def __init__(
        self,
        store: CaseStore,
        config: CasesConfig,
        thresholds: dict[str, Thresholds] | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        # called after every case the rules touched (the dispatcher's kick)
        self.on_change = on_change
        self.config = config
        self.calendar = BusinessCalendar.from_config(config.calendar)
        self.thresholds = thresholds or {}
        self._failures: dict[str, int] = {}
        self._successes: dict[str, int] = {}
        self._settled: set[str] = set()  # recovered, and the store knows it
        self._lock = threading.Lock()
        self._warned = 0.0
        self._missed = 0

    def observe(self, result: CheckResult) -> Case | None:
        """Apply the rules to one result; returns the case it touched, if any."""
        if result.kind == "backup" and BackupDetails.of(result).sources is not None:
            return None  # each source has its own result, and its own case
        limits = self.thresholds.get(result.name, Thresholds())
        key = result.fingerprint
        with self._lock:
            if result.ok:
                self._failures[key] = 0
                self._successes[key] = self._successes.get(key, 0) + 1
                act = self._successes[key] >= limits.successes and key not in self._settled
            else:
                self._successes[key] = 0
                self._failures[key] = self._failures.get(key, 0) + 1
                self._settled.discard(key)
                act = self._failures[key] >= limits.failures
        if not act:
            return None
        try:
            if not result.ok:
                case = self._fail(result)
            else:
                case = self._recover(result)
                with self._lock:
                    if self._successes.get(key, 0) >= limits.successes:
                        self._settled.add(key)
        except CaseStoreError as exc:
            self._store_down(exc)
            return None
        if case is not None and self.on_change is not None:
            self.on_change()
        return case

    def _store_down(self, exc: CaseStoreError) -> None:
        """One warning a minute while the store is out; the results it missed are
        applied from the next ones."""
        now = time.monotonic()
        with self._lock:
            self._missed += 1
            if now - self._warned < self.WARN_EVERY:
                return
            self._warned, missed, self._missed = now, self._missed, 0
        log.warning("cases wait for the store (%d result(s) since last said): %s", missed, exc)

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
        if any(
            e.kind == "comment" and e.actor == "opsagent" for e in self.store.events(case.id)[-1:]
        ):
            return case  # already noted, and nobody has written since
        return self.store.comment(case.id, at, "opsagent", note)


def time_left(due: datetime, now: datetime) -> float:
    """Seconds until a due time (negative once breached)."""
    return (due - now).total_seconds()
