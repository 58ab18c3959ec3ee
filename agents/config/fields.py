"""Value types of config keys (duration, size, time zone, time of day, URL, mail address)
and `Model`, the frozen base of every config object that refuses unknown keys."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from agents.config.errors import kind_of
from agents.records.base import DEFER_BUILD
from agents.units import format_duration, parse_duration, parse_size

# no pydantic plugin is looked for: agents.records.base (imported above) sees to it


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


def _timezone(value: Any) -> str:
    try:
        ZoneInfo(str(value))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}") from None
    return str(value)


TimeZone = Annotated[str, BeforeValidator(_timezone)]

CLOCK = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


def _clock(value: Any) -> str:
    text = str(value)
    if not CLOCK.match(text):
        raise ValueError(f"expected a time of day HH:MM, got {value!r}")
    return text


ClockTime = Annotated[str, BeforeValidator(_clock)]


def _web_url(value: str) -> str:
    problem = url_problem(value)
    if problem is not None:
        raise ValueError(f"{problem}, got {kind_of(value)}")
    return value


WebUrl = Annotated[str, AfterValidator(_web_url)]


def _mail_address(value: str) -> str:
    from email.utils import parseaddr  # the email package, for configs with an address

    if any(not c.isprintable() for c in value) or "@" not in parseaddr(value)[1]:
        raise ValueError(f"expected a mail address like ops@example.com, got {kind_of(value)}")
    return value


MailAddress = Annotated[str, AfterValidator(_mail_address)]


class Model(BaseModel):
    """Base of every config object: frozen, unknown keys refused. Its validator is built
    when first used, not at import (`DEFER_BUILD`, pydantic 2.14 on): loading a config
    builds the whole file's once, and a section nobody validates on its own never costs
    a second copy (the config's import time and memory, paid by every command and the
    agent)."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=DEFER_BUILD)


M = TypeVar("M", bound=BaseModel)


def preset(model: type[M], **values: Any) -> M:
    """A section's default, built without validating (which would build that section's
    validator at import): the values are the code's own, and tests/unit/test_config.py
    validates every preset as it would a config file's."""
    return model.model_construct(**values)


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


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
        raise ValueError(f"expected HOST[:PORT] of an SMTP server, got {kind_of(smtp)}")
    return parts.hostname, port or 25


def refuse_duplicates(names: list[str], what: str) -> None:
    """ValueError naming the first repeated name: checks, sources... are known by name."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"two {what}s are named {name!r}; names must be unique")
        seen.add(name)
