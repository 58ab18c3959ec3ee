"""The data-source protocol: what backup, restore and the restore test ask of any kind.

One class per kind (files, postgres, mysql, sqlite, ...) implements `DataSource` in
its own module; `registry.data_source(config_source)` finds it by the config's
`kind`, so adding a kind is one module and its tests. Database kinds share
`DatabaseSource`: they dump through `store` into a tree of dump files, record
`DatabaseFacts` per database, restore a dump into a target database and compare
the restored copy's facts with the recorded ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar, Protocol

from agents.backup.archiver import Archiver, ArchiveResult
from agents.backup.errors import IntegrityError, NotFound
from agents.backup.pack import BlobType, pack_key
from agents.backup.repository import ChunkKind, Repository
from agents.backup.snapshot import Snapshot, TreeEntry, encode_tree
from agents.backup.sources import (
    DatabaseFacts,
    SourceDump,
    SourceError,
    Store,
    Stored,
    TapReader,
    compare_facts,
)
from agents.config import Sandbox

READ_RUN_BYTES = 8 * 2**20


@dataclass(frozen=True)
class Backup:
    """What backing up a source produced: the archived tree and the snapshot's facts."""

    archived: ArchiveResult
    facts: dict[str, Any]


@dataclass(frozen=True)
class RestoreOptions:
    """How a database restore treats its target: create it, replace it, parallel jobs."""

    create: bool = False
    force: bool = False
    jobs: int = 2


@dataclass(frozen=True)
class Dump:
    """The stored files of one database's dump in a snapshot, read back verified."""

    repo: Repository
    entries: tuple[TreeEntry, ...]

    def stream(self, entry: TreeEntry | None = None) -> Iterator[bytes]:
        """One dump file's content (the first when not named), chunk by chunk."""
        return read_entry(self.repo, entry or self.entries[0])

    def write(self, entry: TreeEntry, path: Path) -> None:
        """Write one dump file to `path`."""
        with open(path, "wb") as handle:
            for data in self.stream(entry):
                handle.write(data)


class ScratchSpace(Protocol):
    """A restore test's sandbox as a source sees it: its directory, its config, and
    names for scratch databases that the sandbox drops at teardown."""

    config: Sandbox

    @property
    def directory(self) -> Path: ...

    def new_database(self, kind: str) -> str:
        """A fresh scratch database name, recorded for teardown under `kind`."""
        ...


class DataSource(Protocol):
    """One configured source of one kind, with every operation the rooms use."""

    kind: ClassVar[str]
    chunking: ClassVar[ChunkKind]  # how the repository cuts what this source stores
    holds_databases: ClassVar[bool]  # its snapshot's facts list databases, restored one by one
    accepts_sql_assertions: ClassVar[bool]  # restore tests may run verify.sql against it

    def paths(self) -> tuple[str, ...]:
        """The snapshot's `paths`: what was backed up, as absolute paths (may be none)."""
        ...

    @property
    def tolerates_unreadable(self) -> bool:
        """Whether unreadable paths are only warnings for this source."""
        ...

    def back_up(self, archiver: Archiver, parent: Snapshot | None, workdir: Path) -> Backup:
        """Store the source through `archiver`; the tree and the facts to record."""
        ...

    def restore(
        self, dump: Dump, target: str, workdir: Path, options: RestoreOptions
    ) -> DatabaseFacts:
        """Restore one database's dump into `target`; the restored copy's facts."""
        ...

    def verify(self, expected: DatabaseFacts, actual: DatabaseFacts) -> list[str]:
        """Differences between the recorded and the restored facts, one line each."""
        ...

    def scratch_target(self, space: ScratchSpace, label: str) -> str:
        """A throwaway restore target for a restore test (`label` names it when a file)."""
        ...

    @classmethod
    def scratch_databases(cls, config: Sandbox, prefix: str) -> list[str]:
        """Scratch databases (named with `prefix`) left on the sandbox's servers."""
        ...

    @classmethod
    def drop_scratch(cls, config: Sandbox, name: str) -> None:
        """Drop one scratch database."""
        ...


class LocalScratch:
    """The defaults of a kind whose restore-test target is a path in the sandbox: facts
    compared as recorded, no scratch database on any server to list or drop."""

    def verify(self, expected: DatabaseFacts, actual: DatabaseFacts) -> list[str]:
        return compare_facts(expected, actual)

    def scratch_target(self, space: ScratchSpace, label: str) -> str:
        return str(space.directory / label)

    @classmethod
    def scratch_databases(cls, config: Sandbox, prefix: str) -> list[str]:
        return []

    @classmethod
    def drop_scratch(cls, config: Sandbox, name: str) -> None:
        return None


class DatabaseSource(LocalScratch):
    """What every database kind shares: dumps chunked small into a tree of dump files,
    facts per database, no paths; a scratch target is a file unless the kind says
    otherwise. Subclasses set `kind` and implement `dump` and `restore`."""

    kind: ClassVar[str] = ""
    chunking: ClassVar[ChunkKind] = "dumps"
    holds_databases: ClassVar[bool] = True
    accepts_sql_assertions: ClassVar[bool] = False

    def __init__(self, config: Any) -> None:
        self.config = config

    def paths(self) -> tuple[str, ...]:
        return ()

    @property
    def tolerates_unreadable(self) -> bool:
        return False

    def dump(self, store: Store, workdir: Path) -> SourceDump:
        """Dump every database of the source through `store`."""
        raise NotImplementedError

    def back_up(self, archiver: Archiver, parent: Snapshot | None, workdir: Path) -> Backup:
        archived, dump = archive_dump(archiver, self.config.name, self.dump, workdir)
        return Backup(archived, dump.facts(self.kind))

    def restore(
        self, dump: Dump, target: str, workdir: Path, options: RestoreOptions
    ) -> DatabaseFacts:
        raise NotImplementedError


def archive_dump(
    archiver: Archiver,
    source_name: str,
    dump: Callable[[Store, Path], SourceDump],
    workdir: Path,
) -> tuple[ArchiveResult, SourceDump]:
    """Run a database kind's dump through the archiver; the tree lists its dump files
    under a directory named after the source."""
    now_ns = time.time_ns()

    def store(path: str, stream: IO[bytes]) -> Stored:
        tap = stream if isinstance(stream, TapReader) else TapReader(stream)
        chunks, sizes = archiver.store_file(tap)
        entry = TreeEntry(
            path=f"{source_name}/{path}",
            type="file",
            mode=0o600,
            mtime_ns=now_ns,
            size=sum(sizes),
            chunks=tuple(chunks),
            chunk_sizes=tuple(sizes),
        )
        return Stored(entry, tap.size, tap.sha256.hexdigest())

    result = dump(store, workdir)
    directories = sorted({e.path.rsplit("/", 1)[0] for e in result.entries})
    entries = [TreeEntry(path=d, type="dir", mode=0o700, mtime_ns=now_ns) for d in directories]
    entries += result.entries
    archived = ArchiveResult(
        tree=archiver.store_stream(encode_tree(entries), BlobType.TREE),
        files=len(result.entries),
        dirs=len(directories),
        bytes=sum(e.size for e in result.entries),
        bytes_read=sum(e.size for e in result.entries),
        warnings=list(result.warnings),
    )
    return archived, result


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


def not_a_database(kind: str) -> SourceError:
    """The error for asking a source without databases to restore one."""
    return SourceError(f"a {kind} source holds no database to restore")
