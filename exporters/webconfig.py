"""TLS and basic auth for the exporter, from the `web-config.yml` format Prometheus'
own exporters use (exporter-toolkit):

    tls_server_config: {cert_file: ..., key_file: ..., client_ca_file: ...,
                        client_auth_type: RequireAndVerifyClientCert}
    basic_auth_users: {prometheus: <bcrypt hash>}

prometheus-client serves TLS but has no server-side basic auth, so the WSGI app is
wrapped here. A bcrypt check costs tens of milliseconds, so a verified (user,
password) pair is remembered by its SHA-256 for the life of the process.
"""

from __future__ import annotations

import base64
import hashlib
import ssl
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import bcrypt
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from agents.config import ConfigError

CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}


class TlsServerConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None
    client_auth_type: Literal[
        "NoClientCert",
        "RequestClientCert",
        "RequireAnyClientCert",
        "VerifyClientCertIfGiven",
        "RequireAndVerifyClientCert",
    ] = "NoClientCert"
    min_version: Literal["TLS12", "TLS13"] = "TLS12"


class WebConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    tls_server_config: TlsServerConfig | None = None
    basic_auth_users: dict[str, str] = {}


def load_web_config(path: Path) -> WebConfig:
    try:
        data = yaml.safe_load(path.read_text()) or {}
        return WebConfig.model_validate(data)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: YAML syntax error: {' '.join(str(exc).split())}"]) from None
    except ValidationError as exc:
        raise ConfigError(
            [f"{path}: {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        ) from None


def ssl_context(config: TlsServerConfig) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if config.min_version == "TLS13" else ssl.TLSVersion.TLSv1_2
    )
    try:
        context.load_cert_chain(str(config.cert_file), str(config.key_file))
        if config.client_ca_file:
            context.load_verify_locations(str(config.client_ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError([f"exporter TLS: {' '.join(str(exc).split())}"]) from None
    context.verify_mode = CLIENT_AUTH[config.client_auth_type]
    return context


def with_basic_auth(
    app: Callable[..., Iterable[bytes]], users: dict[str, str], open_paths: tuple[str, ...] = ()
) -> Callable[..., Iterable[bytes]]:
    """Require one of `users` (bcrypt hashes) on every path but `open_paths`."""
    if not users:
        return app
    verified: set[bytes] = set()
    lock = threading.Lock()

    def check(header: str) -> bool:
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        stored = users.get(user)
        if stored is None:
            return False
        token = hashlib.sha256(f"{user}\0{password}\0{stored}".encode()).digest()
        with lock:
            if token in verified:
                return True
        try:
            ok = bcrypt.checkpw(password.encode(), stored.encode())
        except ValueError:
            ok = False
        if ok:
            with lock:
                verified.add(token)
        return ok

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") in open_paths or check(environ.get("HTTP_AUTHORIZATION", "")):
            return app(environ, start_response)
        start_response(
            "401 Unauthorized",
            [("WWW-Authenticate", 'Basic realm="opsagent"'), ("Content-Type", "text/plain")],
        )
        return [b"unauthorized\n"]

    return wrapped
