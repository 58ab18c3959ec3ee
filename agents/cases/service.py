"""The case room, wired from a config: the store with its SLA clock, the case rules with
each check's thresholds, and this agent's notification dispatcher. The daemon, the
one-shot commands, the command line and the fleet all get their store here, so every
case change they make is written and notified the same way (`CaseStore._record`)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from agents.cases.store import CaseStore, CaseStoreError

if TYPE_CHECKING:
    from agents.cases.notify import Dispatcher
    from agents.cases.rules import CaseRules
    from agents.config import Config

log = logging.getLogger("opsagent.cases")


def case_store(config: Config, lazy: bool = False) -> CaseStore:
    """The case store with this config's SLA clock and its own notifiers as receivers;
    `lazy` (the daemon) does not connect until first used, so an agent starts, checks
    and backs up while the shared store is down, and its cases catch up after."""
    from agents.cases.notify import notifier_routes
    from agents.cases.sla import sla_clock

    return CaseStore(
        config.cases_store,
        notifier_routes(config.cases.notify),
        sla_clock(config.cases),
        lazy=lazy,
    )


def case_rules(config: Config, store: CaseStore | None = None) -> CaseRules:
    """The rules that turn results into cases, with each check's flapping thresholds."""
    from agents.cases.rules import CaseRules, Thresholds

    thresholds = {
        c.name: Thresholds(c.failures_before_alert, c.recovery_threshold)
        for c in config.monitor.checks
    }
    return CaseRules(store or case_store(config), config.cases, thresholds)


def dispatcher(config: Config, store: CaseStore, judge: bool = True) -> Dispatcher:
    """This agent's deliverer of notifications, registered under the agent's host;
    `judge` is whether its deliveries open and resolve the cases about notifiers."""
    from agents.cases.notify import Dispatcher, build_notifiers, notifier_routes

    return Dispatcher(
        store,
        build_notifiers(config.cases.notify, config.host),
        agent=config.host,
        routes=notifier_routes(config.cases.notify),
        judge=judge,
    )


def deliver_now(config: Config, store: CaseStore, case_id: int | None = None) -> tuple[int, int]:
    """Deliver what a command just queued, when this host has notifiers: the on-call
    person's acknowledgement reaches the pager now, not at the daemon's next pass (and
    a host run by timers, with no daemon, still notifies). Whatever fails here stays
    queued for the daemon; returns (delivered, failed attempts)."""
    # a person's command may run with other rights than the agent (sudo): its deliveries
    # never decide whether a notifier works
    deliver = dispatcher(config, store, judge=False)
    if not deliver.notifiers:
        return 0, 0
    try:
        deliver.register(datetime.now(UTC))
        return deliver.run_once(case_id=case_id)
    except CaseStoreError as exc:
        log.warning("notifications wait: %s", exc)
        return 0, 0
