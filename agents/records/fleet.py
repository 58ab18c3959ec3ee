"""The fleet documents (`opsagent fleet ... --json`): each host's outcome of a command,
and a staged upgrade's plan and result."""

from __future__ import annotations

from typing import Any

from agents.records.base import Number, Record


class FleetHost(Record):
    """One host's outcome: `ok`, `failed` (non-zero exit), `error` (unreachable,
    refused), `timeout` or `cancelled`; `data` (only when there is one) is the parsed
    `--json` output of a runbook command."""

    host: str
    address: str
    status: str
    exit_code: int | None
    stdout: str
    stderr: str
    error: str
    duration_seconds: Number
    data: Any = None

    def to_dict(self) -> dict[str, Any]:
        """The host's object; `data` only when the command printed some."""
        data = super().to_dict()
        if data["data"] is None:
            del data["data"]
        return data


class FleetRun(Record):
    """Each host's outcome; `fleet status` adds `versions` (the hosts by agent version) and
    `mixed_versions`, which the other commands leave out."""

    hosts: list[FleetHost]
    versions: dict[str, list[str]] | None = None
    mixed_versions: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """The document; `versions` and `mixed_versions` only from `fleet status`."""
        data = {"hosts": [h.to_dict() for h in self.hosts]}
        if self.versions is not None:
            data |= {"versions": self.versions, "mixed_versions": self.mixed_versions}
        return data


class UpgradePhase(Record):
    """One phase of a staged upgrade: `canary` or `batch N`, and its hosts."""

    name: str
    hosts: list[str]


class Rollout(Record):
    """A staged upgrade: its phases, the hosts upgraded, failed (with why) and left
    untouched, the phase it stopped at, and whether every host was upgraded."""

    version: str
    phases: list[UpgradePhase]
    upgraded: list[str]
    failed: dict[str, str]
    untouched: list[str]
    stopped_at: str | None
    ok: bool


class UpgradePlan(Rollout):
    """The plan of a staged upgrade and the command each host would run."""

    commands: dict[str, str]


class UpgradeRun(Rollout):
    """How a staged upgrade went and each host's last outcome."""

    hosts: list[FleetHost]

    def to_dict(self) -> dict[str, Any]:
        """The document; a host's `data` only when there is one."""
        return super().to_dict() | {"hosts": [h.to_dict() for h in self.hosts]}
