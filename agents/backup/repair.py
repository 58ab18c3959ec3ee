"""Repairs for a damaged repository: rebuild the index from the packs, rewrite snapshots
whose data is lost.

`repair index` reads every pack's own header (each pack lists its blobs, sealed), and
with `read_data` every blob too, then writes one index that supersedes every index file
seen and deletes them: damaged or missing index files stop mattering, and damaged blobs
leave the index so the next backup stores them again when the source still has them.

`repair snapshots` rewrites each snapshot that needs data the index does not have: the
files that lost data (and tree parts that cannot be read) are left out of a new snapshot
that names what was lost in its warnings and `repaired_from`; then the old one is
deleted. Nothing is dropped silently. Both run under the exclusive lock, and both are
safe to kill at any step: the new index or snapshot is stored before anything is deleted,
and a rerun finishes the job (a snapshot already replaced is only deleted).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from agents.backup.checker import blobs_by_pack, damaged_blobs
from agents.backup.errors import BackupError, IntegrityError, NotFound, StorageError
from agents.backup.index import Location
from agents.backup.pack import BlobType, PackEntry
from agents.backup.repository import Repository
from agents.backup.snapshot import Snapshot, TreeEntry, decode_tree_line, encode_tree

log = logging.getLogger("opsagent.backup.repair")

ProgressFn = Callable[[int, int], None]
_TREE_BLOB = 1 << 20  # repaired trees are stored in blobs of about this size


@dataclass
class IndexRepair:
    packs: int = 0
    blobs: int = 0
    index_files_replaced: int = 0
    unreadable_packs: dict[str, str] = field(default_factory=dict)
    damaged_blobs: int = 0


@dataclass
class SnapshotRepair:
    snapshot: str
    replacement: str | None
    lost: list[str]


@dataclass
class SnapshotsRepair:
    repaired: list[SnapshotRepair] = field(default_factory=list)
    damaged_objects: list[str] = field(default_factory=list)
    dry_run: bool = False


def repair_index(
    repo: Repository, read_data: bool = False, progress: ProgressFn | None = None
) -> IndexRepair:
    """Rebuild the index from the packs' headers (and, with read_data, their blobs)."""
    progress = progress or (lambda b, f: None)
    with repo.lock(exclusive=True):
        stored = repo.stored_packs()
        repo.load_index(present=set(stored))
        seen = sorted(set(repo.all_index_files))
        indexed = blobs_by_pack(repo)
        report = IndexRepair()
        packs: dict[str, list[PackEntry]] = {}
        for pack_id, size in sorted(stored.items()):
            try:
                entries = repo.read_pack_header(pack_id, size)
            except NotFound:
                continue
            except IntegrityError as exc:
                # a pack whose header does not open keeps what a readable index said of it
                report.unreadable_packs[pack_id] = str(exc)
                entries = [
                    PackEntry(loc.type, blob_id, loc.offset, loc.length)
                    for blob_id, loc in indexed.get(pack_id, [])
                ]
            if read_data and entries:
                located = [(e.id, _location(pack_id, e)) for e in entries]
                _, bad = damaged_blobs(repo, pack_id, located)
                if bad:
                    report.damaged_blobs += len(bad)
                    log.warning("pack %s: %d damaged blob(s) left out", pack_id[:12], len(bad))
                entries = [e for e in entries if e.id not in bad]
                progress(size, 1)
            if entries:
                packs[pack_id] = entries
        report.packs = len(packs)
        report.blobs = sum(len(e) for e in packs.values())
        name = repo.write_index(packs, supersedes=seen)
        stale = [f"index/{n}" for n in seen if n != name]
        _delete(repo, stale)
        report.index_files_replaced = len(stale)
        repo.load_index(refresh=True)
    return report


def repair_snapshots(
    repo: Repository,
    dry_run: bool = False,
    compression_level: int = 3,
    pack_size: int = 16 * 2**20,
) -> SnapshotsRepair:
    """Replace every snapshot that needs missing data by one without the lost files."""
    with repo.lock(exclusive=True):
        repo.reconcile()
        snapshots = repo.snapshots()
        report = SnapshotsRepair(damaged_objects=sorted(repo.damaged_snapshots), dry_run=dry_run)
        replaced = {s.repaired_from: s for s in snapshots if s.repaired_from}
        for snapshot in snapshots:
            if snapshot.id in replaced:  # a killed repair stored the replacement already
                if not dry_run:
                    _delete(repo, [f"snapshots/{snapshot.id}"])
                report.repaired.append(
                    SnapshotRepair(snapshot.id, replaced[snapshot.id].id, ["(finished)"])
                )
                continue
            kept, lost = _surviving_entries(repo, snapshot)
            if not lost:
                continue
            if dry_run:
                report.repaired.append(SnapshotRepair(snapshot.id, None, lost))
                continue
            new = _rewrite(repo, snapshot, kept, lost, compression_level, pack_size)
            _delete(repo, [f"snapshots/{snapshot.id}"])
            report.repaired.append(SnapshotRepair(snapshot.id, new.id, lost))
    return report


def _surviving_entries(repo: Repository, snapshot: Snapshot) -> tuple[list[TreeEntry], list[str]]:
    """The entries whose data is all indexed, and what is lost (paths, tree parts)."""
    kept: list[TreeEntry] = []
    lost: list[str] = []
    for entry in _tolerant_tree(repo, snapshot, lost):
        if all(bytes.fromhex(c) in repo.index for c in entry.chunks):
            kept.append(entry)
        else:
            lost.append(entry.path)
    return kept, lost


def _tolerant_tree(repo: Repository, snapshot: Snapshot, lost: list[str]) -> Iterator[TreeEntry]:
    """The tree's entries, skipping the lines an unreadable tree blob cuts through."""
    pending = b""
    broken = False  # the previous blob was lost: the next blob starts mid-line
    for number, blob_hex in enumerate(snapshot.tree):
        try:
            data = repo.load_blob(bytes.fromhex(blob_hex))
        except (IntegrityError, ValueError):
            lost.append(f"(tree part {number + 1} of {len(snapshot.tree)}: entries unknown)")
            pending, broken = b"", True
            continue
        pending += data
        *lines, pending = pending.split(b"\n")
        if broken and lines:
            lines, broken = lines[1:], False
        yield from _entries(lines, lost)
    if not broken:
        yield from _entries([pending], lost)


def _entries(lines: list[bytes], lost: list[str]) -> Iterator[TreeEntry]:
    for line in lines:
        try:
            entry = decode_tree_line(line)
        except (ValueError, TypeError):
            lost.append("(one malformed tree entry)")
            continue
        if entry is not None:
            yield entry


def _rewrite(
    repo: Repository,
    snapshot: Snapshot,
    kept: list[TreeEntry],
    lost: list[str],
    level: int,
    pack_size: int,
) -> Snapshot:
    tree: list[str] = []
    with repo.writer(level, pack_size) as writer:
        chunk = b""
        for entry in kept:
            chunk += encode_tree([entry])
            if len(chunk) >= _TREE_BLOB:
                tree.append(writer.add(BlobType.TREE, chunk).hex())
                chunk = b""
        if chunk:
            tree.append(writer.add(BlobType.TREE, chunk).hex())
        writer.flush()
    notes = [f"lost in repair: {path}" for path in lost]
    return repo.save_snapshot(
        replace(
            snapshot,
            id="",
            tree=tuple(tree),
            tags=tuple(dict.fromkeys([*snapshot.tags, "repaired"])),
            warnings=(*snapshot.warnings, *notes),
            repaired_from=snapshot.id,
        )
    )


def _location(pack_id: str, entry: PackEntry) -> Location:
    return Location(pack_id, entry.offset, entry.length, entry.type)


def _delete(repo: Repository, keys: list[str]) -> None:
    if not keys:
        return
    try:
        repo.storage.delete(keys)
    except StorageError as exc:
        raise BackupError(f"repair stopped, the repository is intact: {exc}") from None
