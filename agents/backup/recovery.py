"""Application recovery of a database from a snapshot, checked against recorded facts.

`opsagent restore SNAPSHOT --database NAME --to TARGET` lands here: the dump is read
from the repository and restored into the target by the source's kind (PostgreSQL
via pg_restore with parallel jobs, MySQL/MariaDB via the mysql client, SQLite as a
file), then the restored database's row counts and schema fingerprint are compared
with the facts recorded at backup time. Restore tests use the same functions in
their sandbox.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.backup.errors import BackupError, IntegrityError
from agents.backup.repository import Repository
from agents.backup.snapshot import Snapshot, TreeEntry
from agents.backup.sources import DatabaseFacts
from agents.backup.sources.base import READ_RUN_BYTES, Dump, RestoreOptions, read_entry
from agents.backup.sources.registry import data_source

__all__ = ["READ_RUN_BYTES", "Recovery", "dump_entries", "read_entry", "restore_database"]


@dataclass
class Recovery:
    """One database restored: where, how long, the facts recorded and those restored."""

    database: str
    target: str
    seconds: float
    expected: DatabaseFacts
    actual: DatabaseFacts
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def dump_entries(repo: Repository, snapshot: Snapshot, database: str) -> list[TreeEntry]:
    """The stored files of one database's dump in a snapshot."""
    facts = snapshot.facts.get("databases", {}).get(database)
    if facts is None:
        known = ", ".join(sorted(snapshot.facts.get("databases", {}))) or "none"
        raise BackupError(
            f"snapshot {snapshot.short_id} has no database {database!r} (it has: {known})"
        )
    dump = DatabaseFacts.from_dict(facts).dump
    path = dump.path if dump is not None else ""
    entries = [
        e
        for e in repo.read_tree(snapshot)
        if e.type == "file" and (e.path == path or e.path.startswith(path + "/"))
    ]
    if not entries:
        raise IntegrityError(f"snapshot {snapshot.short_id}: dump of {database} is missing")
    return entries


def restore_database(
    repo: Repository,
    snapshot: Snapshot,
    database: str,
    target: str,
    source: Any,
    workdir: Path,
    create: bool = False,
    force: bool = False,
    jobs: int = 2,
) -> Recovery:
    """Restore one database dump into `target` (`source` is its configured source) and
    compare it with the recorded facts."""
    handler = data_source(source)
    expected = DatabaseFacts.of_snapshot(snapshot.facts, database)
    dump = Dump(repo, tuple(dump_entries(repo, snapshot, database)))
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    actual = handler.restore(dump, target, workdir, RestoreOptions(create, force, jobs))
    seconds = time.monotonic() - start
    return Recovery(database, target, seconds, expected, actual, handler.verify(expected, actual))
