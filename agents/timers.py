"""The systemd timers' mode: backups and restore tests run as one-shot commands by
`opsagent-backup.timer` and `opsagent-restore-test.timer` instead of the `opsagent run`
daemon (deploy/systemd).

No setting says which mode a host uses; the state database does. A job command that
systemd started records the timer that runs it (`timer_unit`); a host whose latest such
run is newer than the daemon's last start, and where no daemon runs, is run by its
timers. `opsagent status` then judges it by its timers' runs and job freshness instead
of reporting a daemon that was never meant to run, and asks systemd (read-only, no root
needed) whether each timer is still active.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

SYSTEMCTL_TIMEOUT = 5.0


@dataclass(frozen=True)
class TimerState:
    """What systemd says about one timer; `active` is None when it could not be asked."""

    unit: str
    active: bool | None
    state: str  # ActiveState ("active", "inactive", "failed"), "not installed", or why unknown


def timer_unit(
    environ: Mapping[str, str] = os.environ, cgroup: Path = Path("/proc/self/cgroup")
) -> str | None:
    """The systemd timer that runs this command, or None when systemd did not start it.

    systemd sets INVOCATION_ID for every unit it starts (a login shell has none) and, from
    v251, TRIGGER_UNIT for a unit a timer started; before that, the timer is the one named
    like the service (systemd's own pairing), and the service is in this process's cgroup."""
    if not environ.get("INVOCATION_ID"):
        return None
    trigger = environ.get("TRIGGER_UNIT", "")
    if trigger.endswith(".timer"):
        return trigger
    try:
        lines = cgroup.read_text().splitlines()
    except OSError:
        return None
    for line in lines:  # cgroup v2 "0::/system.slice/x.service", v1 "1:name=systemd:/..."
        unit = line.rstrip("/").rpartition("/")[2]
        if unit.endswith(".service"):
            return unit.removesuffix(".service") + ".timer"
    return None


def timer_driven(
    timer_runs: Mapping[str, datetime], daemon_started: datetime | None, daemon_running: bool
) -> bool:
    """Whether the timers run this host's jobs: no daemon runs, and a timer ran a job
    after the daemon's last start (or the daemon never started here)."""
    if daemon_running or not timer_runs:
        return False
    return daemon_started is None or max(timer_runs.values()) > daemon_started


def timer_states(
    units: Sequence[str], systemctl: str = "systemctl", timeout: float = SYSTEMCTL_TIMEOUT
) -> dict[str, TimerState]:
    """Ask systemd about each timer with `systemctl show`, which needs no root; when
    systemd cannot be asked (not installed, not PID 1, no bus) every state is unknown."""
    if not units:
        return {}
    argv = [systemctl, "show", "--property=LoadState,ActiveState", "--", *units]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return _unknown(units, f"systemctl: {exc}")
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        return _unknown(units, f"systemctl: {why}")
    return parse_show(proc.stdout, units)


def parse_show(text: str, units: Sequence[str]) -> dict[str, TimerState]:
    """`systemctl show` output: one block of KEY=VALUE lines per unit, blank-line separated,
    in the order asked."""
    blocks = [b for b in text.strip().split("\n\n") if b.strip()]
    states = {}
    for unit, block in zip(units, blocks, strict=False):
        fields = dict(line.partition("=")[::2] for line in block.splitlines())
        if fields.get("LoadState") == "not-found":
            states[unit] = TimerState(unit, False, "not installed")
        else:
            active = fields.get("ActiveState", "unknown")
            states[unit] = TimerState(unit, active == "active", active)
    for unit in units:
        states.setdefault(unit, TimerState(unit, None, "not reported by systemctl"))
    return states


def _unknown(units: Sequence[str], why: str) -> dict[str, TimerState]:
    return {unit: TimerState(unit, None, why[:200]) for unit in units}
