"""SQLite source: the online backup API makes a consistent copy while the application
writes; the copy is streamed into the repository and its facts read, then removed."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import tempfile
from pathlib import Path
from typing import ClassVar

from agents.backup.errors import BackupError
from agents.backup.sources import (
    DatabaseFacts,
    DumpFacts,
    SourceDump,
    SourceError,
    Store,
    schema_fingerprint,
)
from agents.backup.sources.base import DatabaseSource, Dump, RestoreOptions
from agents.config import SqliteSource


def backup(source: SqliteSource, store: Store, workdir: Path) -> SourceDump:
    """Copy the database with the online backup API and store the copy with its facts."""
    what = f"sqlite {source.name}"
    if not source.path.is_file():
        raise SourceError(f"{what}: {source.path} does not exist")
    workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sqlite-", dir=workdir) as tmp:
        copy = Path(tmp) / "copy.sqlite"
        try:
            src = sqlite3.connect(f"file:{source.path}?mode=ro", uri=True, timeout=30)
            dst = sqlite3.connect(copy)
            with dst:
                src.backup(dst)
            src.close()
            dst.close()
        except sqlite3.Error as exc:
            raise SourceError(f"{what}: online backup failed: {exc}") from None
        facts = inspect(copy)
        with open(copy, "rb") as handle:
            stored = store(f"{source.path.name}", handle)
    dump = DumpFacts(stored.size, stored.sha256, stored.entry.path, "sqlite")
    return SourceDump(
        entries=[stored.entry],
        server_version=sqlite3.sqlite_version,
        databases={source.path.name: facts.with_dump(dump)},
    )


def inspect(path: Path) -> DatabaseFacts:
    """Row counts and schema fingerprint of an SQLite database file."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
        ).fetchall()
        tables = {}
        for kind, name, _ in sorted(rows):
            if kind == "table":
                quoted = name.replace('"', '""')
                tables[name] = int(conn.execute(f'SELECT count(*) FROM "{quoted}"').fetchone()[0])
        schema = ";\n".join(sql for _, _, sql in rows if sql) + ";\n"
    finally:
        conn.close()
    return DatabaseFacts(
        tables=tables,
        schema_fingerprint=schema_fingerprint(schema),
        content_sha256=_sha256(path),
    )


class SqliteDataSource(DatabaseSource):
    """A `kind: sqlite` source: one database file, restored as a file."""

    kind: ClassVar[str] = "sqlite"

    def paths(self) -> tuple[str, ...]:
        return (str(self.config.path.absolute()),)

    def dump(self, store: Store, workdir: Path) -> SourceDump:
        return backup(self.config, store, workdir)

    def restore(
        self, dump: Dump, target: str, workdir: Path, options: RestoreOptions
    ) -> DatabaseFacts:
        """Write the file beside `target`, then move it in place (refused over an
        existing file unless forced)."""
        path = Path(target)
        if path.exists() and not options.force:
            raise BackupError(f"{path} exists; use --force to replace it")
        tmp = path.with_name(f".{path.name}.restoring")
        dump.write(dump.entries[0], tmp)
        os.replace(tmp, path)
        return inspect(path)


SOURCE = SqliteDataSource


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
