"""The agent's configuration: one YAML file validated into frozen, typed objects.

Every problem is reported as one line naming the file, the YAML path and what is
wrong (`config.yml: backup.retention.keep_daily: must be >= 0, got -1`), all of
them at once. Secrets are never written in the file: a `*_file` path or a
`${ENV_VAR}` reference, resolved only when used (`resolve_secret`). Secret files belong
to the host, not to the file: `secret_file_problems` checks them apart (exist, readable,
0600), for `config check` and the agent at start.

The package: `errors` (ConfigError, error lines), `fields` (value types, the `Model`
base), `secrets` (references, secret files, redaction), `models.*` (one module per
section, each key described on its field), `loading` (files to models), `inventory`
(the fleet's own file). Everything is re-exported here: import from `agents.config`.
"""

from __future__ import annotations

from agents.config.errors import ConfigError
from agents.config.fields import (
    WEEKDAYS,
    ClockTime,
    Duration,
    MailAddress,
    Model,
    Size,
    TimeZone,
    WebUrl,
    smtp_endpoint,
    url_problem,
)
from agents.config.inventory import (
    FleetDefaults,
    FleetHost,
    Inventory,
    inventory_path,
    load_inventory,
)
from agents.config.loading import (
    CONFIG_ENV,
    DEFAULT_CONFIG_PATH,
    config_path,
    load_config,
    parse_config,
)
from agents.config.models.agent import Config, ExporterConfig, LogConfig
from agents.config.models.backup import (
    BackupConfig,
    FilesSource,
    Hooks,
    MysqlSource,
    ObjectLock,
    PostgresSource,
    PruneConfig,
    Retention,
    S3Config,
    Source,
    SourceBase,
    SqliteSource,
)
from agents.config.models.cases import (
    Calendar,
    CasesConfig,
    EmailNotify,
    HeartbeatNotify,
    Holidays,
    Notifier,
    NotifyBase,
    PagerDutyNotify,
    SlackNotify,
    Target,
    WebhookNotify,
)
from agents.config.models.monitor import (
    Check,
    CheckBase,
    CommandCheck,
    DiskCheck,
    FileAgeCheck,
    HttpCheck,
    MonitorConfig,
    MysqlCheck,
    PostgresCheck,
    ProcessCheck,
    TcpCheck,
    ValueBounds,
)
from agents.config.models.restore_test import (
    CommandAssertion,
    DataVerify,
    RandomWithin,
    RestoreTestConfig,
    Sandbox,
    Verify,
)
from agents.config.models.schedule import Schedule
from agents.config.secrets import (
    SecretFile,
    SecretRef,
    SecretUrlFile,
    redact_url,
    resolve_secret,
    secret_file_problem,
    secret_file_problems,
)

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_PATH",
    "WEEKDAYS",
    "BackupConfig",
    "Calendar",
    "CasesConfig",
    "Check",
    "CheckBase",
    "ClockTime",
    "CommandAssertion",
    "CommandCheck",
    "Config",
    "ConfigError",
    "DataVerify",
    "DiskCheck",
    "Duration",
    "EmailNotify",
    "ExporterConfig",
    "FileAgeCheck",
    "FilesSource",
    "FleetDefaults",
    "FleetHost",
    "HeartbeatNotify",
    "Holidays",
    "Hooks",
    "HttpCheck",
    "Inventory",
    "LogConfig",
    "MailAddress",
    "Model",
    "MonitorConfig",
    "MysqlCheck",
    "MysqlSource",
    "Notifier",
    "NotifyBase",
    "ObjectLock",
    "PagerDutyNotify",
    "PostgresCheck",
    "PostgresSource",
    "ProcessCheck",
    "PruneConfig",
    "RandomWithin",
    "RestoreTestConfig",
    "Retention",
    "S3Config",
    "Sandbox",
    "Schedule",
    "SecretFile",
    "SecretRef",
    "SecretUrlFile",
    "Size",
    "SlackNotify",
    "Source",
    "SourceBase",
    "SqliteSource",
    "Target",
    "TcpCheck",
    "TimeZone",
    "ValueBounds",
    "Verify",
    "WebUrl",
    "WebhookNotify",
    "config_path",
    "inventory_path",
    "load_config",
    "load_inventory",
    "parse_config",
    "redact_url",
    "resolve_secret",
    "secret_file_problem",
    "secret_file_problems",
    "smtp_endpoint",
    "url_problem",
]
