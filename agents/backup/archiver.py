"""File-tree backup: walk the source paths, chunk what changed, record a tree.

The walker knows nothing of the repository, and the repository nothing of files.
A file whose size, mtime, ctime and inode equal its entry in the parent snapshot is
not read again: its chunk list is reused; a parent whose tree cannot be read is a
warning and the backup runs without it. Files are read as streams in bounded
buffers, so memory does not grow with file size.

What is recorded: regular files, directories, symbolic links, FIFOs, character and
block device nodes (their device number), extended attributes of every name the
kernel lists (skipped where the file system has none), and hard links: a file whose
inode was already seen in this snapshot names that entry in `link_to` and is not read
again. Sockets are skipped with a warning (restic: records all of these, sockets too).
File names are kept as bytes (see `snapshot`).

What goes wrong: files that vanish or change while read are warnings listed in the
snapshot; unreadable files and directories that cannot be listed or stat'ed are listed
and fail the source unless it tolerates them (restic: "at least one source file could
not be read", exit 3); a missing source path fails the source (the snapshot of the
other paths is kept), and when no source path exists no snapshot is written at all
(restic: "all source directories/files do not exist").
"""

from __future__ import annotations

import errno
import fnmatch
import grp
import os
import pwd
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from pyfastcdc import Chunk

from agents.backup.errors import BackupError
from agents.backup.pack import BlobType
from agents.backup.repository import BlobWriter, ChunkKind, Repository
from agents.backup.snapshot import Snapshot, TreeEntry, encode_tree, shown

ProgressFn = Callable[[int, int], None]  # (bytes, files) done since last call
_SPECIAL_TYPES = {stat.S_IFIFO: "fifo", stat.S_IFCHR: "chardev", stat.S_IFBLK: "blockdev"}
_XATTRS = hasattr(os, "listxattr")  # Linux only; elsewhere none are recorded
WHOLE_READ = 8 * 2**20  # files up to this size are read in one call (see store_file)


@dataclass
class WalkReport:
    """What a walk could not take, as lines for people naming the path."""

    warnings: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


@dataclass
class ArchiveResult(WalkReport):
    tree: list[str] = field(default_factory=list)
    files: int = 0
    dirs: int = 0
    bytes: int = 0
    bytes_read: int = 0
    files_reused: int = 0
    parent_read: bool = True


@dataclass(frozen=True, slots=True)
class WalkItem:
    path: str  # absolute, as the kernel takes it
    rel: str
    st: os.stat_result


def walk(
    paths: list[Path], exclude: list[str], one_file_system: bool, report: WalkReport
) -> Iterator[WalkItem]:
    """Every object under the paths, sorted, excludes applied; what cannot be taken
    (missing source paths, unreadable directories, sockets) goes to the report."""
    for root in paths:
        top = str(root.absolute())
        try:
            st = os.lstat(top)
        except (FileNotFoundError, NotADirectoryError):
            report.missing.append(shown(top))
            continue
        except OSError as exc:
            report.unreadable.append(f"{shown(top)}: {exc.strerror}")
            continue
        yield from _walk_one(top, st, st.st_dev, exclude, one_file_system, report)


def _walk_one(
    path: str,
    st: os.stat_result,
    device: int,
    exclude: list[str],
    one_file_system: bool,
    report: WalkReport,
) -> Iterator[WalkItem]:
    """Depth first in name order. Strings and `os.scandir`, not `Path` objects: with
    hundreds of thousands of files, the per-name overhead is the walk's cost."""
    if exclude and _excluded(path, exclude):
        return
    mode = st.st_mode
    if not (
        stat.S_ISREG(mode)
        or stat.S_ISDIR(mode)
        or stat.S_ISLNK(mode)
        or stat.S_IFMT(mode) in _SPECIAL_TYPES
    ):  # sockets: a process makes its own when it listens
        report.warnings.append(f"{shown(path)}: special file skipped")
        return
    yield WalkItem(path, path.lstrip("/"), st)
    if not stat.S_ISDIR(mode):
        return
    if one_file_system and st.st_dev != device:
        return
    try:
        with os.scandir(path) as listing:
            children = sorted(listing, key=_name)
    except FileNotFoundError:
        report.warnings.append(f"{shown(path)}: vanished during backup")
        return
    except OSError as exc:
        report.unreadable.append(f"{shown(path)}: cannot list directory: {exc.strerror}")
        return
    for child in children:
        try:
            child_st = child.stat(follow_symlinks=False)
        except FileNotFoundError:
            report.warnings.append(f"{shown(child.path)}: vanished during backup")
            continue
        except OSError as exc:
            report.unreadable.append(f"{shown(child.path)}: {exc.strerror}")
            continue
        if one_file_system and stat.S_ISDIR(child_st.st_mode) and child_st.st_dev != device:
            report.warnings.append(f"{shown(child.path)}: on another file system, skipped")
            continue
        yield from _walk_one(child.path, child_st, device, exclude, one_file_system, report)


def _name(entry: os.DirEntry[str]) -> str:
    return entry.name


def _excluded(path: str, patterns: list[str]) -> bool:
    name = path.rpartition("/")[2]
    return any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(path, p) for p in patterns)


class Archiver:
    """Backs up file trees into a repository through one BlobWriter."""

    def __init__(
        self,
        repo: Repository,
        writer: BlobWriter,
        progress: ProgressFn | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        chunking: ChunkKind = "files",
    ) -> None:
        self.repo = repo
        self.writer = writer
        self.progress = progress or (lambda b, f: None)
        self.should_stop = should_stop
        self.chunker = repo.chunker_for(chunking)

    def archive(
        self,
        paths: list[Path],
        exclude: list[str],
        one_file_system: bool,
        parent: Snapshot | None,
    ) -> ArchiveResult:
        """Walk and store the paths; raises BackupError when none of them exists."""
        result = ArchiveResult()
        previous = self._parent_entries(parent, result)
        entries: list[TreeEntry] = []
        links: dict[tuple[int, int], TreeEntry] = {}  # (device, inode) -> first entry
        for item in walk(paths, exclude, one_file_system, result):
            if self.should_stop():
                raise InterruptedError("backup interrupted")
            entry = self._entry(item, previous.get(item.rel), links, result)
            if entry is None:
                continue
            entries.append(entry)
            if entry.type == "file":
                result.files += 1
                result.bytes += entry.size
            elif entry.type == "dir":
                result.dirs += 1
        if len(result.missing) == len(paths):
            raise BackupError(f"no source path exists: {', '.join(result.missing)}")
        result.tree = self.store_stream(encode_tree(entries), BlobType.TREE)
        return result

    def store_stream(self, data: bytes, blob_type: BlobType) -> list[str]:
        """Chunk an in-memory byte string into blobs (trees, small dumps)."""
        return [self.writer.add(blob_type, bytes(c.data)).hex() for c in self.chunker.cut_buf(data)]

    def store_file(self, handle: object, size_hint: int = -1) -> tuple[list[str], list[int]]:
        """Chunk a binary stream into data blobs; returns chunk IDs and sizes.

        A seekable file of at most `WHOLE_READ` bytes (`size_hint`, from its stat) is
        read in one call and cut in memory: the streaming chunker's per-stream buffer
        costs more than the work on small files, and both cut the same bytes alike."""
        chunks: list[str] = []
        sizes: list[int] = []
        for chunk in self._cut(handle, size_hint):
            data = bytes(chunk.data)
            chunks.append(self.writer.add(BlobType.DATA, data).hex())
            sizes.append(len(data))
            self.progress(len(data), 0)
            if self.should_stop():
                raise InterruptedError("backup interrupted")
        return chunks, sizes

    def _cut(self, handle: object, size_hint: int) -> Iterator[Chunk]:
        if 0 <= size_hint <= WHOLE_READ:
            data = handle.read(WHOLE_READ + 1)  # type: ignore[attr-defined]
            if len(data) <= WHOLE_READ:
                return iter(self.chunker.cut_buf(data))
            handle.seek(0)  # type: ignore[attr-defined]  # grew since its stat: stream it
        return iter(self.chunker.cut_stream(handle))  # type: ignore[arg-type]

    def _parent_entries(
        self, parent: Snapshot | None, result: ArchiveResult
    ) -> dict[str, TreeEntry]:
        """The parent's files by path; a parent that cannot be read only costs reading
        every file again, so it is a warning, never the end of the backup."""
        if parent is None:
            return {}
        try:
            return {e.path: e for e in self.repo.read_tree(parent) if e.type == "file"}
        except BackupError as exc:
            result.parent_read = False
            result.warnings.append(
                f"parent snapshot {parent.short_id} cannot be read ({exc}): every file read again"
            )
            return {}

    def _entry(
        self,
        item: WalkItem,
        old: TreeEntry | None,
        links: dict[tuple[int, int], TreeEntry],
        result: ArchiveResult,
    ) -> TreeEntry | None:
        st = item.st
        common = {
            "path": item.rel,
            "mode": stat.S_IMODE(st.st_mode),
            "mtime_ns": st.st_mtime_ns,
            "uid": st.st_uid,
            "gid": st.st_gid,
            "user": _user(st.st_uid),
            "group": _group(st.st_gid),
            "inode": st.st_ino,
            "ctime_ns": st.st_ctime_ns,
            "xattrs": _xattrs(item.path, result),
        }
        if stat.S_ISDIR(st.st_mode):
            return TreeEntry(type="dir", **common)
        if stat.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(item.path)
            except OSError as exc:
                result.warnings.append(f"{shown(item.path)}: cannot read link: {exc.strerror}")
                return None
            return TreeEntry(type="symlink", target=target, **common)
        special = _SPECIAL_TYPES.get(stat.S_IFMT(st.st_mode))
        if special is not None:  # never opened: reading a FIFO would block
            rdev = st.st_rdev if special != "fifo" else 0
            return TreeEntry(type=special, rdev=rdev, **common)
        key = (st.st_dev, st.st_ino)
        first = links.get(key) if st.st_nlink > 1 else None
        if first is not None:  # a hard link of a file already in this tree: not read again
            self.progress(st.st_size, 1)
            return TreeEntry(
                type="file",
                size=first.size,
                chunks=first.chunks,
                chunk_sizes=first.chunk_sizes,
                link_to=first.path,
                **common,  # type: ignore[arg-type]
            )
        entry = self._file_entry(item, old, common, result)
        if entry is not None and st.st_nlink > 1:
            links[key] = entry
        return entry

    def _file_entry(
        self,
        item: WalkItem,
        old: TreeEntry | None,
        common: dict[str, object],
        result: ArchiveResult,
    ) -> TreeEntry | None:
        st = item.st
        if old is not None and self._unchanged(old, st):
            result.files_reused += 1
            self.progress(st.st_size, 1)
            return TreeEntry(
                type="file",
                size=old.size,
                chunks=old.chunks,
                chunk_sizes=old.chunk_sizes,
                **common,  # type: ignore[arg-type]
            )
        return self._read_file(item, common, result)

    def _unchanged(self, old: TreeEntry, st: os.stat_result) -> bool:
        same = (old.size, old.mtime_ns, old.ctime_ns, old.inode) == (
            st.st_size,
            st.st_mtime_ns,
            st.st_ctime_ns,
            st.st_ino,
        )
        return same and all(bytes.fromhex(c) in self.repo.index for c in old.chunks)

    def _read_file(
        self, item: WalkItem, common: dict[str, object], result: ArchiveResult
    ) -> TreeEntry | None:
        try:
            handle = open(item.path, "rb", buffering=0)  # noqa: SIM115 - closed below
        except FileNotFoundError:
            result.warnings.append(f"{shown(item.path)}: vanished during backup")
            return None
        except OSError as exc:
            result.unreadable.append(f"{shown(item.path)}: {exc.strerror}")
            return None
        with handle:
            try:
                chunks, sizes = self.store_file(handle, item.st.st_size)
            except OSError as exc:
                result.unreadable.append(f"{shown(item.path)}: read failed: {exc.strerror}")
                return None
            after = os.fstat(handle.fileno())
        size = sum(sizes)
        result.bytes_read += size
        self.progress(0, 1)
        if (after.st_size, after.st_mtime_ns) != (item.st.st_size, item.st.st_mtime_ns):
            result.warnings.append(f"{shown(item.path)}: changed during backup")
        return TreeEntry(
            type="file",
            size=size,
            chunks=tuple(chunks),
            chunk_sizes=tuple(sizes),
            **common,  # type: ignore[arg-type]
        )


def _xattrs(path: str, report: WalkReport) -> tuple[tuple[str, bytes], ...]:
    """The object's extended attributes (links not followed), sorted by name; none where
    the platform or file system has no such thing."""
    if not _XATTRS:
        return ()
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.ENOTSUP, errno.ENOENT):
            report.warnings.append(
                f"{shown(str(path))}: cannot list extended attributes: {exc.strerror}"
            )
        return ()
    pairs: list[tuple[str, bytes]] = []
    for name in sorted(names):
        try:
            pairs.append((name, os.getxattr(path, name, follow_symlinks=False)))
        except OSError as exc:
            if exc.errno != errno.ENODATA:  # ENODATA: removed since listed
                report.warnings.append(
                    f"{shown(str(path))}: cannot read extended attribute {name}: {exc.strerror}"
                )
    return tuple(pairs)


@lru_cache(maxsize=1024)
def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


@lru_cache(maxsize=1024)
def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return ""
