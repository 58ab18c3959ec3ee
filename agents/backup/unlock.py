"""Unlocking a repository key while the command does other work.

scrypt is most of opening a repository (about 0.4 s at restic's cost, see `crypto`)
and it releases the GIL. So a command that will open the repository starts the unlock
before it needs the key and imports and prepares the rest meanwhile; `open_repository`
then takes the result (`take`). Two ways to start:

- `begin_early(path)`, before the config models are even imported: the repository, its
  S3 endpoint and credentials and the password file are read straight from the YAML (a
  password file only, mode 0600 or stricter; anything unusual is left to `begin`). For
  S3 the thread also makes the boto3 client and reads the key object, which the
  repository's storage then shares;
- `begin(cfg)`, once the config is validated.

An unlock started early is handed out only if the validated config names the same
repository (and for S3 the same endpoint, region, addressing and credentials: what
decides which key object was read) and its password (read and checked by the config's
rules) is the same; otherwise it is dropped. Nothing is weakened or skipped: the same
key files are tried with the same derivation, and every error is raised where it was,
by `Repository.open`; an early S3 unlock that failed (a timeout, a denial) is done
again with the validated config's storage, so its error is the one people see.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import os
import re
import stat
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.backup.crypto import MasterKey, derive_key, kdf_params, unwrap_master_key
from agents.backup.errors import NotFound, WrongKey
from agents.backup.storage import S3Endpoint, Storage, open_s3_reader, open_storage

if TYPE_CHECKING:
    from agents.config import BackupConfig

Found = tuple[str, MasterKey] | None  # (key ID, master key), or no key file opens
Params = tuple[bytes, int, int, int]  # a key file's salt and scrypt n, r, p
DEFAULT_STATE_DIR = "/var/lib/opsagent"  # the config's default (a test holds them equal)
# an early S3 unlock has no storage yet: `take` makes it from the validated config
_started: dict[tuple[object, ...], tuple[Storage | None, Future[Found]]] = {}

_ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")  # as the config's SecretRef
# S3 settings an early unlock may start under: where it reads and as whom, and the
# write settings, which a read never uses. Timeouts, concurrency and attempts change how
# it reads: with any of them set, the unlock waits for the validated config (`begin`).
_EARLY_S3_KEYS = frozenset(
    {
        "endpoint_url",
        "region",
        "path_style",
        "access_key_id",
        "access_key_id_file",
        "secret_access_key",
        "secret_access_key_file",
        "storage_class",
        "sse",
        "kms_key_id",
        "tags",
        "object_lock",
        "multipart_threshold",
        "multipart_chunk_size",
    }
)
EARLY_S3_ATTEMPTS = 8  # S3Config.max_attempts' default (a test holds them equal)


def open_any_key(storage: Storage, password: str, head: HeadStart | None = None) -> Found:
    """The first key file the password opens: (key ID, master key)."""
    return _search(storage, password, head)[0]


def _search(storage: Storage, password: str, head: HeadStart | None) -> tuple[Found, Params | None]:
    """`open_any_key`, and the derivation inputs of the key file that opened."""
    for info in storage.list("keys/"):
        try:
            keyfile = json.loads(storage.get(info.key))
            derived = head.derived_for(keyfile) if head is not None else None
            master = unwrap_master_key(keyfile, password, derived)
        except (WrongKey, ValueError, NotFound):
            continue
        return (info.key.rsplit("/", 1)[-1], master), kdf_params(keyfile)
    return None, None


@dataclass(frozen=True)
class HeadStart:
    """The derivation begun, before the key objects are even listed, from the salt and
    parameters of the key file that opened this repository last time (`_hint_file`).
    Used only for a key file with exactly those inputs: the key is the one
    `unwrap_master_key` would derive, so a stale or planted hint costs a derivation,
    never a different key."""

    params: Params
    derived: Future[bytes]

    def derived_for(self, keyfile: dict[str, Any]) -> bytes | None:
        """The derived key if this key file's inputs are the hint's, else None."""
        if kdf_params(keyfile) != self.params:
            return None
        return self.derived.result()


def begin(cfg: BackupConfig | None) -> None:
    """Start unlocking this config's repository on a thread, unless `begin_early`
    already did for the same repository and password, or it cannot be started."""
    if cfg is None:
        return
    from agents.config import resolve_secret

    try:
        password = resolve_secret(cfg.password, cfg.password_file)
        if not password or _early_key(cfg, password) in _started:
            return
        storage = open_storage(cfg.repository, cfg.s3)
    except Exception:  # reported in one line where the repository is opened
        return
    _started[_key(cfg, password)] = (
        storage,
        _start(functools.partial(open_any_key, storage, password)),
    )


def begin_early(config_file: Path) -> None:
    """Start unlocking the repository a config file names, before it is validated: a
    local or S3 repository with a password file (mode 0600 or stricter), for S3 with
    its credentials from `${ENV}` references or such files; nothing else. For S3 the
    derivation starts at once from the last unlock's salt when known (`HeadStart`)."""
    try:
        import yaml

        raw = yaml.safe_load(config_file.read_text(encoding="utf-8"))
        backup = raw["backup"]
        repository, password_file = backup["repository"], backup["password_file"]
        if not isinstance(repository, str) or not isinstance(password_file, str):
            return
        if "${" in repository:
            return
        password = _owner_only(password_file)
        if not password:
            return
        if repository.startswith("s3://"):
            endpoint = _early_endpoint(backup.get("s3"))
            if endpoint is None:
                return
            where: tuple[Any, ...] | None = endpoint.identity()
            storage = None  # made on the thread: boto3's import and client take time
            hint = _hint_file(raw.get("state_dir", DEFAULT_STATE_DIR), repository, where)
            search = functools.partial(
                _early_s3, repository, endpoint, password, hint, _head_start(hint, password)
            )
        else:
            where, storage = None, open_storage(repository)
            search = functools.partial(open_any_key, storage, password)
    except Exception:  # anything unusual: the validated config takes its normal way
        return
    _started[("early", repository, where, password)] = (storage, _start(search))


def _early_s3(
    repository: str,
    endpoint: S3Endpoint,
    password: str,
    hint: Path | None,
    head: HeadStart | None,
) -> Found:
    """On the unlock thread: the client, the key objects, the key; the hint updated."""
    storage = open_s3_reader(repository, endpoint, EARLY_S3_ATTEMPTS)
    found, params = _search(storage, password, head)
    if params is not None and hint is not None and (head is None or head.params != params):
        _write_hint(hint, params)
    return found


def _hint_file(state_dir: object, repository: str, where: object) -> Path | None:
    """Where the derivation inputs of this repository's last unlock are kept."""
    if not isinstance(state_dir, str):
        return None
    name = hashlib.sha256(repr((repository, where)).encode()).hexdigest()[:32]
    return Path(state_dir) / "cache" / f"unlock-{name}.json"


def _head_start(hint: Path | None, password: str) -> HeadStart | None:
    """Begin the derivation from a hint's salt and parameters, on its own thread."""
    if hint is None:
        return None
    try:
        params = kdf_params(json.loads(_read_small(hint)))
    except (OSError, ValueError, WrongKey, AttributeError):
        return None
    derived: Future[bytes] = Future()

    def work() -> None:
        try:
            derived.set_result(derive_key(password, params))
        except BaseException as exc:
            derived.set_exception(exc)

    threading.Thread(target=work, name="unlock-derive", daemon=True).start()
    return HeadStart(params, derived)


def _read_small(path: Path, limit: int = 4096) -> bytes:
    """A small regular file's bytes: never a link, a FIFO (which would block) or more
    than `limit` bytes; OSError or ValueError otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file")
        data = os.read(fd, limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ValueError("too large")
    return data


_NO_FOLLOW_DIRECTORY = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _write_hint(hint: Path, params: Params) -> None:
    """Keep a key file's salt and scrypt parameters (no key: they are in the bucket for
    anyone who can list it) for the next command's head start; owner-only."""
    salt, n, r, p = params
    body = {"kdf": "scrypt", "n": n, "r": r, "p": p, "salt": base64.b64encode(salt).decode()}
    cache = state = -1
    try:
        # the state directory is made by the agent, never as a side effect here; below
        # it nothing is followed: a link planted there cannot lead the write out
        state = os.open(hint.parent.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        with contextlib.suppress(FileExistsError):
            os.mkdir(hint.parent.name, 0o700, dir_fd=state)
        cache = os.open(hint.parent.name, _NO_FOLLOW_DIRECTORY, dir_fd=state)
        temporary = f"{hint.stem}.{os.getpid()}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK
        fd = os.open(temporary, flags | os.O_CLOEXEC, 0o600, dir_fd=cache)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(body, handle)
        os.replace(temporary, hint.name, src_dir_fd=cache, dst_dir_fd=cache)
    except OSError:
        pass  # only a head start lost
    finally:
        for handle_fd in (cache, state):
            if handle_fd >= 0:
                os.close(handle_fd)


def take(cfg: BackupConfig, password: str) -> tuple[Storage, Future[Found]] | None:
    """The storage and pending unlock started for this config and password, if any.

    An early S3 unlock comes with the storage the validated config makes (its client
    shared with the unlock when the limits agree), so writes get the config's settings."""
    started = _started.pop(_key(cfg, password), None)
    if started is not None:
        return started  # type: ignore[return-value]  # `begin` always stores a storage
    try:
        early = _started.pop(_early_key(cfg, password), None)
    except Exception:  # credentials that do not resolve: opening says why
        return None
    if early is None:
        return None
    storage, pending = early
    if storage is None:
        storage = open_storage(cfg.repository, cfg.s3)
        pending = _or_again(pending, storage, password)
    return storage, pending


def _key(cfg: BackupConfig, password: str) -> tuple[object, ...]:
    """What an unlock is for: the repository, its S3 settings and the password (never
    an object's identity: in one process, a later config may reuse a freed one's)."""
    s3 = cfg.s3.model_dump_json() if cfg.s3 is not None else ""
    return ("validated", cfg.repository, s3, password)


def _early_key(cfg: BackupConfig, password: str) -> tuple[object, ...]:
    """What an early unlock for this validated config would be filed under: the
    repository, for S3 where and as whom it reads (`S3Endpoint.identity`), the password."""
    where = None
    if cfg.repository.startswith("s3://"):
        from agents.config import S3Config

        where = S3Endpoint.of(cfg.s3 or S3Config()).identity()
    return ("early", cfg.repository, where, password)


class _NotEarly(Exception):
    """The raw YAML is not plain enough to start from: leave it to `begin`."""


def _owner_only(path: object) -> str:
    """A secret file's text, stripped, if it is a regular file only its owner may read
    (the config's own rule; the config's check says why when it is not)."""
    if not isinstance(path, str):
        raise _NotEarly
    secret = Path(path)
    mode = secret.stat().st_mode
    if not stat.S_ISREG(mode) or mode & 0o077:
        raise _NotEarly
    return secret.read_text(encoding="utf-8").strip()


def _early_endpoint(raw: object) -> S3Endpoint | None:
    """The S3 endpoint and credentials the raw `s3:` section names, with the config's
    defaults; None when it sets anything else than `_EARLY_S3_KEYS` or a value is not
    plainly what the config would take."""
    s3 = {} if raw is None else raw
    if not isinstance(s3, dict) or not set(s3) <= _EARLY_S3_KEYS:
        return None
    endpoint_url = s3.get("endpoint_url")
    region = s3.get("region", "us-east-1")
    path_style = s3.get("path_style", False)
    if endpoint_url is not None and (not isinstance(endpoint_url, str) or "${" in endpoint_url):
        return None
    if not isinstance(region, str) or "${" in region or not isinstance(path_style, bool):
        return None
    try:
        key_id = _early_secret(s3, "access_key_id")
        secret = _early_secret(s3, "secret_access_key")
    except (_NotEarly, OSError, UnicodeDecodeError):
        return None
    return S3Endpoint(endpoint_url, region, path_style, key_id, secret)


def _early_secret(s3: dict[str, Any], name: str) -> str | None:
    """An S3 credential as the config resolves it: `${ENV}` (set) or a 0600 file."""
    ref, file = s3.get(name), s3.get(f"{name}_file")
    if ref is not None and file is not None:
        raise _NotEarly
    if file is not None:
        return _owner_only(file)
    if ref is None:
        return None
    match = _ENV_REF.match(ref) if isinstance(ref, str) else None
    if match is None or match.group(1) not in os.environ:
        raise _NotEarly
    return os.environ[match.group(1)]


def _start(search: Callable[[], Found]) -> Future[Found]:
    pending: Future[Found] = Future()

    def work() -> None:
        try:
            pending.set_result(search())
        except BaseException as exc:  # handed to whoever takes the result
            pending.set_exception(exc)

    threading.Thread(target=work, name="unlock", daemon=True).start()
    return pending


def _or_again(early: Future[Found], storage: Storage, password: str) -> Future[Found]:
    """The early unlock's result; if it failed (made with default timeouts, or the store
    had a bad moment), the search again with the validated config's storage, whose
    failure is the one `Repository.open` reports."""
    pending: Future[Found] = Future()

    def work() -> None:
        try:
            pending.set_result(early.result())
            return
        except Exception:  # done again below, where its error is the one that counts
            pass
        try:
            pending.set_result(open_any_key(storage, password))
        except BaseException as exc:
            pending.set_exception(exc)

    threading.Thread(target=work, name="unlock-again", daemon=True).start()
    return pending


__all__ = ["Found", "HeadStart", "begin", "begin_early", "open_any_key", "take"]
