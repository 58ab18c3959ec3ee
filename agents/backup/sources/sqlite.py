"""SQLite source: the online backup API makes a consistent copy while the application
writes; the copy is streamed into the repository and its facts read, then removed."""

from __future__ import annotations

import hashlib
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from agents.backup.sources import SourceDump, SourceError, Store, schema_fingerprint
from agents.config import SqliteSource


def backup(source: SqliteSource, store: Store, workdir: Path) -> SourceDump:
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
    return SourceDump(
        entries=[stored.entry],
        facts={
            "kind": "sqlite",
            "server_version": sqlite3.sqlite_version,
            "databases": {
                source.path.name: {
                    **facts,
                    "dump_bytes": stored.size,
                    "dump_sha256": stored.sha256,
                    "dump_path": stored.entry.path,
                    "format": "sqlite",
                }
            },
        },
    )


def inspect(path: Path) -> dict[str, Any]:
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
    return {
        "tables": tables,
        "estimated_tables": [],
        "schema_fingerprint": schema_fingerprint(schema),
        "content_sha256": _sha256(path),
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
