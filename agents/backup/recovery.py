"""Application recovery of a database from a snapshot, checked against recorded facts.

`opsagent restore SNAPSHOT --database NAME --to TARGET` lands here: the dump is read
from the repository, restored into the target (PostgreSQL via pg_restore with
parallel jobs, MySQL/MariaDB via the mysql client, SQLite as a file), then the
restored database's row counts and schema fingerprint are compared with the facts
recorded at backup time. Restore tests use the same functions in their sandbox.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agents.backup.errors import BackupError, IntegrityError, NotFound
from agents.backup.pack import pack_key
from agents.backup.repository import Repository
from agents.backup.snapshot import Snapshot, TreeEntry
from agents.backup.sources import compare_facts, mysql, postgres, sqlite
from agents.config import MysqlSource, PostgresSource, SqliteSource, resolve_secret

READ_RUN_BYTES = 8 * 2**20


@dataclass
class Recovery:
    database: str
    target: str
    seconds: float
    expected: dict[str, Any]
    actual: dict[str, Any]
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def read_entry(repo: Repository, entry: TreeEntry) -> Iterator[bytes]:
    """A stored file's content, chunk by chunk, each verified. Chunks stored one after
    the other in a pack (the usual case for a dump) are read with one ranged GET."""
    located = []
    for chunk in entry.chunks:
        blob_id = bytes.fromhex(chunk)
        location = repo.location(blob_id)
        if location is None:
            raise IntegrityError(f"{entry.path}: blob {chunk[:12]} is not in the index")
        located.append((blob_id, location))
    i = 0
    while i < len(located):
        first = located[i][1]
        end = first.offset + first.length
        j = i + 1
        while (
            j < len(located)
            and located[j][1].pack == first.pack
            and located[j][1].offset == end
            and end - first.offset < READ_RUN_BYTES
        ):
            end += located[j][1].length
            j += 1
        try:
            data = repo.storage.get(pack_key(first.pack), first.offset, end - first.offset)
        except NotFound:
            raise IntegrityError(f"pack {first.pack[:12]} is missing") from None
        for blob_id, location in located[i:j]:
            start = location.offset - first.offset
            yield repo.open_blob(blob_id, data[start : start + location.length], first.pack)
        i = j


def dump_entries(repo: Repository, snapshot: Snapshot, database: str) -> list[TreeEntry]:
    facts = snapshot.facts.get("databases", {}).get(database)
    if facts is None:
        known = ", ".join(sorted(snapshot.facts.get("databases", {}))) or "none"
        raise BackupError(
            f"snapshot {snapshot.short_id} has no database {database!r} (it has: {known})"
        )
    path = facts.get("dump_path", "")
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
    source: PostgresSource | MysqlSource | SqliteSource,
    workdir: Path,
    create: bool = False,
    force: bool = False,
    jobs: int = 2,
) -> Recovery:
    """Restore one database dump into `target` and compare it with the recorded facts."""
    expected = snapshot.facts["databases"][database] if snapshot.facts.get("databases") else {}
    entries = dump_entries(repo, snapshot, database)
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    if isinstance(source, PostgresSource):
        actual = _restore_postgres(repo, entries, target, source, workdir, create, force, jobs)
    elif isinstance(source, MysqlSource):
        actual = _restore_mysql(repo, entries, target, source, workdir, create, force)
    else:
        actual = _restore_sqlite(repo, entries, Path(target), force)
    seconds = time.monotonic() - start
    return Recovery(database, target, seconds, expected, actual, compare_facts(expected, actual))


def _restore_postgres(
    repo: Repository,
    entries: list[TreeEntry],
    target: str,
    source: PostgresSource,
    workdir: Path,
    create: bool,
    force: bool,
    jobs: int,
) -> dict[str, Any]:
    password = resolve_secret(source.password, source.password_file)
    name = urlsplit(target).path.lstrip("/") if "://" in target else ""
    if not name:
        raise BackupError(f"--to must name the target database, e.g. postgresql://host/{name}")
    admin = postgres.with_database(target, "postgres")
    postgres.prepare_database(admin, name, password, create, force)
    with tempfile.TemporaryDirectory(prefix="restore-", dir=workdir) as tmp:
        if len(entries) == 1:
            dump = Path(tmp) / "dump.pgdump"
            _write(repo, entries[0], dump)
        else:
            dump = Path(tmp) / "dump"
            dump.mkdir()
            for entry in entries:
                _write(repo, entry, dump / entry.path.rsplit("/", 1)[-1])
        postgres.restore_dump(dump, target, password, jobs, source.pg_bin_dir)
    return postgres.inspect(target, password, source.pg_bin_dir)


def _restore_mysql(
    repo: Repository,
    entries: list[TreeEntry],
    target: str,
    source: MysqlSource,
    workdir: Path,
    create: bool,
    force: bool,
) -> dict[str, Any]:
    parts = urlsplit(target)
    name = parts.path.lstrip("/")
    if parts.scheme not in ("mysql", "mariadb") or not name:
        raise BackupError("--to must be mysql://USER@HOST:PORT/DATABASE")
    server = source.model_copy(
        update={
            "host": parts.hostname or source.host,
            "port": parts.port or source.port,
            "user": parts.username or source.user,
        }
    )
    mysql.prepare_database(server, name, create, force)
    mysql.restore_dump(server, read_entry(repo, entries[0]), name, workdir)
    return mysql.inspect(server, name, workdir)


def _restore_sqlite(
    repo: Repository, entries: list[TreeEntry], target: Path, force: bool
) -> dict[str, Any]:
    if target.exists() and not force:
        raise BackupError(f"{target} exists; use --force to replace it")
    tmp = target.with_name(f".{target.name}.restoring")
    _write(repo, entries[0], tmp)
    os.replace(tmp, target)
    return sqlite.inspect(target)


def _write(repo: Repository, entry: TreeEntry, path: Path) -> None:
    with open(path, "wb") as handle:
        for data in read_entry(repo, entry):
            handle.write(data)
