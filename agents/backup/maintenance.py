"""Rotation: `forget` removes the snapshots a keep policy does not keep; `prune`
reclaims the space of data no snapshot references.

Prune runs under an exclusive lock and in an order that survives a kill at any
point: mark every blob the remaining snapshots reference; repack the live blobs
of mostly-dead packs into new packs; write one new index that supersedes all old
ones; only then delete the old index files and the dead packs. An interrupted
prune leaves either the old index (and some unreferenced new packs) or the new
one (and some unreferenced old packs); a rerun finishes the job. Objects under
an S3 Object Lock retention that has not expired are never deleted: they are
skipped and reported.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from agents.audit import action as audit_action
from agents.backup.errors import BackupError, IntegrityError, StorageError
from agents.backup.index import Index
from agents.backup.pack import PackEntry, header_size, pack_key
from agents.backup.repository import Repository
from agents.backup.retention import Candidate, Decision, retention_decisions
from agents.backup.storage import Storage
from agents.config import Retention
from agents.records.backup import (
    ForgetRun,
    ForgetSnapshots,
    ForgetSnapshotsPlan,
    RetentionDecision,
)

log = logging.getLogger("opsagent.backup.prune")


@dataclass
class ForgetReport:
    decisions: list[Decision]
    removed: list[str] = field(default_factory=list)
    locked: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)  # unreadable snapshots, left alone
    gone: list[str] = field(default_factory=list)  # named, but no longer there

    def record(self, dry_run: bool, summary: str) -> ForgetRun:
        """A retention run as `backup forget --json` prints it: every decision, and the
        job's summary."""
        return ForgetRun(
            dry_run=dry_run,
            snapshots=[
                RetentionDecision(
                    id=d.snapshot.id,
                    short_id=d.snapshot.id[:8],
                    time=d.snapshot.time.isoformat(),
                    host=d.snapshot.host,
                    source=d.snapshot.source,
                    keep=d.keep,
                    reasons=list(d.reasons),
                    removed=d.snapshot.id in self.removed,
                    locked=d.snapshot.id in self.locked,
                )
                for d in self.decisions
            ],
            summary=summary,
        )

    def named_record(self) -> ForgetSnapshots:
        """Named snapshots removed, as `backup forget SNAPSHOT_IDS --json` prints them."""
        return ForgetSnapshots(dry_run=False, removed=self.removed, locked=self.locked)


@dataclass
class PruneReport:
    snapshots: int = 0
    packs_before: int = 0
    packs_deleted: int = 0
    packs_repacked: int = 0
    packs_written: int = 0
    bytes_deleted: int = 0
    bytes_written: int = 0
    locked: list[str] = field(default_factory=list)
    dry_run: bool = False

    @property
    def bytes_reclaimed(self) -> int:
        return self.bytes_deleted - self.bytes_written


def forget(
    repo: Repository,
    policy: Retention,
    dry_run: bool = False,
    now: datetime | None = None,
    delete_old_versions: bool = False,
) -> ForgetReport:
    """Decide with the policy; unless dry-run, delete the snapshots it does not keep."""
    with repo.lock(exclusive=True):
        snapshots = repo.snapshots()
        report_damaged = sorted(repo.damaged_snapshots)
        candidates = [Candidate(s.id, s.time, s.host, s.source, s.tags) for s in snapshots]
        decisions = retention_decisions(candidates, policy, now or datetime.now(UTC))
        report = ForgetReport(decisions, damaged=report_damaged)
        if dry_run:
            return report
        for decision in decisions:
            if decision.keep:
                continue
            key = f"snapshots/{decision.snapshot.id}"
            if _locked(repo.storage, key):
                report.locked.append(decision.snapshot.id)
                continue
            delete_objects(repo.storage, [key], delete_old_versions)
            report.removed.append(decision.snapshot.id)
    return report


def resolve_snapshots(ids: list[str], refs: list[str]) -> tuple[list[str], list[str]]:
    """The snapshot IDs `refs` name (unique prefixes), and the refs of 12 or more digits
    that name none (gone: removed already, by an earlier run that was killed)."""
    chosen: list[str] = []
    gone: list[str] = []
    for ref in refs:
        matches = [s for s in ids if s.startswith(ref)] if ref else []
        if not matches and len(ref) >= 12:
            gone.append(ref)
            continue
        if not matches:
            raise BackupError(f"no snapshot matches {ref!r}")
        if len(matches) > 1:
            raise BackupError(f"snapshot ID prefix {ref!r} is ambiguous ({len(matches)} match)")
        if matches[0] not in chosen:
            chosen.append(matches[0])
    return chosen, gone


def forget_snapshots(
    repo: Repository, refs: list[str], delete_old_versions: bool = False
) -> ForgetReport:
    """Remove the named snapshots (ID or unique prefix), damaged ones included."""
    with repo.lock(exclusive=True):
        chosen, gone = resolve_snapshots(repo.snapshot_ids(), refs)
        report = ForgetReport([], gone=gone)
        for snapshot_id in chosen:
            key = f"snapshots/{snapshot_id}"
            if _locked(repo.storage, key):
                report.locked.append(snapshot_id)
                continue
            delete_objects(repo.storage, [key], delete_old_versions)
            report.removed.append(snapshot_id)
    return report


def plan_forget_snapshots(repo: Repository, refs: list[str]) -> ForgetSnapshotsPlan:
    """The snapshots `forget_snapshots` would remove (a dry run: no lock, no audit)."""
    chosen, _ = resolve_snapshots(repo.snapshot_ids(), refs)
    return ForgetSnapshotsPlan(dry_run=True, would_remove=chosen)


def run_forget_snapshots(
    repo: Repository, state_db: Path, refs: list[str], delete_old_versions: bool = False
) -> ForgetReport:
    """A person's `backup forget SNAPSHOT_IDS`: `forget_snapshots`, audited with the
    short ids removed."""
    with audit_action(state_db, "backup forget", " ".join(refs)) as audit:
        report = forget_snapshots(repo, refs, delete_old_versions)
        audit["removed"] = [i[:8] for i in report.removed]
    return report


def prune(
    repo: Repository,
    repack_threshold_percent: float = 20.0,
    dry_run: bool = False,
    compression_level: int = 3,
    pack_size: int = 16 * 2**20,
    delete_old_versions: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> PruneReport:
    """Mark, repack, write one index superseding every index file seen, then sweep.

    Every index file seen (in force, superseded or damaged) is superseded by the new one
    and deleted only after it is stored: deleting a superseding file while the files it
    superseded remain would bring them back in force, pointing at deleted packs.
    """
    progress = progress or (lambda b, f: None)
    with repo.lock(exclusive=True) as lock:
        report = PruneReport(dry_run=dry_run)
        reconciled = repo.reconcile(write=not dry_run)
        index = repo.index
        used = _referenced_blobs(repo, report)
        stored = reconciled.stored
        report.packs_before = len(stored)
        entries: dict[str, list[tuple[bytes, int, int]]] = defaultdict(list)
        for blob_id, loc in index.items():
            entries[loc.pack].append((blob_id, loc.offset, loc.length))
        _refuse_lost_blobs(used, index)
        delete, repack, keep = _sort_packs(entries, used, stored, repack_threshold_percent)
        report.packs_deleted = len(delete)
        report.packs_repacked = len(repack)
        report.bytes_deleted = sum(stored.get(p, 0) for p in delete + repack)
        if dry_run:
            return report
        written: dict[str, list[PackEntry]] = {}
        if repack:
            written = _repack(
                repo, index, repack, entries, used, stored, compression_level, pack_size, progress
            )
        report.packs_written = len(written)
        report.bytes_written = sum(repo.storage.stat(pack_key(p)).size for p in written)
        lock.verify()  # a backup may be writing if another process took our lock for stale
        new_index = _kept_entries(index, keep, entries)
        new_index.update(written)
        stale_index = repo.write_superseding_index(new_index)
        delete_objects(repo.storage, stale_index, delete_old_versions)
        _sweep_packs(repo, delete + repack, stored, report, delete_old_versions)
    return report


def _refuse_lost_blobs(used: set[bytes], index: Index) -> None:
    """Refuse to prune when a blob a snapshot needs is in no pack."""
    lost = [b for b in used if b not in index]
    if lost:
        raise IntegrityError(
            f"{len(lost)} blob(s) that snapshots need are in no pack (first"
            f" {lost[0].hex()[:12]}); run `opsagent backup check`, then"
            " `opsagent backup repair snapshots` before pruning"
        )


def _sort_packs(
    entries: dict[str, list[tuple[bytes, int, int]]],
    used: set[bytes],
    stored: dict[str, int],
    repack_threshold_percent: float,
) -> tuple[list[str], list[str], list[str]]:
    """The packs to delete (unindexed or dead), to repack (mostly dead) and to keep."""
    delete: list[str] = [p for p in stored if p not in entries]  # unindexed leftovers
    repack: list[str] = []
    keep: list[str] = []
    for pack_id, blobs in entries.items():
        live = sum(length for blob_id, _, length in blobs if blob_id in used)
        # the header is no garbage: without this, small packs are rewritten every time
        total = stored.get(pack_id, 0) - header_size(len(blobs))
        if live == 0:
            delete.append(pack_id)
        elif total and 100.0 * (total - live) / total > repack_threshold_percent:
            repack.append(pack_id)
        else:
            keep.append(pack_id)
    return delete, repack, keep


def _repack(
    repo: Repository,
    index: Index,
    repack: list[str],
    entries: dict[str, list[tuple[bytes, int, int]]],
    used: set[bytes],
    stored: dict[str, int],
    compression_level: int,
    pack_size: int,
    progress: Callable[[int, int], None],
) -> dict[str, list[PackEntry]]:
    """Write the live blobs of the packs to repack into new packs: the new packs' entries."""
    with repo.writer(compression_level, pack_size, repack=True) as writer:
        for pack_id in repack:
            for blob_id, _, _ in sorted(entries[pack_id], key=lambda e: e[1]):
                if blob_id in used:
                    loc = index.get(blob_id)
                    assert loc is not None
                    writer.add(loc.type, repo.load_blob(blob_id))
            progress(stored.get(pack_id, 0), 1)
        writer.flush()
        return writer.written


def _kept_entries(
    index: Index, keep: list[str], entries: dict[str, list[tuple[bytes, int, int]]]
) -> dict[str, list[PackEntry]]:
    """The new index's entries for the kept packs (blobs still located in them)."""
    new_index: dict[str, list[PackEntry]] = {}
    for pack_id in keep:
        new_index[pack_id] = [
            PackEntry(index.get(b).type, b, offset, length)  # type: ignore[union-attr]
            for b, offset, length in entries[pack_id]
            if index.get(b) is not None and index.get(b).pack == pack_id  # type: ignore[union-attr]
        ]
    return new_index


def _sweep_packs(
    repo: Repository,
    packs: list[str],
    stored: dict[str, int],
    report: PruneReport,
    delete_old_versions: bool,
) -> None:
    """Delete the dead and repacked packs; those under Object Lock are kept and reported."""
    for pack_id in packs:
        key = pack_key(pack_id)
        if _locked(repo.storage, key):
            report.locked.append(pack_id)
            report.bytes_deleted -= stored.get(pack_id, 0)
            continue
        delete_objects(repo.storage, [key], delete_old_versions)
    if report.locked:
        log.warning("%d pack(s) are under Object Lock retention and were kept", len(report.locked))


def _referenced_blobs(repo: Repository, report: PruneReport) -> set[bytes]:
    """Every blob a snapshot needs. A damaged snapshot object or a tree that cannot be
    read stops the prune: what it references cannot be known, and deleting it would make
    a good copy of the object (from a replica or an old version) useless. Removing the
    snapshot is the operator's decision (`backup forget ID`), as in restic."""
    used: set[bytes] = set()
    snapshots = repo.snapshots()
    if repo.damaged_snapshots:
        first, why = sorted(repo.damaged_snapshots.items())[0]
        raise IntegrityError(
            f"{why}; prune would delete the data only it uses: remove it with"
            f" `opsagent backup forget {first[:8]}` (or put back a good copy) first"
        )
    for snapshot in snapshots:
        report.snapshots += 1
        for blob_hex in snapshot.tree:
            used.add(bytes.fromhex(blob_hex))
        try:
            for entry in repo.read_tree(snapshot):
                used.update(bytes.fromhex(c) for c in entry.chunks)
        except IntegrityError as exc:
            raise IntegrityError(
                f"{exc}; run `opsagent backup repair snapshots` before pruning"
            ) from None
    return used


def _locked(storage: Storage, key: str) -> bool:
    """True when the object's Object Lock retention has not expired."""
    try:
        until = storage.retention(key)
    except StorageError:
        return False
    return until is not None and until > datetime.now(UTC)


def delete_objects(
    storage: Storage, keys: list[str], old_versions: bool = False, command: str = "prune"
) -> None:
    """Delete objects (and their old versions if asked); a failure stops the command with
    one line: every delete comes after the writes that make it safe."""
    if not keys:
        return
    try:
        storage.delete(keys)
    except StorageError as exc:
        raise BackupError(f"{command} stopped, the repository is intact: {exc}") from None
    if old_versions:
        storage.delete_versions(keys)
