"""Secrets by reference only: a `${ENV_VAR}` or a `*_file` path in the config, resolved when
used (`resolve_secret`), checked on this host apart from validation (exists, readable, 0600:
`secret_file_problems`), and kept out of printed config (`redact`, `redact_url`)."""

from __future__ import annotations

import os
import re
import stat
import typing
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, BeforeValidator, ValidationInfo
from pydantic.fields import FieldInfo

from agents.config.errors import ConfigError
from agents.config.fields import url_problem

ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def _secret_ref(value: Any) -> str:
    if not isinstance(value, str) or not ENV_REF.match(value):
        raise ValueError(
            "secrets are given by reference only: use the matching *_file key "
            "or an environment reference like ${MY_SECRET}"
        )
    return value


SecretRef = Annotated[str, BeforeValidator(_secret_ref)]


class _SecretFileMark:
    """Marks a path as a secret file, which `secret_file_problems` checks on this host."""

    def __init__(self, holds_url: bool = False) -> None:
        self.holds_url = holds_url


SecretFile = Annotated[Path, _SecretFileMark()]
SecretUrlFile = Annotated[Path, _SecretFileMark(holds_url=True)]


def resolve_secret(ref: str | None = None, file: Path | None = None) -> str | None:
    """The secret behind a `${ENV}` reference or a file (stripped); None if unset."""
    if file is not None:
        return _read_secret_file(file)
    if ref is not None:
        match = ENV_REF.match(ref)
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
            variable = ENV_REF.match(value).group(1)  # type: ignore[union-attr]
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


def one_secret(value: Path | None, info: ValidationInfo, key: str, required: bool) -> Path | None:
    """A secret given once: `KEY_file` or `KEY: ${ENV}`, not both; one of them if required."""
    if key not in info.data:  # the reference itself is invalid, and reported
        return value
    if value is not None and info.data[key] is not None:
        raise ValueError(f"give {key}_file or {key}, not both")
    if value is None and info.data[key] is None and required:
        raise ValueError(f"required (or {key}: ${{ENV_VAR}})")
    return value


def no_inline_password(dsn: str) -> str:
    """The DSN unchanged, or ValueError if it holds a password (which belongs in a secret)."""
    parts = urlsplit(dsn)
    if parts.password:
        raise ValueError("contains a password; use password_file or ${ENV_VAR} instead")
    if re.search(r"(^|\s)password\s*=", dsn):
        raise ValueError("contains a password; use password_file or ${ENV_VAR} instead")
    return dsn


_SECRET_KEY = re.compile(r"(password|secret|token|routing_key|webhook_url)$")


def redact(node: Any, key: str = "") -> Any:
    """Dumped config data with secret values as `***` and URL passwords and queries hidden."""
    if isinstance(node, dict):
        return {k: redact(v, k) for k, v in node.items()}
    if isinstance(node, list):
        return [redact(v, key) for v in node]
    if isinstance(node, str):
        if _SECRET_KEY.search(key) and not ENV_REF.match(node):
            return "***"
        if "://" in node:
            return redact_url(node)
    return node


def redact_url(url: str) -> str:
    """The URL with its password and query string replaced by `***` (SQLite paths as is)."""
    if url.startswith("sqlite:"):  # a path, no secret; urlunsplit would eat its slashes
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password:
        netloc = netloc.replace(f":{parts.password}@", ":***@")
    query = "***" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
