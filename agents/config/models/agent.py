"""The agent's config file as a whole: `Config`, with its `log` and `exporter` sections."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from agents.config.fields import Model, preset
from agents.config.models.backup import BackupConfig
from agents.config.models.cases import CasesConfig
from agents.config.models.monitor import MonitorConfig
from agents.config.models.restore_test import RestoreTestConfig
from agents.config.secrets import redact


class LogConfig(Model):
    format: Literal["text", "json"] | None = Field(
        default=None, description="`text` or `json` (default: text on a terminal, else json)."
    )
    level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="debug, info, warning or error."
    )


class ExporterConfig(Model):
    enabled: bool = Field(
        default=True, description="Serve /metrics, /healthz, /status and the intake."
    )
    listen: str = Field(
        default="127.0.0.1:9108",
        description=(
            "HOST:PORT or [IPV6]:PORT; anything but loopback (127.0.0.0/8, [::1], localhost) "
            "requires TLS and basic auth."
        ),
    )
    web_config_file: Path | None = Field(
        default=None, description="Prometheus web-config file: TLS, client CA, basic auth."
    )
    textfile: Path | None = Field(
        default=None, description="Also write the exposition here every 15 s (for node_exporter)."
    )
    allow_plain_http: bool = Field(
        default=False,
        description=(
            "Beyond loopback, serve plain HTTP (basic auth still required, its password then "
            "crosses the network in clear): only behind a TLS proxy or on a trusted network."
        ),
    )

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"expected HOST:PORT, got {value!r}")
        if host.startswith("[") and host.endswith("]"):
            import ipaddress  # for bracketed addresses only

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


class Config(Model):
    host: str = Field(
        default_factory=socket.gethostname,
        min_length=1,
        description="Host name reported in results, cases and snapshots (default: the machine's).",
    )
    state_dir: Path = Field(
        default=Path("/var/lib/opsagent"),
        description="Directory of the state database, cases (SQLite) and caches.",
    )
    log: LogConfig = Field(default=preset(LogConfig), description="Logging.")
    exporter: ExporterConfig = Field(
        default=preset(ExporterConfig),
        description="The Prometheus exporter and the Alertmanager intake.",
    )
    monitor: MonitorConfig = Field(
        default=preset(MonitorConfig), description="Host metrics and health checks."
    )
    backup: BackupConfig | None = Field(
        default=None,
        description="The repository, sources, schedule and retention; absent: no backups.",
    )
    restore_test: RestoreTestConfig | None = Field(
        default=None, description="Scheduled restore tests (defaults apply when backup is set)."
    )
    cases: CasesConfig = Field(
        default=preset(CasesConfig), description="Case store, SLA calendar and targets, notifiers."
    )

    @property
    def state_db(self) -> Path:
        return self.state_dir / "state.db"

    @property
    def cases_store(self) -> str:
        return self.cases.store or f"sqlite:///{(self.state_dir / 'cases.db').absolute()}"

    def redacted(self) -> dict[str, Any]:
        """The effective config as plain data, safe to print: no secret value appears."""
        return redact(self.model_dump(mode="json", by_alias=True))
