"""How a host run by the systemd timers is recognised and how its timers are read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agents.timers import TimerState, parse_show, timer_driven, timer_states, timer_unit

T = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("environ", "cgroup", "unit"),
    [
        # a login shell, cron, or the test runner: systemd did not start it
        ({}, "0::/system.slice/opsagent-backup.service\n", None),
        # systemd 251+: the timer that started the service says so
        (
            {"INVOCATION_ID": "ab", "TRIGGER_UNIT": "opsagent-backup.timer"},
            "0::/system.slice/opsagent-backup.service\n",
            "opsagent-backup.timer",
        ),
        # older systemd: the timer named like the service in this process's cgroup (v2)
        (
            {"INVOCATION_ID": "ab"},
            "0::/system.slice/opsagent-restore-test.service\n",
            "opsagent-restore-test.timer",
        ),
        # cgroup v1 names the service on the name=systemd line
        (
            {"INVOCATION_ID": "ab"},
            "2:cpu:/\n1:name=systemd:/system.slice/opsagent-backup.service\n0::/\n",
            "opsagent-backup.timer",
        ),
        # started by systemd but not from a service (a scope of a user session)
        ({"INVOCATION_ID": "ab"}, "0::/user.slice/user-1000.slice/session-3.scope\n", None),
    ],
)
def test_timer_unit(tmp_path: Path, environ: dict[str, str], cgroup: str, unit: str | None) -> None:
    (tmp_path / "cgroup").write_text(cgroup)
    assert timer_unit(environ, tmp_path / "cgroup") == unit


def test_timer_unit_without_a_cgroup_file(tmp_path: Path) -> None:
    assert timer_unit({"INVOCATION_ID": "ab"}, tmp_path / "missing") is None


@pytest.mark.parametrize(
    ("runs", "daemon_started", "running", "driven"),
    [
        ({}, None, False, False),  # nothing ran yet: a daemon host until shown otherwise
        ({"opsagent-backup.timer": T}, None, False, True),  # never a daemon here
        ({"opsagent-backup.timer": T}, T - timedelta(days=9), False, True),  # moved to timers
        ({"opsagent-backup.timer": T}, T + timedelta(hours=1), False, False),  # back to daemon
        ({"opsagent-backup.timer": T}, T - timedelta(days=9), True, False),  # a daemon runs
    ],
)
def test_timer_driven(
    runs: dict[str, datetime], daemon_started: datetime | None, running: bool, driven: bool
) -> None:
    assert timer_driven(runs, daemon_started, running) is driven


def test_parse_show() -> None:
    text = (
        "LoadState=loaded\nActiveState=active\n\n"
        "LoadState=loaded\nActiveState=failed\n\n"
        "LoadState=not-found\nActiveState=inactive\n"
    )
    units = ["a.timer", "b.timer", "c.timer", "d.timer"]
    assert parse_show(text, units) == {
        "a.timer": TimerState("a.timer", True, "active"),
        "b.timer": TimerState("b.timer", False, "failed"),
        "c.timer": TimerState("c.timer", False, "not installed"),
        "d.timer": TimerState("d.timer", None, "not reported by systemctl"),
    }


def test_timer_states_when_systemd_cannot_be_asked(tmp_path: Path) -> None:
    missing = timer_states(["a.timer"], systemctl=str(tmp_path / "no-systemctl"))
    assert missing["a.timer"].active is None
    assert missing["a.timer"].state.startswith("systemctl: ")
    refusing = tmp_path / "systemctl"
    refusing.write_text("#!/bin/sh\necho 'System has not been booted with systemd' >&2\nexit 1\n")
    refusing.chmod(0o755)
    assert timer_states(["a.timer"], systemctl=str(refusing)) == {
        "a.timer": TimerState("a.timer", None, "systemctl: System has not been booted with systemd")
    }
    assert timer_states([]) == {}
