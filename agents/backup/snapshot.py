"""Snapshots: encrypted manifests of one source at one time, and their file trees.

The manifest is small: host, time, tags, source, stats, facts for restore tests,
warnings, and the IDs of the tree blobs. The tree (one JSON line per file,
directory, link, FIFO or device node) is chunked and stored as blobs like file data,
so an unchanged tree costs nothing on the next day's snapshot.

File names are bytes on POSIX: Python hands undecodable ones over surrogate-escaped,
and tree lines are encoded and decoded with `surrogateescape`, so every name is kept
byte for byte while a tree of valid UTF-8 names reads exactly as before. An empty tree
is stored as no blob at all; blank lines (older versions stored an empty tree as one
newline) are skipped. Fields added after the first format (`link_to`, `rdev`,
`xattrs`) are written only when set, so entries without them keep their old bytes.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from agents.backup.errors import IntegrityError
from agents.records.backup import SnapshotEntry, SnapshotFiles, SnapshotSummary

MAX_MANIFEST_BYTES = 64 * 2**20
ENTRY_TYPES = ("file", "dir", "symlink", "fifo", "chardev", "blockdev")
# `link_to`, `rdev` and `xattrs` are written only when set, so older entries keep their bytes
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_decode = json.JSONDecoder().decode


@dataclass(frozen=True, slots=True)
class TreeEntry:
    """One file-system object as stored: paths are relative, `/`-separated.

    `link_to` names the entry (earlier in the same tree) a file is a hard link of; the
    file keeps its own chunk list, so readers that ignore `link_to` still see its data.
    `rdev` is a device node's device number; `xattrs` are (name, value) pairs."""

    path: str
    type: str  # one of ENTRY_TYPES
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
    link_to: str = ""
    rdev: int = 0
    xattrs: tuple[tuple[str, bytes], ...] = ()

    def to_json(self) -> str:
        """One tree line. Built field by field, in field order (the bytes of older
        entries stay the same), because `asdict` costs ten times more per file."""
        data: dict[str, Any] = {
            "path": self.path,
            "type": self.type,
            "mode": self.mode,
            "mtime_ns": self.mtime_ns,
            "uid": self.uid,
            "gid": self.gid,
            "user": self.user,
            "group": self.group,
            "size": self.size,
            "chunks": list(self.chunks),
            "chunk_sizes": list(self.chunk_sizes),
            "target": self.target,
            "inode": self.inode,
            "ctime_ns": self.ctime_ns,
        }
        if self.link_to:
            data["link_to"] = self.link_to
        if self.rdev:
            data["rdev"] = self.rdev
        if self.xattrs:
            data["xattrs"] = {k: base64.b64encode(v).decode() for k, v in self.xattrs}
        return _encode(data)

    @classmethod
    def from_json(cls, line: str) -> TreeEntry:
        data = _decode(line)
        if type(data) is not dict:
            raise ValueError("tree entry is not an object")
        if not data.keys() <= _FIELDS:
            unknown = sorted(set(data) - _FIELDS)
            raise ValueError(
                f"fields {unknown} are unknown to this agent (written by a newer one?)"
            )
        if data.get("type") not in ENTRY_TYPES:
            raise ValueError(
                f"entry type {data.get('type')!r} is unknown to this agent"
                " (written by a newer one?)"
            )
        # the same few owner and type names on every line: one string each, not one a file
        for name in ("type", "user", "group"):
            if type(data.get(name)) is str:
                data[name] = sys.intern(data[name])
        data["chunks"] = tuple(map(str, data.get("chunks", ())))
        data["chunk_sizes"] = tuple(map(int, data.get("chunk_sizes", ())))
        if "xattrs" in data:
            data["xattrs"] = tuple(
                (str(k), base64.b64decode(v, validate=True))
                for k, v in dict(data["xattrs"]).items()
            )
        return cls(**data)


_FIELDS = set(TreeEntry.__dataclass_fields__)


def encode_tree(entries: Iterable[TreeEntry]) -> bytes:
    """Tree bytes: one JSON line per entry, names kept byte for byte; empty for no entries."""
    return "".join(e.to_json() + "\n" for e in entries).encode("utf-8", "surrogateescape")


def decode_tree_line(line: bytes) -> TreeEntry | None:
    """One stored line as an entry; None for a blank line (older empty trees were "\\n")."""
    if not line.strip():
        return None
    return TreeEntry.from_json(line.decode("utf-8", "surrogateescape"))


def shown(path: str) -> str:
    """A name as people read it: bytes that are not UTF-8 appear as \\xNN escapes."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


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

    def record(self) -> SnapshotSummary:
        """The summary as the record `backup snapshots` and `backup show` print."""
        return SnapshotSummary.model_validate(self.summary())

    def files_record(self, entries: Iterable[TreeEntry]) -> SnapshotFiles:
        """The summary and the tree's entries, as `backup show --ls` prints them."""
        return SnapshotFiles.model_validate(
            self.summary()
            | {
                "entries": [
                    SnapshotEntry(path=e.path, type=e.type, size=e.size, mode=oct(e.mode))
                    for e in entries
                ]
            }
        )

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
