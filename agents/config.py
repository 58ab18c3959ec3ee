"""The agent's configuration: one YAML file validated into frozen, typed objects.

Every problem is reported as one line naming the file, the YAML path and what is
wrong (`config.yml: backup.retention.keep_daily: must be >= 0, got -1`), all of
them at once. Secrets are never written in the file: a `*_file` path or a
`${ENV_VAR}` reference, resolved only when used (`resolve_secret`). Secret files belong
to the host, not to the file: `secret_file_problems` checks them apart (exist, readable,
0600), for `config check` and the agent at start.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import socket
import stat
import typing
from collections.abc import Mapping
from datetime import timedelta
from email.utils import parseaddr
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from agents.results import Severity
from agents.units import format_duration, parse_duration, parse_size

DEFAULT_CONFIG_PATH = Path("/etc/opsagent/config.yml")
CONFIG_ENV = "OPSAGENT_CONFIG"


class ConfigError(Exception):
    """Raised with every problem found in a config file, one line each."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def _duration(value: Any) -> timedelta:
    return parse_duration(value)


def _size(value: Any) -> int:
    return parse_size(value)


Duration = Annotated[
    timedelta,
    BeforeValidator(_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
Size = Annotated[int, BeforeValidator(_size), Field(ge=0)]

_ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def _secret_ref(value: Any) -> str:
    if not isinstance(value, str) or not _ENV_REF.match(value):
        raise ValueError(
            "secrets are given by reference only: use the matching *_file key "
            "or an environment reference like ${MY_SECRET}"
        )
    return value


SecretRef = Annotated[str, BeforeValidator(_secret_ref)]


def _timezone(value: Any) -> str:
    try:
        ZoneInfo(str(value))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}") from None
    return str(value)


TimeZone = Annotated[str, BeforeValidator(_timezone)]

_CLOCK = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


def _clock(value: Any) -> str:
    text = str(value)
    if not _CLOCK.match(text):
        raise ValueError(f"expected a time of day HH:MM, got {value!r}")
    return text


ClockTime = Annotated[str, BeforeValidator(_clock)]


def _web_url(value: str) -> str:
    problem = url_problem(value)
    if problem is not None:
        raise ValueError(f"{problem}, got {_kind_of(value)}")
    return value


WebUrl = Annotated[str, AfterValidator(_web_url)]


def _mail_address(value: str) -> str:
    if any(not c.isprintable() for c in value) or "@" not in parseaddr(value)[1]:
        raise ValueError(f"expected a mail address like ops@example.com, got {_kind_of(value)}")
    return value


MailAddress = Annotated[str, AfterValidator(_mail_address)]


class _SecretFileMark:
    """Marks a path as a secret file, which `secret_file_problems` checks on this host."""

    def __init__(self, holds_url: bool = False) -> None:
        self.holds_url = holds_url


SecretFile = Annotated[Path, _SecretFileMark()]
SecretUrlFile = Annotated[Path, _SecretFileMark(holds_url=True)]


class Model(BaseModel):
    """Base of every config object: frozen, unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class Schedule(Model):
    """When a job runs: daily at a time, weekly on a day at a time, or every N."""

    daily_at: ClockTime | None = None
    weekly_on: Literal[WEEKDAYS] | None = None  # type: ignore[valid-type]
    at: ClockTime | None = None
    every: Duration | None = None
    timezone: TimeZone = "UTC"
    grace: Duration = timedelta(hours=1)

    @model_validator(mode="after")
    def _one_form(self) -> Schedule:
        forms = [self.daily_at is not None, self.weekly_on is not None, self.every is not None]
        if sum(forms) != 1:
            raise ValueError("give exactly one of daily_at, weekly_on (with at) or every")
        if self.weekly_on is not None and self.at is None:
            raise ValueError("weekly_on needs at: HH:MM")
        if self.every is not None and self.every < timedelta(seconds=1):
            raise ValueError("every must be at least 1s")
        return self

    @property
    def period(self) -> timedelta:
        """The time between two runs; a last success older than period + grace is stale."""
        if self.every is not None:
            return self.every
        if self.weekly_on is not None:
            return timedelta(days=7)
        return timedelta(days=1)


# --- exporter ---------------------------------------------------------------------------


class ExporterConfig(Model):
    enabled: bool = True
    listen: str = "127.0.0.1:9108"
    web_config_file: Path | None = None
    textfile: Path | None = None
    allow_plain_http: bool = False

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"expected HOST:PORT, got {value!r}")
        if host.startswith("[") and host.endswith("]"):
            try:
                ipaddress.IPv6Address(host[1:-1])
            except ValueError:
                raise ValueError(f"expected [IPV6]:PORT, got {value!r}") from None
        elif ":" in host or "[" in host or "]" in host:
            raise ValueError(f"an IPv6 address goes in brackets, [::1]:PORT; got {value!r}")
        return value

    @property
    def host(self) -> str:
        """The address to bind: brackets of an IPv6 address removed, all IPv4 when empty."""
        host = self.listen.rpartition(":")[0]
        if host.startswith("["):
            return host[1:-1]
        return host or "0.0.0.0"

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


# --- monitor ----------------------------------------------------------------------------


class CheckBase(Model):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    interval: Duration = timedelta(seconds=30)
    timeout: Duration = timedelta(seconds=10)
    failures_before_alert: int = Field(default=1, ge=1)
    successes_before_recovery: int | None = Field(default=None, ge=1)
    severity: Severity = Severity.MAJOR

    @property
    def recovery_threshold(self) -> int:
        return self.successes_before_recovery or self.failures_before_alert


class HttpCheck(CheckBase):
    kind: Literal["http"]
    url: str
    method: str = "GET"
    headers: dict[str, str] = {}
    expect_status: list[int] = [200]
    body_regex: str | None = None
    max_latency: Duration | None = None
    verify_tls: bool = True
    ca_file: Path | None = None
    cert_min_days: int = Field(default=14, ge=0)
    follow_redirects: bool = True


class TcpCheck(CheckBase):
    kind: Literal["tcp"]
    host: str
    port: int = Field(ge=1, le=65535)
    send: str | None = None
    expect: str | None = None
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
    kind: Literal["process"]
    process_name: str | None = None
    cmdline_regex: str | None = None
    pidfile: Path | None = None
    min_count: int = Field(default=1, ge=0)
    max_count: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _selector(self) -> ProcessCheck:
        if sum(x is not None for x in (self.process_name, self.cmdline_regex, self.pidfile)) != 1:
            raise ValueError("give exactly one of process_name, cmdline_regex or pidfile")
        return self


class ValueBounds(Model):
    min_value: float | None = None
    max_value: float | None = None
    equals: str | None = None


class PostgresCheck(CheckBase):
    kind: Literal["postgres"]
    dsn: str
    password_file: SecretFile | None = None
    password: SecretRef | None = None
    query: str = "select 1"
    expect: ValueBounds | None = None

    _dsn = field_validator("dsn")(lambda cls, v: _no_inline_password(v))


class MysqlCheck(CheckBase):
    kind: Literal["mysql"]
    host: str = "127.0.0.1"
    port: int = Field(default=3306, ge=1, le=65535)
    user: str = "root"
    database: str | None = None
    password_file: SecretFile | None = None
    password: SecretRef | None = None
    option_file: Path | None = None
    query: str = "select 1"
    expect: ValueBounds | None = None


class DiskCheck(CheckBase):
    kind: Literal["disk"]
    path: Path = Path("/")
    min_free_percent: float | None = Field(default=None, ge=0, le=100)
    min_free_bytes: Size | None = None
    min_hours_to_full: float | None = Field(default=None, ge=0)


class FileAgeCheck(CheckBase):
    kind: Literal["file_age"]
    glob: str
    max_age: Duration


class CommandCheck(CheckBase):
    kind: Literal["command"]
    command: list[str] | str
    shell: bool = False
    expect_exit: int = 0
    output_regex: str | None = None

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
    host_metrics: bool = True
    pseudo_fs_pattern: str = (
        r"^(proc|sysfs|tmpfs|devtmpfs|devpts|cgroup2?|overlay|squashfs|nsfs|tracefs|"
        r"debugfs|securityfs|pstore|bpf|autofs|mqueue|hugetlbfs|fusectl|configfs|binfmt_misc|"
        r"ramfs|rpc_pipefs|fuse\..*)$"
    )
    max_parallel: int = Field(default=8, ge=1)
    checks: list[Check] = []

    @field_validator("checks")
    @classmethod
    def _unique_names(cls, checks: list[Any]) -> list[Any]:
        _refuse_duplicates([c.name for c in checks], "check")
        return checks


# --- backup -----------------------------------------------------------------------------


class Hooks(Model):
    before: list[str] | None = None
    after: list[str] | None = None
    on_failure: list[str] | None = None
    timeout: Duration = timedelta(minutes=5)


class SourceBase(Model):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    hooks: Hooks | None = None


class FilesSource(SourceBase):
    kind: Literal["files"]
    paths: list[Path] = Field(min_length=1)
    exclude: list[str] = []
    one_file_system: bool = False
    tolerate_unreadable: bool = False


class PostgresSource(SourceBase):
    kind: Literal["postgres"]
    dsn: str
    password_file: SecretFile | None = None
    password: SecretRef | None = None
    databases: list[str] | Literal["all"] | None = None
    format: Literal["custom", "directory"] = "custom"
    globals: bool = True
    exact_counts_below_rows: int = Field(default=10_000_000, ge=0)
    pg_bin_dir: Path | None = None

    _dsn = field_validator("dsn")(lambda cls, v: _no_inline_password(v))


class MysqlSource(SourceBase):
    kind: Literal["mysql"]
    host: str = "127.0.0.1"
    port: int = Field(default=3306, ge=1, le=65535)
    user: str = "root"
    option_file: Path | None = None
    password_file: SecretFile | None = None
    password: SecretRef | None = None
    databases: list[str] | Literal["all"] = "all"
    exact_counts_below_rows: int = Field(default=10_000_000, ge=0)


class SqliteSource(SourceBase):
    kind: Literal["sqlite"]
    path: Path


Source = Annotated[
    FilesSource | PostgresSource | MysqlSource | SqliteSource, Field(discriminator="kind")
]


class ObjectLock(Model):
    mode: Literal["GOVERNANCE", "COMPLIANCE"]
    days: int = Field(ge=1)


class S3Config(Model):
    endpoint_url: str | None = None
    region: str = "us-east-1"
    path_style: bool = False
    storage_class: str | None = None
    sse: Literal["AES256", "aws:kms"] | None = None
    kms_key_id: str | None = None
    object_lock: ObjectLock | None = None
    tags: dict[str, str] = {}
    access_key_id_file: SecretFile | None = None
    secret_access_key_file: SecretFile | None = None
    access_key_id: SecretRef | None = None
    secret_access_key: SecretRef | None = None
    multipart_threshold: Size = 64 * 2**20
    multipart_chunk_size: Size = 16 * 2**20
    max_concurrency: int = Field(default=4, ge=1, le=64)
    max_attempts: int = Field(default=8, ge=1)
    connect_timeout: Duration = timedelta(seconds=10)
    read_timeout: Duration = timedelta(seconds=60)

    @field_validator("storage_class")
    @classmethod
    def _known_class(cls, value: str | None) -> str | None:
        known = {
            "STANDARD",
            "STANDARD_IA",
            "ONEZONE_IA",
            "INTELLIGENT_TIERING",
            "REDUCED_REDUNDANCY",
            "GLACIER",
            "GLACIER_IR",
            "DEEP_ARCHIVE",
        }
        if value is not None and value not in known:
            raise ValueError(f"must be one of {', '.join(sorted(known))}, got {value!r}")
        return value


class Retention(Model):
    keep_last: int | None = Field(default=None, ge=0)
    keep_hourly: int | None = Field(default=None, ge=0)
    keep_daily: int | None = Field(default=None, ge=0)
    keep_weekly: int | None = Field(default=None, ge=0)
    keep_monthly: int | None = Field(default=None, ge=0)
    keep_yearly: int | None = Field(default=None, ge=0)
    keep_within: Duration | None = None
    keep_within_hourly: Duration | None = None
    keep_within_daily: Duration | None = None
    keep_within_weekly: Duration | None = None
    keep_within_monthly: Duration | None = None
    keep_within_yearly: Duration | None = None
    keep_tags: list[list[str]] = []
    timezone: TimeZone = "UTC"

    @model_validator(mode="after")
    def _not_empty(self) -> Retention:
        rules = self.model_dump(exclude={"timezone", "keep_tags"})
        if not any(v for v in rules.values()) and not self.keep_tags:
            raise ValueError("an empty retention policy would remove every snapshot; give a rule")
        return self


class PruneConfig(Model):
    schedule: Schedule | None = Schedule(weekly_on="sunday", at="04:00")
    repack_threshold_percent: float = Field(default=20, ge=0, le=100)
    delete_old_versions: bool = False


class BackupConfig(Model):
    repository: str
    s3: S3Config = S3Config()
    password_file: SecretFile | None = None
    password: SecretRef | None = None
    compression_level: int = Field(default=3, ge=-7, le=22)
    pack_size: Size = 16 * 2**20
    cache_dir: Path | None = None
    schedule: Schedule | None = Schedule(daily_at="02:00")
    sources: list[Source] = []
    retention: Retention | None = None
    prune: PruneConfig = PruneConfig()
    # how long a job waits for another process's conflicting lock (a prune while a
    # backup runs) before it fails
    lock_wait: Duration = timedelta(minutes=10)

    @field_validator("repository")
    @classmethod
    def _repository_url(cls, value: str) -> str:
        if value.startswith("s3://"):
            if len(value[5:].split("/", 1)[0]) < 3:
                raise ValueError(f"expected s3://BUCKET[/PREFIX], got {value!r}")
        elif value.startswith("file://"):
            if not value[7:].startswith("/"):
                raise ValueError(f"file:// URLs take an absolute path, got {value!r}")
        elif "://" in value:
            raise ValueError(f"expected a path, file:///path or s3://bucket/prefix, got {value!r}")
        return value

    @field_validator("sources")
    @classmethod
    def _unique_sources(cls, sources: list[Any]) -> list[Any]:
        _refuse_duplicates([s.name for s in sources], "source")
        return sources


# --- restore test ----------------------------------------------------------------------


class RandomWithin(Model):
    random_within: Duration


class Sandbox(Model):
    kind: Literal["local", "ssh"] = "local"
    root: Path = Path("/var/tmp/opsagent-sandbox")
    postgres_dsn: str | None = None
    postgres_password_file: SecretFile | None = None
    mysql_host: str | None = None
    mysql_port: int = Field(default=3306, ge=1, le=65535)
    mysql_user: str = "root"
    mysql_option_file: Path | None = None
    host: str | None = None
    port: int = Field(default=22, ge=1, le=65535)
    user: str | None = None
    key_file: Path | None = None
    known_hosts: Path | None = None
    remote_command: str = "opsagent"
    remote_config: str | None = None

    @model_validator(mode="after")
    def _ssh_needs(self) -> Sandbox:
        if self.kind == "ssh":
            missing = [k for k in ("host", "user", "known_hosts") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"an ssh sandbox needs {', '.join(missing)}")
        return self


class DataVerify(Model):
    full_every: Duration = timedelta(days=7)
    daily_budget: Size | None = None


class CommandAssertion(Model):
    name: str | None = None
    command: list[str] | str
    shell: bool = False
    timeout: Duration = timedelta(minutes=5)


class Verify(Model):
    data: DataVerify = DataVerify()
    sql: list[str] = []
    commands: list[CommandAssertion | list[str] | str] = []


class RestoreTestConfig(Model):
    schedule: Schedule | None = Schedule(daily_at="06:00")
    snapshot: Literal["latest"] | RandomWithin = "latest"
    sources: list[str] | None = None
    sandbox: Sandbox = Sandbox()
    verify: Verify = Verify()
    max_rto: Duration | None = None
    max_rpo: Duration | None = None
    keep_sandbox_for: Duration = timedelta(0)
    timeout: Duration = timedelta(hours=6)


# --- cases ------------------------------------------------------------------------------


class Holidays(Model):
    """Public holidays of the support policy: Ontario's unless the config says otherwise."""

    country: str | None = "CA"
    subdivision: str | None = "ON"
    dates: list[str] = []

    @model_validator(mode="after")
    def _known(self) -> Holidays:
        """Refuse a country or subdivision the `holidays` package lacks at `config check`,
        not at the first SLA computation."""
        if self.country is None:
            return self
        import holidays

        try:
            holidays.country_holidays(self.country, subdiv=self.subdivision)
        except NotImplementedError as exc:
            raise ValueError(str(exc)) from None
        return self


class Calendar(Model):
    timezone: TimeZone = "America/Toronto"
    hours: str = "08:00-18:00"
    weekdays: str = "mon-fri"
    holidays: Holidays = Holidays()

    @field_validator("weekdays")
    @classmethod
    def _weekdays(cls, value: str) -> str:
        day = r"(mon|tue|wed|thu|fri|sat|sun)"
        if not re.fullmatch(rf"{day}(-{day})?(,{day}(-{day})?)*", value.strip().lower()):
            raise ValueError(f"expected days like mon-fri or mon,wed,fri, got {value!r}")
        return value

    @field_validator("hours")
    @classmethod
    def _hours(cls, value: str) -> str:
        start, sep, end = value.partition("-")
        if not sep or not _CLOCK.match(start) or not _CLOCK.match(end) or start >= end:
            raise ValueError(f"expected HH:MM-HH:MM with start before end, got {value!r}")
        return value


class Target(Model):
    response: Duration
    resolution: Duration
    business: bool = True


class NotifyBase(Model):
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    severities: list[Severity] = Field(default=list(Severity), min_length=1)
    timeout: Duration = timedelta(seconds=10)


# Each secret below is given once, as a `${ENV}` reference or a file; the reference is
# declared first so that the file's validator sees it. Whether the file can be read here
# is no part of the model (the config may be checked on another machine): `config check`
# and the agent at start look (`secret_file_problems`), and a notifier whose secret fails
# at send time fails alone.


class PagerDutyNotify(NotifyBase):
    kind: Literal["pagerduty"]
    routing_key: SecretRef | None = None
    routing_key_file: SecretFile | None = Field(default=None, validate_default=True)
    url: WebUrl = "https://events.pagerduty.com/v2/enqueue"

    @field_validator("routing_key_file")
    @classmethod
    def _key_given(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _one_secret(value, info, "routing_key", required=True)


class WebhookNotify(NotifyBase):
    kind: Literal["webhook"]
    url: WebUrl
    secret: SecretRef | None = None
    secret_file: SecretFile | None = None

    @field_validator("secret_file")
    @classmethod
    def _secret_once(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _one_secret(value, info, "secret", required=False)


class EmailNotify(NotifyBase):
    kind: Literal["email"]
    smtp: str
    from_: MailAddress = Field(alias="from")
    to: list[MailAddress] = Field(min_length=1)
    starttls: bool = True
    username: str | None = None
    password: SecretRef | None = None
    password_file: SecretFile | None = Field(default=None, validate_default=True)

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @field_validator("smtp")
    @classmethod
    def _smtp_endpoint(cls, value: str) -> str:
        smtp_endpoint(value)
        return value

    @field_validator("password_file")
    @classmethod
    def _password_given(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _one_secret(value, info, "password", required=info.data.get("username") is not None)

    @property
    def endpoint(self) -> tuple[str, int]:
        """(host, port) of the SMTP server."""
        return smtp_endpoint(self.smtp)


class SlackNotify(NotifyBase):
    kind: Literal["slack"]
    webhook_url: SecretRef | None = None
    webhook_url_file: SecretUrlFile | None = Field(default=None, validate_default=True)

    @field_validator("webhook_url_file")
    @classmethod
    def _url_given(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _one_secret(value, info, "webhook_url", required=True)


class HeartbeatNotify(NotifyBase):
    kind: Literal["heartbeat"]
    url: WebUrl
    jobs: list[str] = ["backup", "restore_test"]


Notifier = Annotated[
    PagerDutyNotify | WebhookNotify | EmailNotify | SlackNotify | HeartbeatNotify,
    Field(discriminator="kind"),
]


class CasesConfig(Model):
    store: str | None = None
    calendar: Calendar = Calendar()
    targets: dict[Severity, Target] = {}
    auto_resolve: bool = True
    reopen_within: Duration = timedelta(hours=1)
    notify: list[Notifier] = []

    @field_validator("store")
    @classmethod
    def _store_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if value.startswith(("postgresql://", "postgres://")):
            return _no_inline_password(value)
        if not value.startswith("sqlite:///"):
            raise ValueError(f"expected sqlite:///PATH or postgresql://..., got {value!r}")
        path = value.removeprefix("sqlite://").lstrip("/")
        if not path or path.endswith("/") or "?" in path or "#" in path:
            raise ValueError(
                f"expected sqlite:///PATH/TO/FILE.db (a file, no query string), got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _unique_notifier_names(self) -> CasesConfig:
        """A notifier's name is its identity in a shared store: two may not share one."""
        seen: dict[str, int] = {}
        for i, notifier in enumerate(self.notify):
            if notifier.kind == "heartbeat":
                continue
            name = notifier.name or f"{notifier.kind}-{i}"
            if name in seen:
                raise ValueError(
                    f"notify[{i}].name: {name!r} is already the name of notify[{seen[name]}];"
                    " each notifier needs its own name"
                )
            seen[name] = i
        return self


# --- the whole file ---------------------------------------------------------------------


class LogConfig(Model):
    format: Literal["text", "json"] | None = None
    level: Literal["debug", "info", "warning", "error"] = "info"


# --- fleet inventory (its own file: the hosts `opsagent fleet` reaches over SSH) ---------


class FleetDefaults(Model):
    """Settings every host of the inventory takes unless it sets its own."""

    user: str = "opsagent"
    port: int = Field(default=22, ge=1, le=65535)
    key_file: Path | None = None
    passphrase_file: SecretFile | None = None
    opsagent: str = "opsagent"
    config: str | None = None
    connect_timeout: Duration = timedelta(seconds=10)
    command_timeout: Duration = timedelta(minutes=10)
    keepalive: Duration = timedelta(seconds=15)
    upgrade_command: str = (
        "/opt/opsagent/bin/pip install --quiet 'opsagent=={version}'"
        " && sudo -n systemctl restart opsagent"
    )


class FleetHost(Model):
    """One host: where to reach it, how, and how to select it."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    address: str
    port: int | None = Field(default=None, ge=1, le=65535)
    user: str | None = None
    key_file: Path | None = None
    passphrase_file: SecretFile | None = None
    jump: str | None = None
    groups: list[str] = []
    labels: dict[str, str] = {}
    opsagent: str | None = None
    config: str | None = None
    upgrade_command: str | None = None


class Inventory(Model):
    """The fleet: hosts, their defaults, the known_hosts file (required: host keys are
    checked, never added) and where the fleet's audit history is kept."""

    known_hosts: Path
    state_dir: Path = Path("~/.local/state/opsagent")
    defaults: FleetDefaults = FleetDefaults()
    hosts: list[FleetHost] = Field(min_length=1)

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


class Config(Model):
    host: str = Field(default_factory=socket.gethostname, min_length=1)
    state_dir: Path = Path("/var/lib/opsagent")
    log: LogConfig = LogConfig()
    exporter: ExporterConfig = ExporterConfig()
    monitor: MonitorConfig = MonitorConfig()
    backup: BackupConfig | None = None
    restore_test: RestoreTestConfig | None = None
    cases: CasesConfig = CasesConfig()

    @property
    def state_db(self) -> Path:
        return self.state_dir / "state.db"

    @property
    def cases_store(self) -> str:
        return self.cases.store or f"sqlite:///{(self.state_dir / 'cases.db').absolute()}"

    def redacted(self) -> dict[str, Any]:
        """The effective config as plain data, safe to print: no secret value appears."""
        return _redact(self.model_dump(mode="json", by_alias=True))


def config_path(explicit: str | os.PathLike[str] | None) -> Path:
    """Where the config is: `--config`, then $OPSAGENT_CONFIG, then /etc/opsagent/config.yml."""
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    return DEFAULT_CONFIG_PATH


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate one config file; raises ConfigError with every problem found."""
    path = Path(path)
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{name}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{name}: cannot read: {_one_line(exc)}"]) from None
    return parse_config(text, name)


def parse_config(text: str, name: str = "config.yml") -> Config:
    """Validate YAML text; `name` is what error lines call the file."""
    return _parse(text, name, Config)


M = TypeVar("M", bound=BaseModel)


def _parse(text: str, name: str, model: type[M]) -> M:
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError([f"{name}: {where}YAML syntax error: {exc.problem}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{name}: YAML syntax error: {_one_line(exc)}"]) from None
    except RecursionError:
        raise ConfigError([f"{name}: YAML nesting too deep"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{name}: (top level): must be a mapping, got {_kind_of(data)}"])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_error_lines(name, exc, data)) from None
    except RecursionError:
        raise ConfigError([f"{name}: YAML nesting too deep"]) from None


def load_inventory(path: str | os.PathLike[str]) -> Inventory:
    """Read and validate a fleet inventory; ConfigError with every problem, one per line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {_one_line(exc)}"]) from None
    return _parse(text, str(path), Inventory)


def inventory_path(given: Path | None) -> Path:
    """--inventory, then $OPSAGENT_INVENTORY, then /etc/opsagent/inventory.yml."""
    if given is not None:
        return given
    env = os.environ.get("OPSAGENT_INVENTORY")
    return Path(env) if env else Path("/etc/opsagent/inventory.yml")


def resolve_secret(ref: str | None = None, file: Path | None = None) -> str | None:
    """The secret behind a `${ENV}` reference or a file (stripped); None if unset."""
    if file is not None:
        return _read_secret_file(file)
    if ref is not None:
        match = _ENV_REF.match(ref)
        var = match.group(1) if match else ref
        if var not in os.environ:
            raise ConfigError([f"environment variable {var} is not set"])
        return os.environ[var]
    return None


def secret_file_problem(file: Path, holds_url: bool = False) -> str | None:
    """Why this user cannot use `file` as a secret file (`FILE: what`); None if it can."""
    try:
        secret = _read_secret_file(file)
    except ConfigError as exc:
        return exc.lines[0]
    if not secret:
        return f"{file}: secret file is empty"
    if holds_url and url_problem(secret) is not None:
        return f"{file}: does not hold an http:// or https:// URL with a host"
    return None


def secret_file_problems(model: BaseModel, where: str = "") -> list[str]:
    """`YAML.path: FILE: what` for each secret file in the config this user cannot use.

    Not part of validating the model: the files belong to the host that runs the agent,
    and the config may be checked elsewhere."""
    problems: list[str] = []
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        path = f"{where}.{field.alias or name}" if where else field.alias or name
        mark = _secret_file_mark(field)
        if value is not None and _is_secret_ref(field):
            variable = _ENV_REF.match(value).group(1)  # type: ignore[union-attr]
            if not os.environ.get(variable, "").strip():
                problems.append(f"{path}: environment variable {variable} is unset or empty")
        elif mark is not None and value is not None:
            problem = secret_file_problem(value, mark.holds_url)
            if problem is not None:
                problems.append(f"{path}: {problem}")
        elif isinstance(value, BaseModel):
            problems += secret_file_problems(value, path)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    problems += secret_file_problems(item, f"{path}[{i}]")
    return problems


def url_problem(url: str) -> str | None:
    """Why `url` is not an http(s) URL with a host; None if it is one."""
    if not url or any(c.isspace() or not c.isprintable() for c in url):
        return "must be an http:// or https:// URL with a host and no spaces"
    try:
        parts = urlsplit(url)
        host, _port = parts.hostname, parts.port  # a port that is no number raises
    except ValueError:
        return "must be an http:// or https:// URL with a host and a numeric port"
    if parts.scheme not in ("http", "https") or not host:
        return "must be an http:// or https:// URL with a host"
    return None


def smtp_endpoint(smtp: str) -> tuple[str, int]:
    """(host, port) of `HOST[:PORT]` (`[V6]:PORT` too; port 25 if none); ValueError if not."""
    try:
        parts = urlsplit(f"//{smtp}")
        port = parts.port
    except ValueError:
        port, parts = None, None
    if parts is None or not parts.hostname or parts.username or parts.path or parts.query:
        raise ValueError(f"expected HOST[:PORT] of an SMTP server, got {_kind_of(smtp)}")
    return parts.hostname, port or 25


# --- helpers ----------------------------------------------------------------------------


def _read_secret_file(file: Path) -> str:
    """The file's text, stripped, if only its owner may read it (as ssh wants of keys)."""
    try:
        mode = file.stat().st_mode
    except FileNotFoundError:
        raise ConfigError([f"{file}: secret file does not exist"]) from None
    except OSError as exc:
        raise ConfigError([f"{file}: cannot read secret: {exc.strerror or exc}"]) from None
    if not stat.S_ISREG(mode):
        raise ConfigError([f"{file}: secret file is not a regular file"])
    if mode & stat.S_IROTH:  # anyone on the host could read it: refuse, say the fix
        raise ConfigError(
            [
                f"{file}: secret file is readable by every user"
                f" (mode {stat.S_IMODE(mode):04o}); run: chmod 600 {file}"
            ]
        )
    if mode & 0o077:
        raise ConfigError(
            [
                f"{file}: secret file is open to its group or other users"
                f" (mode {stat.S_IMODE(mode):04o}, must be 0600 or stricter);"
                f" run: chmod 600 {file}"
            ]
        )
    try:
        return file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError([f"{file}: cannot read secret: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{file}: secret file is not UTF-8 text"]) from None


def _is_secret_ref(field: FieldInfo) -> bool:
    """Whether the field holds a `${VARIABLE}` secret reference."""
    inner = [getattr(arg, "__metadata__", ()) for arg in typing.get_args(field.annotation)]
    return any(
        getattr(meta, "func", None) is _secret_ref
        for meta in [*field.metadata, *(m for metas in inner for m in metas)]
    )


def _secret_file_mark(field: FieldInfo) -> _SecretFileMark | None:
    # pydantic keeps the mark in the field's metadata (`SecretFile`) or in the annotation
    # (`SecretFile | None`)
    inner = [getattr(arg, "__metadata__", ()) for arg in typing.get_args(field.annotation)]
    for meta in [*field.metadata, *(m for metas in inner for m in metas)]:
        if isinstance(meta, _SecretFileMark):
            return meta
    return None


def _one_secret(value: Path | None, info: ValidationInfo, key: str, required: bool) -> Path | None:
    """A secret given once: `KEY_file` or `KEY: ${ENV}`, not both; one of them if required."""
    if key not in info.data:  # the reference itself is invalid, and reported
        return value
    if value is not None and info.data[key] is not None:
        raise ValueError(f"give {key}_file or {key}, not both")
    if value is None and info.data[key] is None and required:
        raise ValueError(f"required (or {key}: ${{ENV_VAR}})")
    return value


def _no_inline_password(dsn: str) -> str:
    parts = urlsplit(dsn)
    if parts.password:
        raise ValueError("contains a password; use password_file or ${ENV_VAR} instead")
    if re.search(r"(^|\s)password\s*=", dsn):
        raise ValueError("contains a password; use password_file or ${ENV_VAR} instead")
    return dsn


def _refuse_duplicates(names: list[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"two {what}s are named {name!r}; names must be unique")
        seen.add(name)


_SECRET_KEY = re.compile(r"(password|secret|token|routing_key|webhook_url)$")


def _redact(node: Any, key: str = "") -> Any:
    if isinstance(node, dict):
        return {k: _redact(v, k) for k, v in node.items()}
    if isinstance(node, list):
        return [_redact(v, key) for v in node]
    if isinstance(node, str):
        if _SECRET_KEY.search(key) and not _ENV_REF.match(node):
            return "***"
        if "://" in node:
            return redact_url(node)
    return node


def redact_url(url: str) -> str:
    if url.startswith("sqlite:"):  # a path, no secret; urlunsplit would eat its slashes
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password:
        netloc = netloc.replace(f":{parts.password}@", ":***@")
    query = "***" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _kind_of(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _error_lines(name: str, exc: ValidationError, data: Any) -> list[str]:
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        path, parent = _yaml_path(err["loc"], data)
        message = _message(err, parent)
        line = f"{name}: {path or '(top level)'}: {message}"
        if line not in lines:
            lines.append(line)
    return lines


def _yaml_path(loc: tuple[Any, ...], data: Any) -> tuple[str, Any]:
    """Turn pydantic's location into a YAML path, dropping the union labels it inserts."""
    path = ""
    node, parent = data, None
    after_index = False
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
            parent, node = node, node[part] if isinstance(node, list) and part < len(node) else None
            after_index = True
            continue
        in_node = isinstance(node, dict) and part in node
        if after_index and isinstance(node, dict) and node.get("kind") == part:
            after_index = False
            continue
        after_index = False
        if not in_node and _is_union_label(part):
            continue
        path += f".{part}" if path else str(part)
        parent, node = node, node.get(part) if isinstance(node, dict) else None
    return path, parent


def _is_union_label(part: str) -> bool:
    return "[" in part or part[:1].isupper() or part in {"str", "int", "float", "bool"}


_SIMPLE = {
    "missing": "required",
    "int_type": "must be an integer, got {input}",
    "int_parsing": "must be an integer, got {input}",
    "int_from_float": "must be an integer, got {input}",
    "float_type": "must be a number, got {input}",
    "float_parsing": "must be a number, got {input}",
    "bool_type": "must be true or false, got {input}",
    "bool_parsing": "must be true or false, got {input}",
    "string_type": "must be a string, got {input}",
    "list_type": "must be a list, got {input}",
    "dict_type": "must be a mapping, got {input}",
    "model_type": "must be a mapping, got {input}",
    "model_attributes_type": "must be a mapping, got {input}",
    "greater_than_equal": "must be >= {ge}, got {input}",
    "greater_than": "must be > {gt}, got {input}",
    "less_than_equal": "must be <= {le}, got {input}",
    "less_than": "must be < {lt}, got {input}",
    "string_too_short": "must not be empty",
    "too_short": "must have at least {min_length} item(s)",
    "string_pattern_mismatch": "must match {pattern}, got {input}",
    "union_tag_not_found": "kind: required",
    "enum": "must be one of {expected}, got {input}",
    "literal_error": "must be one of {expected}, got {input}",
    "union_tag_invalid": "kind: must be one of {expected_tags}, got {tag}",
}


def _message(err: Mapping[str, Any], parent: Any) -> str:
    kind = err["type"]
    ctx = dict(err.get("ctx") or {})
    if kind == "extra_forbidden":
        key = str(err["loc"][-1])
        close = difflib.get_close_matches(key, _allowed_keys(parent, err), n=1)
        return "unknown key" + (f" (did you mean {close[0]}?)" if close else "")
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", err["msg"]))
    if kind == "string_type" and isinstance(err.get("input"), bool):
        return (
            f"must be a string, got {_kind_of(err['input'])}; quote it: YAML reads "
            "on/off/yes/no unquoted as booleans"
        )
    if kind == "union_tag_invalid":
        ctx["tag"] = repr(ctx.get("tag"))
    if kind in _SIMPLE:
        return _SIMPLE[kind].format(input=_kind_of(err.get("input")), **ctx)
    msg = str(err["msg"])
    return msg[:1].lower() + msg[1:]


def _allowed_keys(parent: Any, err: Mapping[str, Any]) -> list[str]:
    """Keys allowed where an unknown key was found, for a did-you-mean hint."""
    candidates: list[type[BaseModel]] = [Config]
    for part in err["loc"][:-1]:
        if isinstance(part, int):
            continue
        found: list[type[BaseModel]] = []
        for model in candidates:
            if part in model.model_fields:
                found += _models_in(model.model_fields[part].annotation)
            elif part in _kind_tags(model):
                found.append(model)
        candidates = found or candidates
    if len(candidates) != 1:
        return []
    return [f.alias or n for n, f in candidates[0].model_fields.items()]


def _kind_tags(model: type[BaseModel]) -> tuple[Any, ...]:
    field = model.model_fields.get("kind")
    return getattr(field.annotation, "__args__", ()) if field is not None else ()


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    return [c for c in _flatten(annotation) if isinstance(c, type) and issubclass(c, BaseModel)]


def _flatten(annotation: Any) -> list[Any]:
    args = getattr(annotation, "__args__", None)
    if args is None:
        return [annotation]
    out: list[Any] = []
    for arg in args:
        out.extend(_flatten(arg))
    return out
