"""Database sources: each dumps consistently into the repository and records facts.

Every source module offers the same two functions (borgmatic's uniform hooks):

    backup(source, store, workdir) -> SourceDump   dump every database through `store`
    inspect(source_kind, target)   -> facts        the same facts, read from a live database

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
from dataclasses import dataclass, field
from typing import IO, Any

from agents.backup.errors import BackupError
from agents.backup.snapshot import TreeEntry


class SourceError(BackupError):
    """A source could not be dumped; one line naming the source and why."""


@dataclass(frozen=True)
class Stored:
    entry: TreeEntry
    size: int
    sha256: str


Store = Callable[[str, IO[bytes]], Stored]


@dataclass
class SourceDump:
    entries: list[TreeEntry] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


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


def compare_facts(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """Differences between recorded and observed facts of one database, one line each.

    Row counts flagged as estimates are not compared exactly."""
    problems = []
    if expected.get("schema_fingerprint") != actual.get("schema_fingerprint"):
        problems.append("schema fingerprint differs")
    want = expected.get("tables", {})
    have = actual.get("tables", {})
    estimated = set(expected.get("estimated_tables", ()))
    for table in sorted(set(want) | set(have)):
        if table not in have:
            problems.append(f"table {table} is missing")
        elif table not in want:
            problems.append(f"table {table} is unexpected")
        elif table not in estimated and want[table] != have[table]:
            problems.append(f"table {table} has {have[table]} rows, expected {want[table]}")
    return problems
