"""Data sources: one module per kind (files, postgres, mysql, sqlite), one protocol.

Each kind's module offers a `DataSource` (see `base`), found by kind through
`registry.data_source(config_source)`; this package holds what the database kinds
share: dumping through `store`, and the facts they record.

`store(path, stream)` chunks a byte stream into the repository and returns its tree
entry, byte count and SHA-256, so dumps go straight from the dump tool's stdout into
the repository, never through a full temporary copy on disk. Facts (row counts per
table, schema fingerprint, server version, dump size and hash) are what restore
tests compare a restored copy against.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import IO, Any

from agents.backup.errors import BackupError
from agents.backup.snapshot import TreeEntry


class SourceError(BackupError):
    """A source could not be dumped; one line naming the source and why."""


@dataclass(frozen=True)
class Stored:
    """One stream stored in the repository: its tree entry, byte count and SHA-256."""

    entry: TreeEntry
    size: int
    sha256: str


Store = Callable[[str, IO[bytes]], Stored]


@dataclass(frozen=True)
class DumpFacts:
    """Where a database's dump is in the snapshot tree, its size, hash and format."""

    bytes: int
    sha256: str | None  # None for a dump stored as several files (pg_dump directory)
    path: str
    format: str


@dataclass(frozen=True)
class DatabaseFacts:
    """What one database held at backup time (or holds once restored): row counts per
    table, estimated ones flagged, the schema fingerprint, and the dump when recorded.

    Stored in the snapshot manifest as the same JSON object as ever (`to_dict`), and
    read back from any snapshot, old ones included (`from_dict`)."""

    tables: dict[str, int] = field(default_factory=dict)
    estimated_tables: tuple[str, ...] = ()
    schema_fingerprint: str | None = None
    content_sha256: str | None = None  # SQLite: the database file's own hash
    dump: DumpFacts | None = None

    def with_dump(self, dump: DumpFacts) -> DatabaseFacts:
        """The same facts with the dump that was stored recorded."""
        return replace(self, dump=dump)

    def to_dict(self) -> dict[str, Any]:
        """The manifest's JSON object for this database (keys in their historic order)."""
        data: dict[str, Any] = {
            "tables": dict(self.tables),
            "estimated_tables": list(self.estimated_tables),
            "schema_fingerprint": self.schema_fingerprint,
        }
        if self.content_sha256 is not None:
            data["content_sha256"] = self.content_sha256
        if self.dump is not None:
            data |= {
                "dump_bytes": self.dump.bytes,
                "dump_sha256": self.dump.sha256,
                "dump_path": self.dump.path,
                "format": self.dump.format,
            }
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatabaseFacts:
        """Facts as a snapshot manifest holds them; missing keys read as unknown."""
        dump = None
        if "dump_path" in data:
            dump = DumpFacts(
                bytes=int(data.get("dump_bytes") or 0),
                sha256=data.get("dump_sha256"),
                path=str(data["dump_path"]),
                format=str(data.get("format", "")),
            )
        return cls(
            tables={str(k): int(v) for k, v in (data.get("tables") or {}).items()},
            estimated_tables=tuple(str(t) for t in data.get("estimated_tables") or ()),
            schema_fingerprint=data.get("schema_fingerprint"),
            content_sha256=data.get("content_sha256"),
            dump=dump,
        )

    @classmethod
    def of_snapshot(cls, facts: dict[str, Any], database: str) -> DatabaseFacts:
        """The recorded facts of `database` in a snapshot's facts (empty when absent)."""
        return cls.from_dict((facts.get("databases") or {}).get(database) or {})


@dataclass
class SourceDump:
    """What a database kind's dump produced: tree entries, facts per database, warnings."""

    entries: list[TreeEntry] = field(default_factory=list)
    server_version: str = ""
    databases: dict[str, DatabaseFacts] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def facts(self, kind: str) -> dict[str, Any]:
        """The snapshot's `facts` for this dump, as manifests have always held them."""
        return {
            "kind": kind,
            "server_version": self.server_version,
            "databases": {name: f.to_dict() for name, f in self.databases.items()},
        }


class TapReader:
    """Wraps a binary stream; every byte read also goes to the hash and to `observers`."""

    def __init__(self, stream: IO[bytes], observers: list[Callable[[bytes], None]] = ()) -> None:
        self.stream = stream
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.observers = list(observers)

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        if data:
            self.sha256.update(data)
            self.size += len(data)
            for observe in self.observers:
                observe(data)
        return data


@contextmanager
def dump_process(
    argv: list[str], env: dict[str, str], what: str, timeout_seconds: float | None = None
) -> Iterator[IO[bytes]]:
    """Run a dump tool, yield its stdout; raise SourceError if it fails or is killed."""
    try:
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    except FileNotFoundError:
        raise SourceError(f"{what}: {argv[0]} is not installed") from None
    errors: list[bytes] = []
    reader = threading.Thread(target=lambda: errors.append(proc.stderr.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    assert proc.stdout is not None
    try:
        yield proc.stdout
        proc.stdout.read()  # drain, so the tool's exit status is its own
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        code = proc.wait(timeout_seconds)
        reader.join(5)
    if code != 0:
        text = b"".join(errors).decode(errors="replace").strip().splitlines()
        reason = text[-1] if text else f"exit code {code}"
        if code < 0:
            reason = f"killed by signal {-code}" + (f": {reason}" if text else "")
        raise SourceError(f"{what}: {argv[0].rsplit('/', 1)[-1]} failed: {reason}")


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment for dump tools: ours, with secrets passed by variable, not argv."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PGPASSWORD", "MYSQL_PWD"))}
    env.update(extra)
    return env


# comments, and psql meta-commands such as pg_dump's random `\restrict KEY` lines
_SQL_COMMENT = re.compile(r"^\s*(--|\\).*$", re.MULTILINE)


def schema_fingerprint(schema_sql: str, ignore: tuple[str, ...] = ()) -> str:
    """Hash of a schema-only dump, normalised: comments, psql meta-commands, blank
    lines and session settings dropped, statements sorted, so dump order and
    per-run nonces do not change it."""
    text = _SQL_COMMENT.sub("", schema_sql)
    statements = []
    for raw in text.split(";\n"):
        statement = " ".join(raw.split())
        if not statement:
            continue
        lowered = statement.lower()
        if lowered.startswith(("set ", "select pg_catalog.set_config", "/*!")) or any(
            lowered.startswith(prefix) for prefix in ignore
        ):
            continue
        statements.append(statement)
    return hashlib.sha256("\n".join(sorted(statements)).encode()).hexdigest()


def compare_facts(expected: DatabaseFacts, actual: DatabaseFacts) -> list[str]:
    """Differences between recorded and observed facts of one database, one line each.

    Row counts flagged as estimates are not compared exactly."""
    problems = []
    if expected.schema_fingerprint != actual.schema_fingerprint:
        problems.append("schema fingerprint differs")
    want = expected.tables
    have = actual.tables
    estimated = set(expected.estimated_tables)
    for table in sorted(set(want) | set(have)):
        if table not in have:
            problems.append(f"table {table} is missing")
        elif table not in want:
            problems.append(f"table {table} is unexpected")
        elif table not in estimated and want[table] != have[table]:
            problems.append(f"table {table} has {have[table]} rows, expected {want[table]}")
    return problems
