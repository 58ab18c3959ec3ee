"""Snapshots: encrypted manifests of one source at one time, and their file trees.

The manifest is small: host, time, tags, source, stats, facts for restore tests,
warnings, and the IDs of the tree blobs. The tree (one JSON line per file,
directory or link) is chunked and stored as blobs like file data, so an unchanged
tree costs nothing on the next day's snapshot.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from agents.backup.errors import IntegrityError

MAX_MANIFEST_BYTES = 64 * 2**20


@dataclass(frozen=True)
class TreeEntry:
    """One file-system object as stored: paths are relative, `/`-separated."""

    path: str
    type: str  # file, dir, symlink
    mode: int
    mtime_ns: int
    uid: int = 0
    gid: int = 0
    user: str = ""
    group: str = ""
    size: int = 0
    chunks: tuple[str, ...] = ()
    chunk_sizes: tuple[int, ...] = ()
    target: str = ""
    inode: int = 0
    ctime_ns: int = 0

    def to_json(self) -> str:
        data = asdict(self)
        data["chunks"] = list(self.chunks)
        data["chunk_sizes"] = list(self.chunk_sizes)
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> TreeEntry:
        data = json.loads(line)
        if not isinstance(data, dict):
            raise ValueError("tree entry is not an object")
        data["chunks"] = tuple(str(c) for c in data.get("chunks", ()))
        data["chunk_sizes"] = tuple(int(c) for c in data.get("chunk_sizes", ()))
        entry = cls(**data)
        if entry.type not in ("file", "dir", "symlink"):
            raise ValueError(f"unknown entry type {entry.type!r}")
        return entry


@dataclass(frozen=True)
class Snapshot:
    id: str
    time: datetime
    host: str
    source: str
    source_kind: str
    paths: tuple[str, ...]
    tree: tuple[str, ...]
    tags: tuple[str, ...] = ()
    parent: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    program_version: str = ""
    repaired_from: str | None = None  # the damaged snapshot `backup repair snapshots` replaced

    @property
    def short_id(self) -> str:
        return self.id[:8]

    def to_manifest(self) -> dict[str, Any]:
        data = asdict(self)
        del data["id"]
        data["time"] = self.time.isoformat()
        for key in ("paths", "tree", "tags", "warnings"):
            data[key] = list(data[key])
        return data

    def summary(self) -> dict[str, Any]:
        """What listings show: everything but the tree."""
        data = self.to_manifest()
        del data["tree"]
        data["id"] = self.id
        data["short_id"] = self.short_id
        return data

    @classmethod
    def from_manifest(cls, snapshot_id: str, data: dict[str, Any]) -> Snapshot:
        try:
            when = datetime.fromisoformat(data["time"])
            if when.tzinfo is None:  # we write aware times; a naive one is read as UTC
                when = when.replace(tzinfo=UTC)
            return cls(
                id=snapshot_id,
                time=when,
                host=str(data["host"]),
                source=str(data["source"]),
                source_kind=str(data["source_kind"]),
                paths=tuple(str(p) for p in data["paths"]),
                tree=tuple(str(t) for t in data["tree"]),
                tags=tuple(str(t) for t in data.get("tags", ())),
                parent=str(data["parent"]) if data.get("parent") is not None else None,
                stats=dict(data.get("stats", {})),
                facts=dict(data.get("facts", {})),
                warnings=tuple(str(w) for w in data.get("warnings", ())),
                program_version=str(data.get("program_version", "")),
                repaired_from=(
                    str(data["repaired_from"]) if data.get("repaired_from") is not None else None
                ),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise IntegrityError(
                f"snapshot {snapshot_id[:8]} manifest is malformed: {exc}"
            ) from None
