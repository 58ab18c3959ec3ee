"""`backup check`: the repository's structure and, when asked, every byte of its data.

Structure: every index file opens, every indexed pack exists and is large enough,
every snapshot opens and every blob it references is indexed. Data (`--read-data`,
or a subset such as `10%` or `3/7`): each selected pack is downloaded (streamed,
several at once), its SHA-256 compared with its name, its header authenticated, and
every indexed blob decrypted and hash-checked. A damaged pack is named with the
snapshots that use it.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from agents.backup.errors import BackupError, IntegrityError, NotFound, StorageError
from agents.backup.index import Index, Location
from agents.backup.pack import header_length, pack_key, read_header
from agents.backup.packstream import BlobCutter
from agents.backup.repository import Repository, SnapshotGone
from agents.backup.snapshot import Snapshot
from agents.records.backup import RepositoryCheck
from agents.units import few

ProgressFn = Callable[[int, int], None]
READERS = 4  # packs read at once: overlaps the network with hashing and decryption
_HEADER_KEPT = 1 << 20  # tail bytes kept for the header; a longer one is read again


@dataclass
class CheckReport:
    snapshots: int = 0
    packs: int = 0
    packs_read: int = 0
    bytes_read: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    bad_packs: dict[str, list[str]] = field(default_factory=dict)
    damaged_files: dict[str, list[str]] = field(default_factory=dict)  # snapshot -> paths

    @property
    def ok(self) -> bool:
        return not self.errors

    def record(self) -> RepositoryCheck:
        """The report as `backup check --json` prints it."""
        return RepositoryCheck(
            ok=self.ok,
            snapshots=self.snapshots,
            packs=self.packs,
            packs_read=self.packs_read,
            bytes_read=self.bytes_read,
            errors=self.errors,
            warnings=self.warnings,
            bad_packs=self.bad_packs,
        )


def parse_subset(text: str | None) -> tuple[str, float | tuple[int, int]] | None:
    """`10%` -> ("percent", 10.0); `3/7` -> ("part", (3, 7)); None -> None."""
    if text is None:
        return None
    if match := re.fullmatch(r"(\d+(?:\.\d+)?)%", text.strip()):
        value = float(match.group(1))
        if not 0 < value <= 100:
            raise BackupError(f"--read-data-subset: percent must be in (0, 100], got {text}")
        return ("percent", value)
    if match := re.fullmatch(r"(\d+)/(\d+)", text.strip()):
        part, total = int(match.group(1)), int(match.group(2))
        if not 1 <= part <= total:
            raise BackupError(f"--read-data-subset: expected N/M with 1 <= N <= M, got {text}")
        return ("part", (part, total))
    raise BackupError(f"--read-data-subset: expected a percent (10%) or a part (3/7), got {text}")


def select_packs(packs: list[str], subset: tuple[str, float | tuple[int, int]] | None) -> list[str]:
    if subset is None:
        return sorted(packs)
    kind, value = subset
    if kind == "percent":
        assert isinstance(value, float)
        count = math.ceil(len(packs) * value / 100)
        return sorted(random.sample(sorted(packs), min(count, len(packs))))
    assert isinstance(value, tuple)
    part, total = value
    return sorted(p for p in packs if int(p[:8], 16) % total == part - 1)


def run_check(
    repo: Repository,
    read_data: bool = False,
    subset: str | None = None,
    progress: ProgressFn | None = None,
) -> CheckReport:
    """`backup check`: `check` under the shared lock, so no prune deletes what it reads.
    It reads what storage holds, never a local copy (cache.py)."""
    repo.cache = None
    with repo.lock(exclusive=False):
        return check(repo, read_data, subset, progress)


def check(
    repo: Repository,
    read_data: bool = False,
    subset: str | None = None,
    progress: ProgressFn | None = None,
) -> CheckReport:
    """Check everything and keep going after an error: every problem is reported, each
    damaged pack with the snapshots and files that lose data through it."""
    progress = progress or (lambda b, f: None)
    report = CheckReport()
    chosen = parse_subset(subset)
    packs = _check_packs(repo, report)
    snapshots, users = _check_snapshots(repo, packs.index, report)
    _note_foreign_objects(repo, report)
    if read_data:
        _read_data(repo, packs, chosen, progress, report)
    _name_damage(repo, report, users, snapshots, packs.bad_blobs)
    return report


@dataclass
class _PackState:
    """What the structural pass over the packs found, for the later steps of `check`."""

    stored: dict[str, int]
    index: Index
    indexed_packs: set[str]
    by_pack: BlobsByPack
    bad_blobs: set[bytes]


def _check_packs(repo: Repository, report: CheckReport) -> _PackState:
    """Index files open, indexed packs exist and are large enough; unindexed packs warned."""
    stored = repo.stored_packs()
    index = repo.load_index(present=set(stored), refresh=True)
    for why in sorted(repo.damaged_index.values()):
        report.errors.append(f"{why} (run `opsagent backup repair index`)")
    missing = sorted(repo.mentioned_packs_in_force() - set(stored))
    bad_blobs: set[bytes] = set()
    for pack_id in missing:
        report.errors.append(
            f"pack {pack_id[:12]} is indexed but missing from storage (run `opsagent backup"
            " run`, which stores again what the sources still have, then `opsagent backup"
            " repair index` and `opsagent backup repair snapshots`)"
        )
        report.bad_packs.setdefault(pack_id, [])
    indexed_packs = index.packs() & set(stored)
    report.packs = len(indexed_packs)
    by_pack = blobs_by_pack(repo)
    for pack_id in missing:
        bad_blobs.update(blob_id for blob_id, _ in by_pack.get(pack_id, ()))
    needed_size = {
        pack: max(loc.offset + loc.length for _, loc in blobs) for pack, blobs in by_pack.items()
    }
    for pack_id in sorted(indexed_packs):
        if stored[pack_id] < needed_size[pack_id] + 4:
            report.errors.append(f"pack {pack_id[:12]} is truncated ({stored[pack_id]} bytes)")
            report.bad_packs.setdefault(pack_id, [])
    unindexed = sorted(set(stored) - repo.mentioned_packs)
    if unindexed:
        report.warnings.append(
            f"{len(unindexed)} pack(s) not in any index (left by an interrupted run; the next"
            " backup indexes them, prune removes them if unused)"
        )
    return _PackState(stored, index, indexed_packs, by_pack, bad_blobs)


def _check_snapshots(
    repo: Repository, index: Index, report: CheckReport
) -> tuple[list[Snapshot], dict[str, set[str]]]:
    """Every snapshot opens and every blob it references is indexed: the readable
    snapshots, and pack -> the snapshots that use it."""
    users: dict[str, set[str]] = defaultdict(set)
    unindexed_use: dict[str, list[str]] = defaultdict(list)
    snapshots = []
    for snapshot_id in repo.snapshot_ids():
        try:
            snapshot = repo.load_snapshot(snapshot_id)
        except IntegrityError as exc:
            report.errors.append(
                f"{exc} (remove it with `opsagent backup forget {snapshot_id[:8]}`)"
            )
            continue
        except SnapshotGone:
            continue  # deleted since the listing
        except StorageError as exc:  # unreadable is neither damaged nor gone: reported
            report.errors.append(str(exc))
            continue
        report.snapshots += 1
        snapshots.append(snapshot)
        _note_users(repo, snapshot, index, users, unindexed_use, report)
    for snapshot_id, paths in sorted(unindexed_use.items()):
        report.errors.append(
            f"snapshot {snapshot_id}: {len(paths)} file(s) need data in no pack: {few(paths)}"
            " (run `opsagent backup run`, which stores again what the sources still have,"
            " then `opsagent backup repair snapshots`)"
        )
    return snapshots, users


def _note_users(
    repo: Repository,
    snapshot: Snapshot,
    index: Index,
    users: dict[str, set[str]],
    unindexed_use: dict[str, list[str]],
    report: CheckReport,
) -> None:
    """Record which packs one snapshot's tree and files use, and its files needing
    unindexed data."""
    for blob_hex in snapshot.tree:
        location = index.get(bytes.fromhex(blob_hex))
        if location is not None:
            users[location.pack].add(snapshot.short_id)
    try:
        for entry in repo.read_tree(snapshot):
            for chunk in entry.chunks:
                location = index.get(bytes.fromhex(chunk))
                if location is None:
                    unindexed_use[snapshot.short_id].append(entry.path)
                    break
                users[location.pack].add(snapshot.short_id)
    except (IntegrityError, ValueError) as exc:
        report.errors.append(
            f"snapshot {snapshot.short_id}: {exc} (run `opsagent backup check"
            " --read-data`, `opsagent backup repair packs` for each pack it names,"
            " `opsagent backup run`, then `opsagent backup repair snapshots`)"
        )


def _note_foreign_objects(repo: Repository, report: CheckReport) -> None:
    """Warn about objects opsagent did not write and about leftover incomplete uploads."""
    for key in repo.foreign_objects:
        what = {"data/": "a pack", "index/": "an index file"}.get(
            key[: key.find("/") + 1], "a snapshot"
        )
        report.warnings.append(f"{key} is not {what} (not written by opsagent); left alone")
    for leftover in repo.storage.leftovers():
        report.warnings.append(f"leftover incomplete upload: {leftover}")


def _read_data(
    repo: Repository,
    packs: _PackState,
    chosen: tuple[str, float | tuple[int, int]] | None,
    progress: ProgressFn,
    report: CheckReport,
) -> None:
    """`--read-data`: download and verify each selected pack, several at once (each in
    ranges, so memory stays bounded); its damaged blobs are added to `packs.bad_blobs`.
    Results are taken in pack order, so the report reads the same however the reads
    interleave."""
    selected = select_packs(sorted(packs.indexed_packs), chosen)

    def read(pack_id: str) -> _PackRead:
        return _read_pack(repo, pack_id, packs.by_pack[pack_id], packs.stored.get(pack_id))

    for pack_id, outcome in _bounded_map(read, selected, READERS):
        outcome.apply(report)
        progress(packs.stored.get(pack_id, 0), 1)
        if outcome.error:
            report.errors.append(
                f"{outcome.error} (run `opsagent backup repair packs {pack_id[:12]}`,"
                " `opsagent backup run`, then `opsagent backup repair snapshots`)"
            )
            report.bad_packs.setdefault(pack_id, [])
            packs.bad_blobs |= outcome.damaged


def _bounded_map(
    fn: Callable[[str], _PackRead], items: list[str], workers: int
) -> Iterator[tuple[str, _PackRead]]:
    """(item, fn(item)) in order, `workers` at a time: no more reads in flight (and in
    memory) than that, whatever the number of packs."""
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="check") as pool:
        inflight: deque[tuple[str, Future[_PackRead]]] = deque()
        queue = iter(items)
        try:
            for item in queue:
                inflight.append((item, pool.submit(fn, item)))
                if len(inflight) >= workers:
                    break
            while inflight:
                item, future = inflight.popleft()
                result = future.result()
                for following in queue:
                    inflight.append((following, pool.submit(fn, following)))
                    break
                yield item, result
        finally:
            for _, future in inflight:  # stopped early (an error, a closed generator)
                future.cancel()


def _name_damage(
    repo: Repository,
    report: CheckReport,
    users: dict[str, set[str]],
    snapshots: list[Snapshot],
    bad_blobs: set[bytes],
) -> None:
    """Name each bad pack's snapshots and each snapshot's files that lose data."""
    for pack_id in report.bad_packs:
        report.bad_packs[pack_id] = sorted(users.get(pack_id, set()))
    for pack_id, snaps in report.bad_packs.items():
        if snaps:
            report.errors.append(f"pack {pack_id[:12]} is used by snapshot(s) {', '.join(snaps)}")
    if bad_blobs:
        report.damaged_files = _files_using(repo, snapshots, bad_blobs)
        for snapshot_id, paths in sorted(report.damaged_files.items()):
            report.errors.append(
                f"snapshot {snapshot_id}: {len(paths)} file(s) lose data: {few(paths)}"
                " (after `opsagent backup repair packs`, a backup stores again what the"
                " sources still have; then `opsagent backup repair snapshots`)"
            )


def _files_using(
    repo: Repository, snapshots: list[Snapshot], blobs: set[bytes]
) -> dict[str, list[str]]:
    """Snapshot -> the paths whose data includes one of `blobs`."""
    found: dict[str, list[str]] = {}
    for snapshot in snapshots:
        try:
            paths = [
                e.path
                for e in repo.read_tree(snapshot)
                if any(bytes.fromhex(c) in blobs for c in e.chunks)
            ]
        except (IntegrityError, ValueError):
            continue  # already reported
        if paths:
            found[snapshot.short_id] = paths
    return found


class BlobsByPack(Mapping[str, list[tuple[bytes, Location]]]):
    """pack -> its indexed blobs and their locations. Held as blob IDs only (a pack's
    end to end in one `bytes`) and located when a pack is asked for: the check of
    200,000 files held a Location per blob for the whole repository, about 38 MiB, then
    a list of ID objects, 16 MiB, where it needs one pack's at a time."""

    def __init__(self, index: Index) -> None:
        self._index = index
        self._ids = index.blob_packs()

    def __getitem__(self, pack_id: str) -> list[tuple[bytes, Location]]:
        get, ids = self._index.get, self._ids[pack_id]
        return [
            (b, loc)
            for at in range(0, len(ids), 32)
            if (loc := get(b := ids[at : at + 32])) is not None
        ]

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)


def blobs_by_pack(repo: Repository) -> BlobsByPack:
    """Every indexed pack's blobs (see BlobsByPack)."""
    return BlobsByPack(repo.load_index())


def read_pack(
    repo: Repository, pack_id: str, blobs: list[tuple[bytes, Location]]
) -> tuple[str | None, int]:
    """Verify one pack given its indexed blobs: (problem or None, bytes read)."""
    outcome = _read_pack(repo, pack_id, blobs)
    return outcome.error, outcome.bytes_read


def damaged_blobs(
    repo: Repository, pack_id: str, blobs: list[tuple[bytes, Location]]
) -> tuple[str | None, set[bytes]]:
    """Download one pack and check each indexed blob: (first problem, damaged blob IDs)."""
    outcome = _read_pack(repo, pack_id, blobs)
    return outcome.error, outcome.damaged


@dataclass
class _PackRead:
    """What reading one pack found; applied to the report on the caller's thread."""

    error: str | None = None
    damaged: set[bytes] = field(default_factory=set)
    bytes_read: int = 0
    read: bool = False  # the whole pack was downloaded
    warning: str = ""

    def apply(self, report: CheckReport) -> None:
        """Count the read and note the warning in the report."""
        report.packs_read += self.read
        report.bytes_read += self.bytes_read
        if self.warning:
            report.warnings.append(self.warning)


def _read_pack(
    repo: Repository, pack_id: str, blobs: list[tuple[bytes, Location]], size: int | None = None
) -> _PackRead:
    """Check every blob of a pack; a pack that cannot be read loses all of them.

    The pack is read with one streamed request: every byte goes through its SHA-256, each
    blob is opened (authenticated, decompressed, hash-checked) as soon as its last byte
    is in, and only what a later blob or the header still needs is kept, so memory stays
    bounded whatever the pack size (`BlobCutter`)."""
    every = {blob_id for blob_id, _ in blobs}
    key = pack_key(pack_id)
    outcome = _PackRead()
    cutter = BlobCutter(0, blobs, keep_tail=_HEADER_KEPT)
    digest = hashlib.sha256()
    opened: dict[bytes, str] = {}
    try:
        for block in repo.storage.stream(key, 0, size):  # to the end when size is unknown
            digest.update(block)
            outcome.bytes_read += len(block)
            _open_all(repo, pack_id, cutter.feed(block), opened)
        _open_all(repo, pack_id, cutter.finish(), opened)
        size = outcome.bytes_read if size is None else size
        tail = cutter.tail
        if len(tail) < min(4, size):  # the stream stopped short of the length field
            tail = repo.storage.get(key, size - min(size, _HEADER_KEPT))
    except NotFound:
        return _PackRead(f"pack {pack_id[:12]} is missing", every, outcome.bytes_read)
    except StorageError as exc:
        return _PackRead(f"pack {pack_id[:12]}: {exc}", set(), outcome.bytes_read)
    outcome.read = True
    hash_ok = outcome.bytes_read == size and digest.hexdigest() == pack_id
    problems: list[str] = []
    try:
        need = header_length(tail, pack_id) + 4
        if len(tail) < need <= size:  # a header longer than the kept tail: read it again
            tail = repo.storage.get(key, size - need, need)
        listed = {e.id for e in read_header(repo.crypto, tail, pack_id, size)}
    except IntegrityError as exc:
        problems.append(str(exc))
        listed = every
    except StorageError as exc:  # NotFound too: deleted while being read
        problems.append(f"pack {pack_id[:12]}: {exc}")
        listed = every
    for blob_id, _ in blobs:
        if blob_id not in listed:
            problems.append(f"pack {pack_id[:12]} lacks blob {blob_id.hex()[:12]}")
            outcome.damaged.add(blob_id)
        elif opened.get(blob_id):
            problems.append(opened[blob_id])
            outcome.damaged.add(blob_id)
    if problems and not hash_ok:
        problems.insert(0, f"pack {pack_id[:12]} does not match its hash (corrupted)")
    if not problems:
        if not hash_ok:  # what is damaged is no longer indexed (`repair index --read-data`)
            outcome.warning = (
                f"pack {pack_id[:12]} does not match its hash, but every blob the index lists"
                f" in it reads correctly; `opsagent backup repair packs {pack_id[:12]}`"
                " rewrites it"
            )
        return outcome
    more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
    outcome.error = problems[0] + more
    return outcome


def _open_all(
    repo: Repository,
    pack_id: str,
    cut: Iterator[tuple[bytes, Location, memoryview]],
    opened: dict[bytes, str],
) -> None:
    """Open each blob cut from the stream: blob -> why it does not open ("" if it does)."""
    for blob_id, _, sealed in cut:
        try:
            repo.open_blob(blob_id, sealed, pack_id)  # type: ignore[arg-type]
            opened[blob_id] = ""
        except IntegrityError as exc:
            opened[blob_id] = str(exc)
