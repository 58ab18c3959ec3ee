"""Unlocking a repository key while the command does other work.

scrypt is most of opening a repository (about 0.4 s at restic's cost, see `crypto`)
and it releases the GIL. So a command that will open the repository starts the unlock
before it needs the key and imports and prepares the rest meanwhile; `open_repository`
then takes the result (`take`). Two ways to start:

- `begin_early(path)`, before the config models are even imported: the repository and
  the password file are read straight from the YAML (a local repository and a password
  file only; anything else is left to `begin`);
- `begin(cfg)`, once the config is validated.

An unlock started early is handed out only if the validated config names the same
repository and its password (read and checked by the config's rules) is the same;
otherwise it is dropped. Nothing is weakened or skipped: the same key files are tried
with the same derivation, and every error is raised where it was, by `Repository.open`.
"""

from __future__ import annotations

import json
import stat
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING

from agents.backup.crypto import MasterKey, unwrap_master_key
from agents.backup.errors import NotFound, WrongKey
from agents.backup.storage import Storage, open_storage

if TYPE_CHECKING:
    from agents.config import BackupConfig

Found = tuple[str, MasterKey] | None  # (key ID, master key), or no key file opens
_started: dict[tuple[object, ...], tuple[Storage, Future[Found]]] = {}


def open_any_key(storage: Storage, password: str) -> Found:
    """The first key file the password opens: (key ID, master key)."""
    for info in storage.list("keys/"):
        try:
            master = unwrap_master_key(json.loads(storage.get(info.key)), password)
        except (WrongKey, ValueError, NotFound):
            continue
        return info.key.rsplit("/", 1)[-1], master
    return None


def begin(cfg: BackupConfig | None) -> None:
    """Start unlocking this config's repository on a thread, unless `begin_early`
    already did for the same repository and password, or it cannot be started."""
    if cfg is None:
        return
    from agents.config import resolve_secret

    try:
        password = resolve_secret(cfg.password, cfg.password_file)
        if not password or ("early", cfg.repository, password) in _started:
            return
        storage = open_storage(cfg.repository, cfg.s3)
    except Exception:  # reported in one line where the repository is opened
        return
    _started[_key(cfg, password)] = (storage, _start(storage, password))


def begin_early(config_file: Path) -> None:
    """Start unlocking the repository a config file names, before it is validated: a
    local repository with a password file (mode 0600 or stricter), nothing else."""
    try:
        import yaml

        backup = yaml.safe_load(config_file.read_text(encoding="utf-8"))["backup"]
        repository, password_file = backup["repository"], backup["password_file"]
        if not isinstance(repository, str) or not isinstance(password_file, str):
            return
        if repository.startswith("s3://") or "${" in repository:
            return
        secret = Path(password_file)
        mode = secret.stat().st_mode
        if not stat.S_ISREG(mode) or mode & 0o077:
            return  # the config's own check will say why
        password = secret.read_text(encoding="utf-8").strip()
        storage = open_storage(repository)
    except Exception:  # anything unusual: the validated config takes its normal way
        return
    if password:
        _started[("early", repository, password)] = (storage, _start(storage, password))


def take(cfg: BackupConfig, password: str) -> tuple[Storage, Future[Found]] | None:
    """The storage and pending unlock started for this config and password, if any."""
    started = _started.pop(_key(cfg, password), None)
    if started is None and not cfg.repository.startswith("s3://"):
        started = _started.pop(("early", cfg.repository, password), None)
    return started


def _key(cfg: BackupConfig, password: str) -> tuple[object, ...]:
    """What an unlock is for: the repository, its S3 settings and the password (never
    an object's identity: in one process, a later config may reuse a freed one's)."""
    s3 = cfg.s3.model_dump_json() if cfg.s3 is not None else ""
    return ("validated", cfg.repository, s3, password)


def _start(storage: Storage, password: str) -> Future[Found]:
    pending: Future[Found] = Future()

    def work() -> None:
        try:
            pending.set_result(open_any_key(storage, password))
        except BaseException as exc:  # handed to whoever takes the result
            pending.set_exception(exc)

    threading.Thread(target=work, name="unlock", daemon=True).start()
    return pending


__all__ = ["Found", "begin", "begin_early", "open_any_key", "take"]
