"""`backup check`: the repository's structure and, when asked, every byte of its data.

Structure: every index file opens, every indexed pack exists and is large enough,
every snapshot opens and every blob it references is indexed. Data (`--read-data`,
or a subset such as `10%` or `3/7`): each selected pack is downloaded, its SHA-256
compared with its name, its header authenticated, and every indexed blob decrypted
and hash-checked. A damaged pack is named with the snapshots that use it.
"""

from __future__ import annotations

import math
import random
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from agents.backup.errors import BackupError, IntegrityError, NotFound, StorageError
from agents.backup.index import Location
from agents.backup.pack import pack_key, read_header, verify_pack_hash
from agents.backup.repository import Repository

ProgressFn = Callable[[int, int], None]


@dataclass
class CheckReport:
    snapshots: int = 0
    packs: int = 0
    packs_read: int = 0
    bytes_read: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    bad_packs: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


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


def check(
    repo: Repository,
    read_data: bool = False,
    subset: str | None = None,
    progress: ProgressFn | None = None,
) -> CheckReport:
    progress = progress or (lambda b, f: None)
    report = CheckReport()
    chosen = parse_subset(subset)
    try:
        index = repo.load_index()
    except IntegrityError as exc:
        report.errors.append(str(exc))
        return report
    stored = {info.key.rsplit("/", 1)[-1]: info.size for info in repo.storage.list("data/")}
    indexed_packs = index.packs()
    report.packs = len(indexed_packs)
    by_pack = blobs_by_pack(repo)
    needed_size = {
        pack: max(loc.offset + loc.length for _, loc in blobs) for pack, blobs in by_pack.items()
    }
    for pack_id in sorted(indexed_packs):
        if pack_id not in stored:
            report.errors.append(f"pack {pack_id[:12]} is indexed but missing from storage")
            report.bad_packs.setdefault(pack_id, [])
        elif stored[pack_id] < needed_size[pack_id] + 4:
            report.errors.append(f"pack {pack_id[:12]} is truncated ({stored[pack_id]} bytes)")
            report.bad_packs.setdefault(pack_id, [])
    unindexed = sorted(set(stored) - indexed_packs)
    if unindexed:
        report.warnings.append(
            f"{len(unindexed)} pack(s) not in any index (left by an interrupted run;"
            " prune removes them)"
        )
    users: dict[str, set[str]] = defaultdict(set)
    for snapshot_id in repo.snapshot_ids():
        try:
            snapshot = repo.load_snapshot(snapshot_id)
            report.snapshots += 1
            for blob_hex in snapshot.tree:
                _note_use(repo, bytes.fromhex(blob_hex), snapshot.short_id, users, report)
            for entry in repo.read_tree(snapshot):
                for chunk in entry.chunks:
                    _note_use(repo, bytes.fromhex(chunk), snapshot.short_id, users, report)
        except (IntegrityError, ValueError) as exc:
            report.errors.append(f"snapshot {snapshot_id[:8]}: {exc}")
    for leftover in repo.storage.leftovers():
        report.warnings.append(f"leftover incomplete upload: {leftover}")
    if read_data:
        for pack_id in select_packs(sorted(indexed_packs & set(stored)), chosen):
            error = _read_pack(repo, pack_id, by_pack[pack_id], report)
            progress(stored.get(pack_id, 0), 1)
            if error:
                report.errors.append(error)
                report.bad_packs.setdefault(pack_id, [])
    for pack_id in report.bad_packs:
        report.bad_packs[pack_id] = sorted(users.get(pack_id, set()))
    for pack_id, snaps in report.bad_packs.items():
        if snaps:
            report.errors.append(f"pack {pack_id[:12]} is used by snapshot(s) {', '.join(snaps)}")
    return report


def _note_use(
    repo: Repository, blob_id: bytes, snapshot: str, users: dict[str, set[str]], report: CheckReport
) -> None:
    location = repo.index.get(blob_id)
    if location is None:
        message = f"snapshot {snapshot}: blob {blob_id.hex()[:12]} is not in the index"
        if message not in report.errors:
            report.errors.append(message)
        return
    users[location.pack].add(snapshot)


def blobs_by_pack(repo: Repository) -> dict[str, list[tuple[bytes, Location]]]:
    grouped: dict[str, list[tuple[bytes, Location]]] = defaultdict(list)
    for blob_id, loc in repo.load_index().items():
        grouped[loc.pack].append((blob_id, loc))
    return grouped


def read_pack(
    repo: Repository, pack_id: str, blobs: list[tuple[bytes, Location]]
) -> tuple[str | None, int]:
    """Verify one pack given its indexed blobs: (problem or None, bytes read)."""
    report = CheckReport()
    return _read_pack(repo, pack_id, blobs, report), report.bytes_read


def _read_pack(
    repo: Repository, pack_id: str, blobs: list[tuple[bytes, Location]], report: CheckReport
) -> str | None:
    try:
        data = repo.storage.get(pack_key(pack_id))
    except NotFound:
        return f"pack {pack_id[:12]} is missing"
    except StorageError as exc:
        return f"pack {pack_id[:12]}: {exc}"
    report.packs_read += 1
    report.bytes_read += len(data)
    try:
        verify_pack_hash(data, pack_id)
        entries = {e.id: e for e in read_header(repo.crypto, data, pack_id)}
        for blob_id, loc in blobs:
            if blob_id not in entries:
                return f"pack {pack_id[:12]} lacks blob {blob_id.hex()[:12]} that the index lists"
            repo.open_blob(blob_id, data[loc.offset : loc.offset + loc.length], pack_id)
    except IntegrityError as exc:
        return str(exc)
    return None
