"""The `monitor` section: host metrics and the health checks, one model per kind."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from agents.config.fields import Duration, Model, Size, refuse_duplicates
from agents.config.secrets import SecretFile, SecretRef, no_inline_password
from agents.results import Severity


class CheckBase(Model):
    name: str = Field(
        min_length=1,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="Unique name: the `check` label and the case fingerprint.",
    )
    interval: Duration = Field(
        default=timedelta(seconds=30), description="How often the check runs."
    )
    timeout: Duration = Field(
        default=timedelta(seconds=10), description="A run longer than this fails."
    )
    failures_before_alert: int = Field(
        default=1, ge=1, description="Failures in a row before a case opens (flapping guard)."
    )
    successes_before_recovery: int | None = Field(
        default=None,
        ge=1,
        description="Passes in a row before the case resolves (default: failures_before_alert).",
    )
    severity: Severity = Field(
        default=Severity.MAJOR,
        description="Severity of the case it opens: critical, major, moderate or minor.",
    )

    @property
    def recovery_threshold(self) -> int:
        return self.successes_before_recovery or self.failures_before_alert


class HttpCheck(CheckBase):
    kind: Literal["http"] = Field(description="`http`.")
    url: str = Field(description="URL to request.")
    method: str = Field(default="GET", description="HTTP method.")
    headers: dict[str, str] = Field(default={}, description="Extra request headers.")
    expect_status: list[int] = Field(default=[200], description="Statuses that pass.")
    body_regex: str | None = Field(default=None, description="The body must match this regex.")
    max_latency: Duration | None = Field(default=None, description="Slower answers fail.")
    verify_tls: bool = Field(
        default=True, description="Verify the certificate chain and host name."
    )
    ca_file: Path | None = Field(default=None, description="CA bundle to verify against.")
    cert_min_days: int = Field(
        default=14, ge=0, description="Fail when the certificate expires in fewer days."
    )
    follow_redirects: bool = Field(default=True, description="Follow redirects.")


class TcpCheck(CheckBase):
    kind: Literal["tcp"] = Field(description="`tcp`.")
    host: str = Field(description="Host to connect to.")
    port: int = Field(ge=1, le=65535, description="Port to connect to.")
    send: str | None = Field(default=None, description="Bytes to send after connecting.")
    expect: str | None = Field(
        default=None,
        description=(
            "Regular expression searched for in the answer (decoded as UTF-8, bad bytes replaced),"
            " read until it matches, the server closes, 64 KiB or the timeout."
        ),
    )
    # `expect` compiled once, at load
    _expect_pattern: re.Pattern[str] | None = PrivateAttr(default=None)

    @field_validator("expect")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"{value!r} is not a regular expression: {exc}") from None
        return value

    def model_post_init(self, context: Any) -> None:
        self._expect_pattern = re.compile(self.expect) if self.expect is not None else None

    @property
    def expect_pattern(self) -> re.Pattern[str] | None:
        """The compiled `expect`, searched for in the decoded answer."""
        return self._expect_pattern


class ProcessCheck(CheckBase):
    kind: Literal["process"] = Field(description="`process`.")
    process_name: str | None = Field(default=None, description="Process name to match.")
    cmdline_regex: str | None = Field(default=None, description="Regex on the full command line.")
    pidfile: Path | None = Field(default=None, description="Read the pid from this file.")
    min_count: int = Field(default=1, ge=0, description="At least this many matching processes.")
    max_count: int | None = Field(default=None, ge=0, description="At most this many.")

    @model_validator(mode="after")
    def _selector(self) -> ProcessCheck:
        if sum(x is not None for x in (self.process_name, self.cmdline_regex, self.pidfile)) != 1:
            raise ValueError("give exactly one of process_name, cmdline_regex or pidfile")
        return self


class ValueBounds(Model):
    min_value: float | None = Field(
        default=None, description="The query's value must be at least this."
    )
    max_value: float | None = Field(
        default=None, description="At most this (replication lag, queue length)."
    )
    equals: str | None = Field(default=None, description="Exactly this.")


class PostgresCheck(CheckBase):
    kind: Literal["postgres"] = Field(description="`postgres`.")
    dsn: str = Field(description="postgresql:// DSN without a password.")
    password_file: SecretFile | None = Field(default=None, description="File holding the password.")
    password: SecretRef | None = Field(
        default=None, description="The password as `${ENV_VAR}` (never inline)."
    )
    query: str = Field(default="select 1", description="Query that must answer within the timeout.")
    expect: ValueBounds | None = Field(
        default=None, description="Bounds on the query's first value."
    )

    _dsn = field_validator("dsn")(lambda cls, v: no_inline_password(v))


class MysqlCheck(CheckBase):
    kind: Literal["mysql"] = Field(description="`mysql`.")
    host: str = Field(default="127.0.0.1", description="Server host.")
    port: int = Field(default=3306, ge=1, le=65535, description="Server port.")
    user: str = Field(default="root", description="User.")
    database: str | None = Field(default=None, description="Database to connect to.")
    password_file: SecretFile | None = Field(default=None, description="File holding the password.")
    password: SecretRef | None = Field(default=None, description="The password as `${ENV_VAR}`.")
    option_file: Path | None = Field(
        default=None, description="A my.cnf-style option file (client section)."
    )
    query: str = Field(default="select 1", description="Query that must answer within the timeout.")
    expect: ValueBounds | None = Field(
        default=None, description="Bounds on the query's first value."
    )


class DiskCheck(CheckBase):
    kind: Literal["disk"] = Field(description="`disk`.")
    path: Path = Field(default=Path("/"), description="A path on the file system to watch.")
    min_free_percent: float | None = Field(
        default=None, ge=0, le=100, description="Fail under this free percentage."
    )
    min_free_bytes: Size | None = Field(
        default=None, description="Fail under this many free bytes."
    )
    min_hours_to_full: float | None = Field(
        default=None, ge=0, description="Fail when the linear forecast reaches full sooner."
    )


class FileAgeCheck(CheckBase):
    kind: Literal["file_age"] = Field(
        description="`file_age` (a dead-man's switch for jobs that write files)."
    )
    glob: str = Field(description="Files to look at; the newest counts.")
    max_age: Duration = Field(description="Fail when the newest file is older.")


class CommandCheck(CheckBase):
    kind: Literal["command"] = Field(description="`command`.")
    command: list[str] | str = Field(description="argv list (or a string with shell: true).")
    shell: bool = Field(default=False, description="Run through /bin/sh.")
    expect_exit: int = Field(default=0, description="Exit code that passes.")
    output_regex: str | None = Field(default=None, description="Output must match this regex.")

    @model_validator(mode="after")
    def _argv_or_shell(self) -> CommandCheck:
        if isinstance(self.command, str) and not self.shell:
            raise ValueError("command is a string: give a list of arguments, or set shell: true")
        if isinstance(self.command, list) and not self.command:
            raise ValueError("command must not be empty")
        return self


Check = Annotated[
    HttpCheck
    | TcpCheck
    | ProcessCheck
    | PostgresCheck
    | MysqlCheck
    | DiskCheck
    | FileAgeCheck
    | CommandCheck,
    Field(discriminator="kind"),
]


class MonitorConfig(Model):
    host_metrics: bool = Field(
        default=True, description="Export CPU, memory, file systems, disks and network (psutil)."
    )
    pseudo_fs_pattern: str = Field(
        default=r"^(proc|sysfs|tmpfs|devtmpfs|devpts|cgroup2?|overlay|squashfs|nsfs|tracefs|"
        r"debugfs|securityfs|pstore|bpf|autofs|mqueue|hugetlbfs|fusectl|configfs|binfmt_misc|"
        r"ramfs|rpc_pipefs|fuse\..*)$",
        description="File system types left out of the host metrics (regex).",
    )
    max_parallel: int = Field(default=8, ge=1, description="Checks that may run at the same time.")
    checks: list[Check] = Field(
        default=[], description="Health checks; each is one of the kinds below."
    )

    @field_validator("checks")
    @classmethod
    def _unique_names(cls, checks: list[Any]) -> list[Any]:
        refuse_duplicates([c.name for c in checks], "check")
        return checks
