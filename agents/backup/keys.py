"""Repository keys as a person's actions: add, remove, replace, export on paper, recover
from paper. Several passwords open one master key, so keys rotate without re-encrypting;
every change is recorded in the audit table of the state database (who, what, outcome).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from agents.audit import action as audit_action
from agents.audit import whoami
from agents.backup.crypto import paper_key, read_paper_key
from agents.backup.repository import Repository
from agents.backup.storage import Storage
from agents.records.backup import KeyRow


def key_rows(repo: Repository) -> list[KeyRow]:
    """The repository's keys, oldest first, as `backup key list --json` prints them; a
    key file with a field of another type is printed as it is rather than refused."""
    rows = []
    for key in repo.list_keys():
        try:
            rows.append(KeyRow.model_validate(key))
        except ValidationError:
            rows.append(KeyRow.model_construct(**key))
    return rows


def add_key(repo: Repository, state_db: Path, password: str, host: str, label: str) -> str:
    """Wrap the master key with another password (a second person's); its key id."""
    with audit_action(state_db, "key add", repo.storage.url, label=label) as audit:
        key_id = repo.add_key(password, host, whoami(), label)
        audit["key"] = key_id[:8]
    return key_id


def remove_key(repo: Repository, state_db: Path, key_id: str) -> str:
    """Remove a key (never the last one, nor the one in use); the full id removed."""
    with audit_action(state_db, "key remove", repo.storage.url, key=key_id):
        return repo.remove_key(key_id)


def replace_key(repo: Repository, state_db: Path, password: str, host: str) -> tuple[str, str]:
    """Change the password of the key in use: a new key first (same label), then the old
    one removed, so a kill in between leaves a key that opens. Returns (old id, new id)."""
    old = repo.key_id
    with audit_action(state_db, "key passwd", repo.storage.url, old=old[:8]) as audit:
        label = next((k["label"] for k in repo.list_keys() if k["id"] == old), "")
        new = repo.add_key(password, host, whoami(), label)
        repo.key_id = new  # the new key is in use now: the old one can go
        repo.remove_key(old)
        audit["new"] = new[:8]
    return old, new


def export_paper_key(repo: Repository, state_db: Path) -> str:
    """The master key as text for offline escrow (audited: it reads every backup)."""
    with audit_action(state_db, "key export", repo.storage.url):
        return paper_key(repo.crypto.master)


def recover_key(
    storage: Storage, state_db: Path, paper: str, new_password: Callable[[], str], host: str
) -> str:
    """Every password lost: a new key from the escrowed master key's text. The new
    password is asked for only once the paper key has been read back correctly."""
    with audit_action(state_db, "key recover", storage.url) as audit:
        master = read_paper_key(paper)
        repo = Repository.from_master(storage, master)
        password = new_password()
        key_id = repo.add_key(password, host, whoami(), "recovered from paper")
        audit["key"] = key_id[:8]
    return key_id
