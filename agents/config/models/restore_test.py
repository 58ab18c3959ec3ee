"""The `restore_test` section: schedule, sandbox and what is verified after a restore."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from agents.config.fields import Duration, Model, Size, preset
from agents.config.models.schedule import Schedule
from agents.config.secrets import SecretFile


class RandomWithin(Model):
    random_within: Duration = Field(description="Pick a random snapshot of this age or younger.")


class Sandbox(Model):
    kind: Literal["local", "ssh"] = Field(
        default="local", description="`local` (this host) or `ssh` (another host)."
    )
    root: Path = Field(
        default=Path("/var/tmp/opsagent-sandbox"),
        description="Directory restored files go under (swept at start).",
    )
    postgres_dsn: str | None = Field(
        default=None, description="Server to restore PostgreSQL dumps into (a throwaway database)."
    )
    postgres_password_file: SecretFile | None = Field(
        default=None, description="Its password file."
    )
    mysql_host: str | None = Field(default=None, description="Server to restore MySQL dumps into.")
    mysql_port: int = Field(default=3306, ge=1, le=65535, description="Its port.")
    mysql_user: str = Field(default="root", description="Its user.")
    mysql_option_file: Path | None = Field(default=None, description="Its option file.")
    host: str | None = Field(default=None, description="ssh: host running the restore test.")
    port: int = Field(default=22, ge=1, le=65535, description="ssh: port.")
    user: str | None = Field(default=None, description="ssh: user.")
    key_file: Path | None = Field(default=None, description="ssh: private key.")
    known_hosts: Path | None = Field(
        default=None, description="ssh: known_hosts (required; keys never auto-added)."
    )
    remote_command: str = Field(
        default="opsagent", description="ssh: the opsagent command on the remote host."
    )
    remote_config: str | None = Field(
        default=None, description="ssh: config path on the remote host."
    )

    @model_validator(mode="after")
    def _ssh_needs(self) -> Sandbox:
        if self.kind == "ssh":
            missing = [k for k in ("host", "user", "known_hosts") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"an ssh sandbox needs {', '.join(missing)}")
        return self


class DataVerify(Model):
    full_every: Duration = Field(
        default=timedelta(days=7),
        description="Every pack is read and verified once per this window.",
    )
    daily_budget: Size | None = Field(default=None, description="Cap on bytes verified per run.")


class CommandAssertion(Model):
    name: str | None = Field(default=None, description="Name shown in the step.")
    command: list[str] | str = Field(description="argv list (or a string with shell: true).")
    shell: bool = Field(default=False, description="Run through /bin/sh.")
    timeout: Duration = Field(default=timedelta(minutes=5), description="Time limit.")


class Verify(Model):
    data: DataVerify = Field(
        default=preset(DataVerify), description="Rolling verification of all pack data."
    )
    sql: list[str] = Field(
        default=[], description="PostgreSQL queries that must return true on the restored database."
    )
    commands: list[CommandAssertion | list[str] | str] = Field(
        default=[], description="Commands run in the sandbox that must succeed."
    )


class RestoreTestConfig(Model):
    schedule: Schedule | None = Field(
        default=preset(Schedule, daily_at="06:00"),
        description="When the restore test runs (null: only by command).",
    )
    snapshot: Literal["latest"] | RandomWithin = Field(
        default="latest", description="`latest`, or `{random_within: 7d}` to test older ones too."
    )
    sources: list[str] | None = Field(default=None, description="Sources to test (default: all).")
    sandbox: Sandbox = Field(default=preset(Sandbox), description="Where the restore goes.")
    verify: Verify = Field(
        default=preset(Verify), description="What is verified after the restore."
    )
    max_rto: Duration | None = Field(
        default=None, description="Fail (and alert) when recovery takes longer."
    )
    max_rpo: Duration | None = Field(
        default=None, description="Fail when the newest snapshot is older."
    )
    keep_sandbox_for: Duration = Field(
        default=timedelta(0), description="Keep the sandbox this long for inspection."
    )
    timeout: Duration = Field(
        default=timedelta(hours=6), description="Stop a restore test that runs longer."
    )
