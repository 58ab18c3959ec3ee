"""Fleet commands as operations: one command on the chosen hosts, a staged upgrade, the
history of past fleet commands, a host's key for a person to verify.

Every fleet command is recorded in the audit table of the operator's state database
(`inventory.state_dir`): who, when, which hosts, what command, and each host's outcome.
The command line (`agents.cli.fleet`) parses and prints; the work happens here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paramiko

from agents.audit import whoami
from agents.config import Inventory
from agents.fleet import upgrade
from agents.fleet.runner import FleetError, HostResult, Progress, run_on
from agents.records.fleet import FleetHost, FleetRun, UpgradePlan, UpgradeRun
from agents.ssh import Target, fetch_host_key, targets
from agents.state import AuditRecord, StateDB


def run_command(
    inventory: Inventory,
    chosen: list[Target],
    action: str,
    command_for: Callable[[Target], str],
    parallel: int,
    timeout: float,
    progress: Progress,
    parse: Callable[[str], Any] | None = None,
) -> tuple[list[HostResult], float]:
    """Run on the chosen hosts, then audit the command and each host's outcome; returns
    the results in host order and the seconds the whole run took."""
    started = time.monotonic()
    cancel = threading.Event()
    results = run_on(
        chosen,
        inventory.known_hosts.expanduser(),
        command_for,
        parallel,
        timeout,
        progress,
        cancel,
        parse,
    )
    seconds = time.monotonic() - started
    _audit(inventory, action, chosen, results, seconds, command_for)
    return results, seconds


def roll_out(
    inventory: Inventory,
    chosen: list[Target],
    rollout: upgrade.Rollout,
    timeout: float,
    wait: float,
    say: Callable[[str], None],
) -> list[HostResult]:
    """Run a planned upgrade phase by phase (stopping at the first failure) and audit it."""
    started = time.monotonic()
    results = upgrade.execute(rollout, inventory.known_hosts.expanduser(), timeout, wait, say)
    StateDB(state_db(inventory)).audit(
        whoami(),
        "fleet upgrade",
        ",".join(t.name for t in chosen),
        "ok" if rollout.ok else f"stopped at {rollout.stopped_at}",
        rollout.to_dict() | {"seconds": round(time.monotonic() - started, 3)},
    )
    return results


def versions_of(results: list[HostResult]) -> dict[str, list[str]]:
    """The hosts that answered `opsagent status --json`, by the agent version they run."""
    found: dict[str, list[str]] = {}
    for r in results:
        if isinstance(r.data, dict):
            found.setdefault(str(r.data["agent"]["version"]), []).append(r.host)
    return found


def run_document(
    results: list[HostResult], by_version: dict[str, list[str]] | None = None
) -> FleetRun:
    """A fleet command's `--json` document; `fleet status` adds the hosts by version."""
    hosts = [FleetHost.model_validate(r.to_dict()) for r in results]
    if by_version is None:
        return FleetRun(hosts=hosts)
    return FleetRun(hosts=hosts, versions=by_version, mixed_versions=len(by_version) > 1)


def plan_document(rollout: upgrade.Rollout, chosen: list[Target], version: str) -> UpgradePlan:
    """`fleet upgrade --dry-run --json`: the plan and the command each host would run."""
    return UpgradePlan.model_validate(
        rollout.to_dict()
        | {"commands": {t.name: upgrade.upgrade_command(t, version) for t in chosen}}
    )


def upgrade_document(rollout: upgrade.Rollout, results: list[HostResult]) -> UpgradeRun:
    """`fleet upgrade --json`: how the rollout went and each host's outcome."""
    return UpgradeRun.model_validate(
        rollout.to_dict() | {"hosts": [FleetHost.model_validate(r.to_dict()) for r in results]}
    )


def history(inventory: Inventory, limit: int) -> list[AuditRecord]:
    """Past fleet commands, newest first."""
    return StateDB(state_db(inventory)).audit_records(action_prefix="fleet ", limit=limit)


def presented_key(inventory: Inventory, host: str) -> tuple[Target, paramiko.PKey]:
    """The key HOST presents now, fetched directly (never through a jump host)."""
    target = targets(inventory).get(host)
    if target is None:
        raise FleetError(f"{host} is not in the inventory")
    if target.jump is not None:
        raise FleetError(f"{host} is behind a jump host: read its key on the jump host")
    return target, fetch_host_key(target.address, target.port, target.connect_timeout)


def state_db(inventory: Inventory) -> Path:
    """The operator's state database, where fleet commands are audited."""
    return inventory.state_dir.expanduser() / "state.db"


def _audit(
    inventory: Inventory,
    action: str,
    chosen: list[Target],
    results: list[HostResult],
    seconds: float,
    command_for: Callable[[Target], str],
) -> None:
    if any(r.status == "cancelled" for r in results):
        outcome = "cancelled"
    elif all(r.ok for r in results):
        outcome = "ok"
    else:
        outcome = "failed"
    StateDB(state_db(inventory)).audit(
        whoami(),
        f"fleet {action}",
        ",".join(t.name for t in chosen),
        outcome,
        {
            "command": command_for(chosen[0]) if chosen else "",
            "hosts": {r.host: r.status for r in results},
            "exit_codes": {r.host: r.exit_code for r in results},
            "seconds": round(seconds, 3),
        },
    )
