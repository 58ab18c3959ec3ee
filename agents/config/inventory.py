"""The fleet inventory, a file of its own: the hosts `opsagent fleet` reaches over SSH,
their defaults, and where to find and load it."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from pydantic import Field, field_validator

from agents.config.errors import ConfigError, one_line
from agents.config.fields import Duration, Model, preset
from agents.config.loading import parse
from agents.config.secrets import SecretFile


class FleetDefaults(Model):
    """Settings every host of the inventory takes unless it sets its own."""

    user: str = Field(default="opsagent", description="SSH user.")
    port: int = Field(default=22, ge=1, le=65535, description="SSH port.")
    key_file: Path | None = Field(default=None, description="Private key (default: the ssh-agent).")
    passphrase_file: SecretFile | None = Field(
        default=None, description="File holding the key's passphrase."
    )
    opsagent: str = Field(default="opsagent", description="The opsagent command on the hosts.")
    config: str | None = Field(
        default=None, description="The config path on the hosts (default: theirs)."
    )
    connect_timeout: Duration = Field(
        default=timedelta(seconds=10), description="Connect, banner and authentication timeout."
    )
    command_timeout: Duration = Field(
        default=timedelta(minutes=10),
        description=(
            "A command running longer on a host is cut (--timeout) and stopped there with"
            " its children (TERM, then KILL 3 s later)."
        ),
    )
    keepalive: Duration = Field(
        default=timedelta(seconds=15), description="SSH keepalive interval."
    )
    upgrade_command: str = Field(
        default="/opt/opsagent/bin/pip install --quiet 'opsagent=={version}'"
        " && sudo -n systemctl restart opsagent",
        description="What `fleet upgrade` runs on a host (`{version}` filled in).",
    )


class FleetHost(Model):
    """One host: where to reach it, how, and how to select it."""

    name: str = Field(
        min_length=1,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Unique name (--host, output, audit).",
    )
    address: str = Field(description="Host name or IP address.")
    port: int | None = Field(
        default=None, ge=1, le=65535, description="SSH port (default: defaults.port)."
    )
    user: str | None = Field(default=None, description="SSH user.")
    key_file: Path | None = Field(default=None, description="Private key.")
    passphrase_file: SecretFile | None = Field(
        default=None, description="File holding the key's passphrase."
    )
    jump: str | None = Field(
        default=None, description="Another inventory host to connect through (ProxyJump)."
    )
    groups: list[str] = Field(default=[], description="Groups (--group).")
    labels: dict[str, str] = Field(default={}, description="Labels (--label k=v).")
    opsagent: str | None = Field(default=None, description="The opsagent command on this host.")
    config: str | None = Field(default=None, description="The config path on this host.")
    upgrade_command: str | None = Field(
        default=None, description="This host's upgrade command (a package manager, say)."
    )


class Inventory(Model):
    """The fleet: hosts, their defaults, the known_hosts file (required: host keys are
    checked, never added) and where the fleet's audit history is kept."""

    known_hosts: Path = Field(
        description="known_hosts file every host key is checked against (required)."
    )
    state_dir: Path = Field(
        default=Path("~/.local/state/opsagent"),
        description="Where the fleet's audit history (state.db) is kept.",
    )
    defaults: FleetDefaults = Field(
        default=preset(FleetDefaults),
        description="Settings each host takes unless it sets its own.",
    )
    hosts: list[FleetHost] = Field(min_length=1, description="The hosts.")

    @field_validator("hosts")
    @classmethod
    def _unique_and_jumps(cls, hosts: list[FleetHost]) -> list[FleetHost]:
        names = [h.name for h in hosts]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"host names must be unique; repeated: {', '.join(dupes)}")
        by_name = {h.name: h for h in hosts}
        for host in hosts:
            if host.jump is None:
                continue
            jump = by_name.get(host.jump)
            if jump is None:
                raise ValueError(f"{host.name}: jump host {host.jump!r} is not in the inventory")
            if jump.jump is not None:
                raise ValueError(f"{host.name}: jump host {jump.name} has a jump host itself")
        return hosts


def load_inventory(path: str | os.PathLike[str]) -> Inventory:
    """Read and validate a fleet inventory; ConfigError with every problem, one per line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {one_line(exc)}"]) from None
    return parse(text, str(path), Inventory)


def inventory_path(given: Path | None) -> Path:
    """--inventory, then $OPSAGENT_INVENTORY, then /etc/opsagent/inventory.yml."""
    if given is not None:
        return given
    env = os.environ.get("OPSAGENT_INVENTORY")
    return Path(env) if env else Path("/etc/opsagent/inventory.yml")
