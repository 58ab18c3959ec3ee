"""Files source: directory trees walked by the archiver, chunked about 1 MiB, no databases.

Its facts are the counts of files and bytes; a restore is the restorer's job (a tree
into a directory, see `agents.backup.restorer`), and the restore test checks it by
chunking each restored file again as the repository does.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from agents.backup.archiver import Archiver, source_path
from agents.backup.repository import ChunkKind
from agents.backup.snapshot import Snapshot
from agents.backup.sources import DatabaseFacts
from agents.backup.sources.base import Backup, Dump, LocalScratch, RestoreOptions, not_a_database
from agents.config import FilesSource


class FilesDataSource(LocalScratch):
    """A `kind: files` source: paths, excludes, one file system, unreadable tolerance."""

    kind: ClassVar[str] = "files"
    chunking: ClassVar[ChunkKind] = "files"
    holds_databases: ClassVar[bool] = False
    accepts_sql_assertions: ClassVar[bool] = False

    def __init__(self, config: FilesSource) -> None:
        self.config = config

    def paths(self) -> tuple[str, ...]:
        return tuple(source_path(p) for p in self.config.paths)

    @property
    def tolerates_unreadable(self) -> bool:
        return self.config.tolerate_unreadable

    def back_up(self, archiver: Archiver, parent: Snapshot | None, workdir: Path) -> Backup:
        archived = archiver.archive(
            self.config.paths, self.config.exclude, self.config.one_file_system, parent
        )
        return Backup(archived, {"kind": "files", "files": archived.files, "bytes": archived.bytes})

    def restore(
        self, dump: Dump, target: str, workdir: Path, options: RestoreOptions
    ) -> DatabaseFacts:
        raise not_a_database(self.kind)


SOURCE = FilesDataSource
