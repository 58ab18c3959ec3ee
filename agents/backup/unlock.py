"""Unlocking a repository key while the command does other work.

scrypt is most of opening a repository (about 0.4 s at restic's cost, see `crypto`)
and it releases the GIL. So a command that will open the repository starts the unlock
as soon as it has its config (`begin`) and imports and prepares the rest meanwhile;
`open_repository` then takes the result (`take`). Nothing is weakened or skipped: the
same key files are tried with the same derivation, and every error is raised where it
was, by `Repository.open`.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import Future

from agents.backup.crypto import MasterKey, unwrap_master_key
from agents.backup.errors import NotFound, WrongKey
from agents.backup.storage import Storage, open_storage
from agents.config import BackupConfig, resolve_secret

Found = tuple[str, MasterKey] | None  # (key ID, master key), or no key file opens
_started: dict[tuple[int, str], tuple[Storage, Future[Found]]] = {}


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
    """Start unlocking this config's repository on a thread, if it can be started."""
    if cfg is None:
        return
    try:
        password = resolve_secret(cfg.password, cfg.password_file)
        storage = open_storage(cfg.repository, cfg.s3)
    except Exception:  # reported in one line where the repository is opened
        return
    if not password:
        return
    pending: Future[Found] = Future()

    def work() -> None:
        try:
            pending.set_result(open_any_key(storage, password))
        except BaseException as exc:  # handed to whoever takes the result
            pending.set_exception(exc)

    threading.Thread(target=work, name="unlock", daemon=True).start()
    _started[(id(cfg), password)] = (storage, pending)


def take(cfg: BackupConfig, password: str) -> tuple[Storage, Future[Found]] | None:
    """The storage and pending unlock `begin` started for this config and password."""
    return _started.pop((id(cfg), password), None)
