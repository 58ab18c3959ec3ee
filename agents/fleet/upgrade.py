"""`opsagent fleet upgrade`: a staged rollout. The upgrade command runs on a canary first;
when its agent is back on the new version with every check passing, the rest follow in
batches. The first failure stops the rollout: hosts already upgraded stay upgraded, the
others are not touched, and the report says which is which.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.fleet.runner import HostResult, Progress, last_line, opsagent_command, run_on
from agents.records.status import StatusDocument
from agents.ssh import Target


@dataclass
class Phase:
    name: str  # canary | batch N
    hosts: list[Target]


@dataclass
class Rollout:
    version: str
    phases: list[Phase]
    upgraded: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # host -> one-line reason
    untouched: list[str] = field(default_factory=list)
    stopped_at: str | None = None

    @property
    def ok(self) -> bool:
        return not self.failed and not self.untouched

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "phases": [{"name": p.name, "hosts": [t.name for t in p.hosts]} for p in self.phases],
            "upgraded": self.upgraded,
            "failed": self.failed,
            "untouched": self.untouched,
            "stopped_at": self.stopped_at,
            "ok": self.ok,
        }


def plan(chosen: list[Target], version: str, canary: int, batch: int) -> Rollout:
    """Canary hosts first (in inventory order), then batches."""
    phases = []
    if canary > 0:
        phases.append(Phase("canary", chosen[:canary]))
    rest = chosen[canary:]
    for number, start in enumerate(range(0, len(rest), max(1, batch)), start=1):
        phases.append(Phase(f"batch {number}", rest[start : start + batch]))
    return Rollout(version, [p for p in phases if p.hosts])


def upgrade_command(target: Target, version: str) -> str:
    return target.upgrade_command.replace("{version}", version)


def execute(
    rollout: Rollout,
    known_hosts: Path,
    timeout: float,
    wait: float,
    say: Callable[[str], None],
    progress: Progress = lambda *a: None,
) -> list[HostResult]:
    """Run the phases in order, stopping at the first failure."""
    version = rollout.version
    every: list[HostResult] = []
    for index, phase in enumerate(rollout.phases):
        names = ", ".join(t.name for t in phase.hosts)
        say(f"{phase.name}: upgrading {names} to {version}")
        results = run_on(
            phase.hosts,
            known_hosts,
            lambda t: upgrade_command(t, version),
            len(phase.hosts),
            timeout,
            progress,
        )
        every += results
        for r in results:
            if not r.ok:
                why = last_line(r.stderr or r.stdout, "no output")
                rollout.failed[r.host] = r.error or f"upgrade command exited {r.exit_code}: {why}"
        healthy = [t for t in phase.hosts if t.name not in rollout.failed]
        if healthy:
            for name, reason in _verify(healthy, known_hosts, version, wait, timeout).items():
                if reason:
                    rollout.failed[name] = reason
                else:
                    rollout.upgraded.append(name)
        if rollout.failed:
            rollout.stopped_at = phase.name
            rollout.untouched = [t.name for p in rollout.phases[index + 1 :] for t in p.hosts]
            say(f"{phase.name} failed: stopping the rollout")
            break
        say(f"{phase.name}: {names} back on {version} with every check passing")
    return every


def _verify(
    hosts: list[Target], known_hosts: Path, version: str, wait: float, timeout: float
) -> dict[str, str]:
    """Poll each host's `opsagent status --json` until its agent runs `version` and no
    check fails; returns host -> "" (healthy) or the reason it is not, at the deadline."""
    deadline = time.monotonic() + wait
    reasons: dict[str, str] = {t.name: "not checked yet" for t in hosts}
    pending = list(hosts)
    while pending:
        results = run_on(
            pending,
            known_hosts,
            lambda t: opsagent_command(t, "status", "--json"),
            len(pending),
            timeout,
            parse=json.loads,
        )
        for r in results:
            reasons[r.host] = _health(r, version)
        pending = [t for t in pending if reasons[t.name]]
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
    return {
        name: (f"not healthy after upgrade: {why}" if why else "") for name, why in reasons.items()
    }


def _health(result: HostResult, version: str) -> str:
    """ "" when the host's status document shows `version` running with no check failing,
    else why not."""
    doc = result.data
    if not isinstance(doc, dict):
        return result.error or f"no status ({last_line(result.stderr, 'no output')})"
    status = StatusDocument.read(doc)
    agent = status.agent
    if agent.mode == "timers":  # the next timer run starts the installed version
        inactive = [t.unit for t in agent.timers if t.active is False]
        if inactive:
            return f"timers not active: {', '.join(inactive)}"
    elif not agent.running:
        return "agent is not running"
    if agent.version != version:
        # a document without a version (another release's) reads as before: None
        running = agent.version if "version" in agent.model_fields_set else None
        return f"agent runs {running}, not {version}"
    failing = [c.name for c in status.checks if c.status != "ok"]
    if failing:
        return f"checks failing: {', '.join(failing)}"
    return ""
