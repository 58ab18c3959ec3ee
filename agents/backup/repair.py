"""Repairs for a damaged repository: rebuild the index from the packs, rewrite damaged
packs, rewrite snapshots whose data is lost.

`repair index` reads every pack's own header (each pack lists its blobs, sealed), and
with `read_data` every blob too, then writes one index that supersedes every index file
seen and deletes them: damaged or missing index files stop mattering, and damaged blobs
leave the index so the next backup stores them again when the source still has them.

`repair packs` rewrites named packs (the ones `check --read-data` names): the blobs that
still read correctly go into new packs, the damaged ones leave the index, and the old
pack is deleted, so a pack whose header or unused bytes are damaged stops being reported.

`repair snapshots` rewrites each snapshot that needs data the index does not have: the
files that lost data (and tree parts that cannot be read) are left out of a new snapshot
that names what was lost in its warnings and `repaired_from`; then the old one is
deleted. Nothing is dropped silently. Both run under the exclusive lock, and both are
safe to kill at any step: the new index or snapshot is stored before anything is deleted,
and a rerun finishes the job (a snapshot already replaced is only deleted).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from agents.audit import action as audit_action
from agents.backup.checker import blobs_by_pack, damaged_blobs
from agents.backup.errors import BackupError, IntegrityError, NotFound
from agents.backup.index import Location
from agents.backup.maintenance import delete_objects
from agents.backup.pack import BlobType, PackEntry, pack_key
from agents.backup.repository import Repository
from agents.backup.snapshot import Snapshot, TreeEntry, encode_tree
from agents.records.backup import (
    IndexRepairReport,
    PacksRepairReport,
    SnapshotRepairRow,
    SnapshotsRepairReport,
)

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

    def record(self) -> IndexRepairReport:
        """The repair as `backup repair index --json` prints it."""
        return IndexRepairReport(
            packs=self.packs,
            blobs=self.blobs,
            index_files_replaced=self.index_files_replaced,
            unreadable_packs=self.unreadable_packs,
            damaged_blobs=self.damaged_blobs,
        )


@dataclass
class PacksRepair:
    packs: list[str]
    salvaged_blobs: int = 0
    lost_blobs: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)

    def record(self) -> PacksRepairReport:
        """The repair as `backup repair packs --json` prints it."""
        return PacksRepairReport(
            packs=self.packs,
            salvaged_blobs=self.salvaged_blobs,
            lost_blobs=self.lost_blobs,
            written=self.written,
        )


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

    def record(self) -> SnapshotsRepairReport:
        """The repair as `backup repair snapshots --json` prints it."""
        return SnapshotsRepairReport(
            dry_run=self.dry_run,
            repaired=[
                SnapshotRepairRow(snapshot=r.snapshot, replacement=r.replacement, lost=r.lost)
                for r in self.repaired
            ],
            damaged_objects=self.damaged_objects,
        )


def run_repair_index(
    repo: Repository, state_db: Path, read_data: bool = False, progress: ProgressFn | None = None
) -> IndexRepair:
    """A person's `backup repair index`: `repair_index`, audited with the packs indexed
    and the damaged blobs left out."""
    with audit_action(state_db, "backup repair index", repo.storage.url) as audit:
        report = repair_index(repo, read_data, progress)
        audit |= {"packs": report.packs, "damaged_blobs": report.damaged_blobs}
    return report


def run_repair_packs(
    repo: Repository,
    state_db: Path,
    refs: list[str],
    compression_level: int = 3,
    pack_size: int = 16 * 2**20,
) -> PacksRepair:
    """A person's `backup repair packs`: `repair_packs`, audited with the blobs kept and
    the number lost."""
    with audit_action(state_db, "backup repair packs", " ".join(refs)) as audit:
        report = repair_packs(repo, refs, compression_level, pack_size)
        audit |= {"salvaged": report.salvaged_blobs, "lost": len(report.lost_blobs)}
    return report


def run_repair_snapshots(
    repo: Repository,
    state_db: Path,
    dry_run: bool = False,
    compression_level: int = 3,
    pack_size: int = 16 * 2**20,
) -> SnapshotsRepair:
    """A person's `backup repair snapshots` (a dry run too): `repair_snapshots`, audited
    with the short ids of the snapshots repaired."""
    with audit_action(state_db, "backup repair snapshots", repo.storage.url) as audit:
        report = repair_snapshots(repo, dry_run, compression_level, pack_size)
        audit["repaired"] = [r.snapshot[:8] for r in report.repaired]
    return report


def repair_index(
    repo: Repository, read_data: bool = False, progress: ProgressFn | None = None
) -> IndexRepair:
    """Rebuild the index from the packs' headers (and, with read_data, their blobs)."""
    progress = progress or (lambda b, f: None)
    with repo.lock(exclusive=True):
        stored = repo.stored_packs()
        repo.load_index(present=set(stored))
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
        stale = repo.write_superseding_index(packs)
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
        repo.reconcile(write=not dry_run)
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


def repair_packs(
    repo: Repository,
    refs: list[str],
    compression_level: int = 3,
    pack_size: int = 16 * 2**20,
) -> PacksRepair:
    """Rewrite the named packs: every indexed blob that still reads correctly goes into a
    new pack, the damaged ones are left out, then one index superseding every index file
    seen is written and only then are the old index files and the named packs deleted
    (the order of prune, and as safe to kill)."""
    with repo.lock(exclusive=True):
        reconciled = repo.reconcile()
        targets = _resolve_packs(refs, reconciled.stored)
        indexed = blobs_by_pack(repo)
        report = PacksRepair(packs=targets)
        with repo.writer(compression_level, pack_size, repack=True) as writer:
            for pack_id in targets:
                blobs = sorted(indexed.get(pack_id, []), key=lambda b: b[1].offset)
                try:
                    data = repo.storage.get(pack_key(pack_id))
                except NotFound:
                    data = b""
                for blob_id, loc in blobs:
                    try:
                        plain = repo.open_blob(
                            blob_id, data[loc.offset : loc.offset + loc.length], pack_id
                        )
                    except IntegrityError:
                        report.lost_blobs.append(blob_id.hex())
                        continue
                    writer.add(loc.type, plain)
                    report.salvaged_blobs += 1
            writer.flush()
            written = writer.written
        keep: dict[str, list[PackEntry]] = {}
        for blob_id, loc in repo.index.items():
            if loc.pack not in targets:
                keep.setdefault(loc.pack, []).append(
                    PackEntry(loc.type, blob_id, loc.offset, loc.length)
                )
        keep.update(written)
        _delete(repo, repo.write_superseding_index(keep))
        _delete(repo, [pack_key(p) for p in targets])
        report.written = sorted(written)
    return report


def _resolve_packs(refs: list[str], stored: dict[str, int]) -> list[str]:
    chosen: list[str] = []
    for ref in refs:
        matches = [p for p in stored if p.startswith(ref)] if len(ref) >= 6 else []
        if not matches and len(ref) >= 12:
            continue  # an ID as `check` prints it, gone: rewritten already (a rerun)
        if len(matches) != 1:
            what = "no pack" if not matches else "more than one pack"
            raise BackupError(f"{what} matches {ref!r} (give at least 6 hex digits of its ID)")
        if matches[0] not in chosen:
            chosen.append(matches[0])
    return chosen


def _surviving_entries(repo: Repository, snapshot: Snapshot) -> tuple[list[TreeEntry], list[str]]:
    """The entries whose data is all indexed, and what is lost (paths, tree parts)."""
    kept: list[TreeEntry] = []
    lost: list[str] = []
    for entry in repo.read_tree(snapshot, lost):
        if all(bytes.fromhex(c) in repo.index for c in entry.chunks):
            kept.append(entry)
        else:
            lost.append(entry.path)
    return kept, lost


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
    stats = {
        **snapshot.stats,
        "files": sum(1 for e in kept if e.type == "file"),
        "dirs": sum(1 for e in kept if e.type == "dir"),
        "bytes": sum(e.size for e in kept if e.type == "file"),
    }
    return repo.save_snapshot(
        replace(
            snapshot,
            id="",
            tree=tuple(tree),
            tags=tuple(dict.fromkeys([*snapshot.tags, "repaired"])),
            warnings=(*snapshot.warnings, *notes),
            stats=stats,
            repaired_from=snapshot.id,
        )
    )


def _location(pack_id: str, entry: PackEntry) -> Location:
    return Location(pack_id, entry.offset, entry.length, entry.type)


def _delete(repo: Repository, keys: list[str]) -> None:
    delete_objects(repo.storage, keys, command="repair")
