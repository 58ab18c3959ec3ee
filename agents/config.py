"""The agent's configuration: one YAML file validated into frozen, typed objects.

Every problem is reported as one line naming the file, the YAML path and what is
wrong (`config.yml: backup.retention.keep_daily: must be >= 0, got -1`), all of
them at once. Secrets are never written in the file: a `*_file` path or a
`${ENV_VAR}` reference, resolved only when used (`resolve_secret`).
"""

from __future__ import annotations

import difflib
import os
import re
import socket
import stat
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

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

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        _host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"expected HOST:PORT, got {value!r}")
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]") or "0.0.0.0"

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
    password_file: Path | None = None
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
    password_file: Path | None = None
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
    password_file: Path | None = None
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
    password_file: Path | None = None
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
    access_key_id_file: Path | None = None
    secret_access_key_file: Path | None = None
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
    password_file: Path | None = None
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
    postgres_password_file: Path | None = None
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
    severities: list[Severity] = list(Severity)
    timeout: Duration = timedelta(seconds=10)


class PagerDutyNotify(NotifyBase):
    kind: Literal["pagerduty"]
    routing_key_file: Path | None = None
    routing_key: SecretRef | None = None
    url: str = "https://events.pagerduty.com/v2/enqueue"


class WebhookNotify(NotifyBase):
    kind: Literal["webhook"]
    url: str
    secret_file: Path | None = None
    secret: SecretRef | None = None


class EmailNotify(NotifyBase):
    kind: Literal["email"]
    smtp: str
    from_: str = Field(alias="from")
    to: list[str] = Field(min_length=1)
    starttls: bool = True
    username: str | None = None
    password_file: Path | None = None
    password: SecretRef | None = None

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class SlackNotify(NotifyBase):
    kind: Literal["slack"]
    webhook_url_file: Path | None = None
    webhook_url: SecretRef | None = None


class HeartbeatNotify(NotifyBase):
    kind: Literal["heartbeat"]
    url: str
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
        return value


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
    passphrase_file: Path | None = None
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
    passphrase_file: Path | None = None
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
    """The secret behind a `${ENV}` reference or a file (first line, stripped); None if unset."""
    if file is not None:
        try:
            mode = file.stat().st_mode
            if mode & stat.S_IROTH:  # anyone on the host could read it: refuse, say the fix
                raise ConfigError(
                    [
                        f"{file}: secret file is readable by every user"
                        f" (mode {stat.S_IMODE(mode):04o}); run: chmod 600 {file}"
                    ]
                )
            return file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError([f"{file}: cannot read secret: {exc.strerror or exc}"]) from None
    if ref is not None:
        match = _ENV_REF.match(ref)
        var = match.group(1) if match else ref
        if var not in os.environ:
            raise ConfigError([f"environment variable {var} is not set"])
        return os.environ[var]
    return None


# --- helpers ----------------------------------------------------------------------------


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
