"""The `cases` section: case store, SLA calendar and targets, notifiers (one model per kind)."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from agents.config.fields import (
    CLOCK,
    Duration,
    MailAddress,
    Model,
    TimeZone,
    WebUrl,
    preset,
    smtp_endpoint,
)
from agents.config.secrets import (
    SecretFile,
    SecretRef,
    SecretUrlFile,
    no_inline_password,
    one_secret,
)
from agents.results import Severity

# the support policy's own region: known to the `holidays` package (a test says so), so a
# config that keeps it need not load the package (every country's module, about 17 MB and
# a tenth of a second) to be validated; the SLA clock loads it when it first needs a date
DEFAULT_REGION = ("CA", "ON")


class Holidays(Model):
    """Public holidays of the support policy: Ontario's unless the config says otherwise."""

    country: str | None = Field(
        default=DEFAULT_REGION[0],
        description="Country code for public holidays (python-holidays); null for none.",
    )
    subdivision: str | None = Field(
        default=DEFAULT_REGION[1],
        description='Province or state (quote `"ON"`: YAML reads ON as true).',
    )
    dates: list[str] = Field(default=[], description="Extra YYYY-MM-DD dates.")

    @model_validator(mode="after")
    def _known(self) -> Holidays:
        """Refuse a country or subdivision the `holidays` package lacks at `config check`,
        not at the first SLA computation."""
        if self.country is None or (self.country, self.subdivision) == DEFAULT_REGION:
            return self
        import holidays

        try:
            holidays.country_holidays(self.country, subdiv=self.subdivision)
        except NotImplementedError as exc:
            raise ValueError(str(exc)) from None
        return self


class Calendar(Model):
    timezone: TimeZone = Field(
        default="America/Toronto", description="Time zone of the business hours."
    )
    hours: str = Field(default="08:00-18:00", description="HH:MM-HH:MM.")
    weekdays: str = Field(default="mon-fri", description="e.g. mon-fri.")
    holidays: Holidays = Field(default=preset(Holidays), description="Days the clock does not run.")

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
        if not sep or not CLOCK.match(start) or not CLOCK.match(end) or start >= end:
            raise ValueError(f"expected HH:MM-HH:MM with start before end, got {value!r}")
        return value


class Target(Model):
    response: Duration = Field(description="Time to acknowledge.")
    resolution: Duration = Field(description="Time to resolve.")
    business: bool = Field(
        default=True, description="Count business time only (false: wall-clock)."
    )


class NotifyBase(Model):
    name: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$",
        description=(
            "Stable name of this destination (letters, digits, `._-`); agents sharing a case store"
            " deliver only the names they have, so declare the same name on every agent that can "
            "reach it. Default `<kind>-<index>` (meaningful in this file only)."
        ),
    )
    severities: list[Severity] = Field(
        default=list(Severity), min_length=1, description="Severities this notifier receives."
    )
    timeout: Duration = Field(
        default=timedelta(seconds=10),
        description="Delivery timeout (failed deliveries retry with backoff).",
    )


# Each secret below is given once, as a `${ENV}` reference or a file; the reference is
# declared first so that the file's validator sees it. Whether the file can be read here
# is no part of the model (the config may be checked on another machine): `config check`
# and the agent at start look (`secret_file_problems`), and a notifier whose secret fails
# at send time fails alone.


class PagerDutyNotify(NotifyBase):
    kind: Literal["pagerduty"] = Field(description="`pagerduty` (Events API v2).")
    routing_key: SecretRef | None = Field(default=None, description="Routing key as `${ENV_VAR}`.")
    routing_key_file: SecretFile | None = Field(
        default=None,
        validate_default=True,
        description="File holding the routing key (mode 0600); this or `routing_key` is required.",
    )
    url: WebUrl = Field(
        default="https://events.pagerduty.com/v2/enqueue",
        description="Events API URL (http or https).",
    )

    @field_validator("routing_key_file")
    @classmethod
    def _key_given(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return one_secret(value, info, "routing_key", required=True)


class WebhookNotify(NotifyBase):
    kind: Literal["webhook"] = Field(description="`webhook` (JSON POST, HMAC-signed).")
    url: WebUrl = Field(description="Where to POST (an http or https URL).")
    secret: SecretRef | None = Field(default=None, description="HMAC secret as `${ENV_VAR}`.")
    secret_file: SecretFile | None = Field(
        default=None, description="File holding the HMAC secret (mode 0600)."
    )

    @field_validator("secret_file")
    @classmethod
    def _secret_once(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return one_secret(value, info, "secret", required=False)


class EmailNotify(NotifyBase):
    kind: Literal["email"] = Field(description="`email`.")
    smtp: str = Field(description="host:port of the SMTP server (port 25 if none; `[v6]:port`).")
    from_: MailAddress = Field(alias="from", description="From address (key: `from`).")
    to: list[MailAddress] = Field(min_length=1, description="Recipients.")
    starttls: bool = Field(default=True, description="Require STARTTLS.")
    username: str | None = Field(default=None, description="SMTP user.")
    password: SecretRef | None = Field(default=None, description="SMTP password as `${ENV_VAR}`.")
    password_file: SecretFile | None = Field(
        default=None,
        validate_default=True,
        description=(
            "File holding the SMTP password (mode 0600); this or `password` is required with "
            "`username`."
        ),
    )

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @field_validator("smtp")
    @classmethod
    def _smtp_endpoint(cls, value: str) -> str:
        smtp_endpoint(value)
        return value

    @field_validator("password_file")
    @classmethod
    def _password_given(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return one_secret(value, info, "password", required=info.data.get("username") is not None)

    @property
    def endpoint(self) -> tuple[str, int]:
        """(host, port) of the SMTP server."""
        return smtp_endpoint(self.smtp)


class SlackNotify(NotifyBase):
    kind: Literal["slack"] = Field(description="`slack` (incoming webhook).")
    webhook_url: SecretRef | None = Field(default=None, description="Webhook URL as `${ENV_VAR}`.")
    webhook_url_file: SecretUrlFile | None = Field(
        default=None,
        validate_default=True,
        description="File holding the webhook URL (mode 0600); this or `webhook_url` is required.",
    )

    @field_validator("webhook_url_file")
    @classmethod
    def _url_given(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return one_secret(value, info, "webhook_url", required=True)


class HeartbeatNotify(NotifyBase):
    kind: Literal["heartbeat"] = Field(
        description="`heartbeat` (dead-man's switch: ping on start and end of jobs)."
    )
    url: WebUrl = Field(
        description="Ping URL (http or https); `{job}` is replaced by the job name."
    )
    jobs: list[str] = Field(default=["backup", "restore_test"], description="Jobs that ping.")


Notifier = Annotated[
    PagerDutyNotify | WebhookNotify | EmailNotify | SlackNotify | HeartbeatNotify,
    Field(discriminator="kind"),
]


class CasesConfig(Model):
    store: str | None = Field(
        default=None,
        description=(
            "sqlite:///ABSOLUTE/PATH (always from /, wherever a command runs) or postgresql://... "
            "(shared by many agents)."
        ),
    )
    calendar: Calendar = Field(
        default=preset(Calendar), description="Business hours for the SLA clocks."
    )
    targets: dict[Severity, Target] = Field(
        default={}, description="Override response/resolution targets per severity."
    )
    auto_resolve: bool = Field(default=True, description="Resolve a case when its check recovers.")
    reopen_within: Duration = Field(
        default=timedelta(hours=1),
        description="A failure this soon after resolution reopens the case.",
    )
    notify: list[Notifier] = Field(
        default=[], description="Notifiers; each is one of the kinds below."
    )

    @field_validator("store")
    @classmethod
    def _store_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if value.startswith(("postgresql://", "postgres://")):
            return no_inline_password(value)
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
