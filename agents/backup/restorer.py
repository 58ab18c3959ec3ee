"""Restore a snapshot's files into a target directory, safely.

Whatever the manifest says, nothing is written outside the target: absolute paths
and `..` components are refused, every parent directory is resolved and must lie
inside the target, files are created with O_NOFOLLOW, and symbolic links are made
last so that no link can redirect a later write. Existing files are never
overwritten unless asked. Data is fetched pack by pack (a pack is downloaded once
however many files it feeds) on a small pool of workers.

Hard links, FIFOs and device nodes are made by their own helpers after the files are
written and before the symbolic links: a hard link is made to its first link when that
was restored in the same run (else it is an error), device nodes only as root (else a
warning), and link()/mknod() never follow a last component. Extended attributes are
set without following links; one the target cannot take is a warning.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from agents.backup.errors import IntegrityError, NotFound
from agents.backup.index import Location
from agents.backup.pack import pack_key
from agents.backup.repository import Repository
from agents.backup.snapshot import Snapshot, TreeEntry

ProgressFn = Callable[[int, int], None]
RUN_GAP = 1 << 20
RUN_MAX = 8 << 20  # bounds each worker's buffer: memory stays flat whatever the pack size
_NODE_KINDS = {"fifo": stat.S_IFIFO, "chardev": stat.S_IFCHR, "blockdev": stat.S_IFBLK}


@dataclass
class RestoreResult:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    specials: int = 0  # FIFOs and device nodes
    bytes: int = 0
    refused: list[str] = field(default_factory=list)
    skipped_existing: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Target:
    path: Path
    entry: TreeEntry


def plan(repo: Repository, snapshot: Snapshot, include: list[str] | None) -> list[TreeEntry]:
    """The entries a restore would write (after the include filter)."""
    entries = list(repo.read_tree(snapshot))
    if not include:
        return entries
    wanted = [p.strip("/") for p in include]
    return [
        e
        for e in entries
        if any(
            e.path == w or e.path.startswith(w + "/") or w.startswith(e.path + "/") for w in wanted
        )
    ]


def restore(
    repo: Repository,
    snapshot: Snapshot,
    target: Path,
    include: list[str] | None = None,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    workers: int = 4,
) -> RestoreResult:
    progress = progress or (lambda b, f: None)
    result = RestoreResult()
    target.mkdir(parents=True, exist_ok=True)
    root = Path(os.path.realpath(target))
    entries = plan(repo, snapshot, include)
    dirs: list[_Target] = []
    files: list[_Target] = []
    links: list[_Target] = []
    nodes: list[_Target] = []
    for entry in entries:
        rel = _safe_relative(entry.path)
        if rel is None:
            result.refused.append(entry.path)
            continue
        item = _Target(root / rel, entry)
        {"dir": dirs, "file": files, "symlink": links}.get(entry.type, nodes).append(item)
    files, hard_links = _split_hard_links(files)

    for item in dirs:
        if _inside(root, item.path, result):
            item.path.mkdir(parents=True, exist_ok=True)
            result.dirs += 1

    wanted: dict[bytes, list[tuple[Path, int]]] = defaultdict(list)
    sizes: dict[bytes, int] = {}
    created: list[_Target] = []
    for item in files:
        if not _inside(root, item.path.parent, result):
            continue
        item.path.parent.mkdir(parents=True, exist_ok=True)
        if not _inside(root, item.path.parent, result):
            continue
        entry = item.entry
        if len(entry.chunk_sizes) != len(entry.chunks) or sum(entry.chunk_sizes) != entry.size:
            raise IntegrityError(
                f"snapshot {snapshot.short_id}: {entry.path} has inconsistent chunk sizes"
            )
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_TRUNC if overwrite else os.O_EXCL)
        try:
            fd = os.open(item.path, flags, 0o600)
        except FileExistsError:
            result.skipped_existing.append(entry.path)
            continue
        except OSError as exc:
            result.errors.append(f"{entry.path}: {exc.strerror}")
            continue
        try:
            os.ftruncate(fd, entry.size)
        finally:
            os.close(fd)
        offset = 0
        for chunk, size in zip(entry.chunks, entry.chunk_sizes, strict=True):
            blob_id = bytes.fromhex(chunk)
            if repo.location(blob_id) is None:
                raise IntegrityError(
                    f"snapshot {snapshot.short_id}: {entry.path} needs blob {chunk[:12]},"
                    " which is not in the index"
                )
            wanted[blob_id].append((item.path, offset))
            sizes[blob_id] = size
            offset += size
        created.append(item)

    _fill(repo, wanted, sizes, progress, workers)

    for item in created:
        _apply_xattrs(item.path, item.entry, result)
        _apply_metadata(item.path, item.entry, follow=True)
        progress(0, 1)
        result.files += 1
        result.bytes += item.entry.size
    _make_hard_links(root, hard_links, created, overwrite, result)
    _make_nodes(root, nodes, overwrite, result)
    for item in links:
        if not _inside(root, item.path.parent, result):
            continue
        item.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if overwrite and item.path.is_symlink():
                item.path.unlink()
            os.symlink(item.entry.target, item.path)
        except FileExistsError:
            result.skipped_existing.append(item.entry.path)
            continue
        _apply_xattrs(item.path, item.entry, result)
        _apply_metadata(item.path, item.entry, follow=False)
        result.symlinks += 1
    for item in sorted(dirs, key=lambda d: -len(d.path.parts)):
        if item.path.is_dir() and not item.path.is_symlink():
            _apply_xattrs(item.path, item.entry, result)
            _apply_metadata(item.path, item.entry, follow=True)
    return result


def _split_hard_links(files: list[_Target]) -> tuple[list[_Target], list[_Target]]:
    """(files to write, hard links to make): a file whose first link is restored in this
    run too is linked to it rather than written again."""
    planned = {item.entry.path for item in files if not item.entry.link_to}
    written = [i for i in files if i.entry.link_to not in planned]
    linked = [i for i in files if i.entry.link_to in planned]
    return written, linked


def _make_hard_links(
    root: Path,
    linked: list[_Target],
    created: list[_Target],
    overwrite: bool,
    result: RestoreResult,
) -> None:
    """Link each to its first link as just restored; nothing outside the target."""
    made = {item.entry.path: item.path for item in created}
    for item in linked:
        entry = item.entry
        first = made.get(entry.link_to)
        if first is None and os.path.lexists(item.path):
            result.skipped_existing.append(entry.path)
            continue
        if first is None:  # not made by this restore: linking to it could join a stranger
            result.errors.append(
                f"{entry.path}: not restored: its first link {entry.link_to} was not"
            )
            continue
        if not _parent_inside(root, item.path, result):
            continue
        if overwrite:
            _remove_non_directory(item.path)
        try:
            os.link(first, item.path, follow_symlinks=False)
        except FileExistsError:
            result.skipped_existing.append(entry.path)
            continue
        except OSError as exc:
            result.errors.append(f"{entry.path}: {exc.strerror}")
            continue
        result.files += 1
        result.bytes += entry.size


def _make_nodes(root: Path, nodes: list[_Target], overwrite: bool, result: RestoreResult) -> None:
    """FIFOs always, device nodes as root only (the kernel allows no one else)."""
    for item in nodes:
        entry = item.entry
        if entry.type != "fifo" and os.geteuid() != 0:
            result.warnings.append(f"{entry.path}: device node not restored: needs root")
            continue
        if not _parent_inside(root, item.path, result):
            continue
        if overwrite:
            _remove_non_directory(item.path)
        try:
            os.mknod(item.path, _NODE_KINDS[entry.type] | 0o600, entry.rdev)
        except FileExistsError:
            result.skipped_existing.append(entry.path)
            continue
        except PermissionError as exc:  # a container without CAP_MKNOD
            result.warnings.append(f"{entry.path}: {entry.type} not restored: {exc.strerror}")
            continue
        except OSError as exc:
            result.errors.append(f"{entry.path}: {exc.strerror}")
            continue
        _apply_xattrs(item.path, entry, result)
        _apply_metadata(item.path, entry, follow=True)
        result.specials += 1


def _parent_inside(root: Path, path: Path, result: RestoreResult) -> bool:
    """Create the parent directory if it is (and stays) inside the target."""
    if not _inside(root, path.parent, result):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    return _inside(root, path.parent, result)


def _remove_non_directory(path: Path) -> None:
    """Make room for an overwrite; a directory in the way is left (creation then fails)."""
    with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
        os.unlink(path)


def _apply_xattrs(path: Path, entry: TreeEntry, result: RestoreResult) -> None:
    """Set the entry's extended attributes, links not followed; one the target file system
    or our privileges do not allow is a warning: the data is what matters."""
    for name, value in entry.xattrs:
        try:
            os.setxattr(path, name, value, follow_symlinks=False)
        except OSError as exc:
            result.warnings.append(
                f"{entry.path}: extended attribute {name} not restored: {exc.strerror}"
            )


def _fill(
    repo: Repository,
    wanted: dict[bytes, list[tuple[Path, int]]],
    sizes: dict[bytes, int],
    progress: ProgressFn,
    workers: int,
) -> None:
    """Download each needed pack once and write its blobs at their file offsets."""
    by_pack: dict[str, list[bytes]] = defaultdict(list)
    for blob_id in wanted:
        location = repo.location(blob_id)
        assert location is not None
        by_pack[location.pack].append(blob_id)

    def fetch(pack_id: str) -> None:
        key = pack_key(pack_id)
        located = [(repo.location(b), b) for b in by_pack[pack_id]]
        for run in _runs(sorted(located, key=lambda item: item[0].offset)):  # type: ignore[arg-type,union-attr]
            first = run[0][0]
            span_end = run[-1][0].offset + run[-1][0].length
            try:
                data = repo.storage.get(key, first.offset, span_end - first.offset)
            except NotFound:
                raise IntegrityError(f"pack {pack_id[:12]} is missing") from None
            for loc, blob_id in run:
                start = loc.offset - first.offset
                plain = repo.open_blob(blob_id, data[start : start + loc.length], pack_id)
                if len(plain) != sizes[blob_id]:
                    raise IntegrityError(f"blob {blob_id.hex()[:12]} has an unexpected size")
                for path, offset in wanted[blob_id]:
                    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
                    try:
                        os.pwrite(fd, plain, offset)
                    finally:
                        os.close(fd)
                    progress(len(plain), 0)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        for future in [pool.submit(fetch, p) for p in by_pack]:
            future.result()


def _runs(located: list[tuple[Location, bytes]]) -> list[list[tuple[Location, bytes]]]:
    """Group a pack's needed blobs (sorted by offset) into runs fetched with one ranged
    GET each: neighbours closer than RUN_GAP are read through rather than split."""
    runs: list[list[tuple[Location, bytes]]] = []
    for loc, blob_id in located:
        last = runs[-1] if runs else None
        if (
            last is not None
            and loc.offset - (last[-1][0].offset + last[-1][0].length) <= RUN_GAP
            and loc.offset + loc.length - last[0][0].offset <= RUN_MAX
        ):
            runs[-1].append((loc, blob_id))
        else:
            runs.append([(loc, blob_id)])
    return runs


def _safe_relative(path: str) -> PurePosixPath | None:
    """The entry's path if it is a plain relative path with no way out of the target."""
    if not path or "\x00" in path or path.startswith("/"):
        return None
    rel = PurePosixPath(path)
    if any(part in ("..", "") for part in rel.parts) or rel.is_absolute():
        return None
    return rel


def _inside(root: Path, path: Path, result: RestoreResult) -> bool:
    """Refuse a path whose resolved location (links followed) leaves the target."""
    resolved = Path(os.path.realpath(path))
    if resolved == root or root in resolved.parents:
        return True
    result.refused.append(str(path))
    return False


def _apply_metadata(path: Path, entry: TreeEntry, follow: bool) -> None:
    try:
        if os.geteuid() == 0:
            os.chown(path, entry.uid, entry.gid, follow_symlinks=follow)
        if follow:
            os.chmod(path, stat.S_IMODE(entry.mode))
        os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=follow)
    except OSError:
        pass  # metadata is best effort; the data is what matters
