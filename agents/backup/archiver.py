"""File-tree backup: walk the source paths, chunk what changed, record a tree.

The walker knows nothing of the repository, and the repository nothing of files.
A file whose size, mtime, ctime and inode equal its entry in the parent snapshot is
not read again: its chunk list is reused, and so are its extended attributes when the
parent listed every object's as this process would (its `xattrs_listed_as` stat:
the same user, privileges and user namespace; see `xattr_lister`): setting or removing one
changes the ctime, as any write does, so they are not listed again either (a syscall
through the directory handle per file, most of an unchanged walk). A parent whose tree
cannot be read is a warning and the backup runs without it. Files are read as streams in bounded
buffers, so memory does not grow with file size. The files to read are asked of the kernel
in batches, the walk running ahead of the reads (`Archiver._tree_lines`).

What is recorded: regular files, directories, symbolic links, FIFOs, character and
block device nodes (their device number), extended attributes of every name the
kernel lists (skipped where the file system has none), and hard links: a file whose
inode was already seen in this snapshot names that entry in `link_to` and is not read
again. Sockets are skipped with a warning (restic: records all of these, sockets too).
File names are kept as bytes (see `snapshot`).

What goes wrong: files that vanish or change while read are warnings listed in the
snapshot, and so is a file swapped for a link, FIFO or directory after the walk listed
it, which is never read through the swap (`Archiver._read_file`); unreadable files and
directories that cannot be listed or stat'ed are listed and fail the source unless it
tolerates them (restic: "at least one source file could not be read", exit 3); a
missing source path fails the source (the snapshot of the other paths is kept), and
when no source path exists no snapshot is written at all (restic: "all source
directories/files do not exist").
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import errno
import fnmatch
import grp
import hashlib
import io
import itertools
import json
import os
import pwd
import re
import resource
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from pyfastcdc import Chunk

from agents.backup.errors import BackupError
from agents.backup.pack import BlobType
from agents.backup.repository import SMALL_BLOB, BlobWriter, ChunkKind, Repository
from agents.backup.snapshot import Snapshot, TreeEntry, shown

ProgressFn = Callable[[int, int], None]  # (bytes, files) done since last call
_SPECIAL_TYPES = {stat.S_IFIFO: "fifo", stat.S_IFCHR: "chardev", stat.S_IFBLK: "blockdev"}
_XATTRS = hasattr(os, "listxattr")  # Linux only; elsewhere none are recorded
WHOLE_READ = 8 * 2**20  # files up to this size are read in one call (see store_file)
# a regular file is opened without following a link or blocking (see Archiver._read_file)
_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
_DIR_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_DIRECTORY
_PROC_FD = os.path.isdir("/proc/self/fd")  # Linux: a path through a directory handle
_FADVISE = hasattr(os, "posix_fadvise")  # not on macOS: no read-ahead there
# how far the walk runs ahead of the tree's lines, reading files in (see _tree_lines)
READ_AHEAD_FILES = 16  # files opened ahead
READ_AHEAD_BYTES = 64 * 2**20  # bytes asked of the kernel ahead
READ_AHEAD = 1024  # items: directory handles stay open until their items are handled
READ_AHEAD_HANDLES = 64  # files opened ahead and directories held for a batch, at most
_HANDLES_KEPT = 32  # for the repository's files and the walk's listing (see _handles_to_spare)


@dataclass
class WalkReport:
    """What a walk could not take, as lines for people naming the path."""

    warnings: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    # some object's extended attributes could not be listed or read (then the snapshot
    # is no parent to take them from: see `Archiver._entry`)
    xattrs_incomplete: bool = False
    lister: str = ""  # who walked (`xattr_lister`), named once by the archiver

    @property
    def xattrs_listed_as(self) -> str | None:
        """Who listed every object's extended attributes; None when some could not be
        taken, or on a platform without them."""
        return (self.lister or None) if _XATTRS and not self.xattrs_incomplete else None


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
    path: str  # absolute, for people and excludes
    rel: str
    st: os.stat_result
    root: int = 0  # which of the source paths it is under
    # the directory holding it, opened by the walk and open while the item is handled,
    # and its name there; None for a source path itself (opened by its path)
    dir_fd: int | None = None
    name: str = ""

    @property
    def at(self) -> str:
        """A path to the object that follows no link the walk did not (its directory by
        handle, through /proc), for the calls that take no directory handle."""
        if self.dir_fd is None or not _PROC_FD:
            return self.path
        return f"/proc/self/fd/{self.dir_fd}/{self.name}"


def walk(
    paths: list[Path],
    exclude: list[str],
    one_file_system: bool,
    report: WalkReport,
    release: Callable[[int], None] = os.close,
) -> Iterator[WalkItem]:
    """Every object under the paths, sorted, excludes applied; what cannot be taken
    (missing source paths, unreadable directories, sockets) goes to the report.

    A directory's handle is given to `release` once all of its items are yielded: a
    consumer that works some items behind the walk (`Archiver`, reading ahead) closes
    it only when it has handled them, so an item's `dir_fd` is never a closed number,
    or one the kernel gave another directory since."""
    _raise_open_file_limit()
    for number, root in enumerate(paths):
        top = str(root.absolute())
        try:
            st = os.lstat(top)
        except (FileNotFoundError, NotADirectoryError):
            report.missing.append(shown(top))
            continue
        except OSError as exc:
            report.unreadable.append(f"{shown(top)}: {exc.strerror}")
            continue
        yield from _walk_one(top, st, number, exclude, one_file_system, report, release)


def _walk_one(
    top: str,
    top_st: os.stat_result,
    root: int,
    exclude: list[str],
    one_file_system: bool,
    report: WalkReport,
    release: Callable[[int], None] = os.close,
) -> Iterator[WalkItem]:
    """Depth first in name order, through directory handles: each directory is opened
    from its parent's handle without following a link and checked to be the one listed,
    and everything in it is stat'ed, read and listed through that handle. So a writer
    in the source who swaps a directory for a link to /etc after the walk listed it
    gets nothing from /etc (by paths, the walk would stat and read /etc's files under
    the names it listed), and paths longer than PATH_MAX are backed up like any other.
    A stack of listings, not recursion (a tree nested deeper than Python's recursion
    limit is walked like any other); one handle a level is held, the open-file limit
    raised to its hard value for it. Strings and `os.scandir`, not `Path` objects: with
    hundreds of thousands of files, the per-name overhead is the walk's cost."""
    device = top_st.st_dev
    # (handle, its path, its entries still to walk); the source path has no handle
    stack: list[tuple[int | None, str, Iterator[tuple[str, os.stat_result]]]] = [
        (None, top, iter(((top, top_st),)))
    ]
    try:
        while stack:
            dir_fd, dir_path, entries = stack[-1]
            for name, st in entries:
                path = name if dir_fd is None else _join(dir_path, name)
                if exclude and _excluded(path, exclude):
                    continue
                mode = st.st_mode
                if not (
                    stat.S_ISREG(mode)
                    or stat.S_ISDIR(mode)
                    or stat.S_ISLNK(mode)
                    or stat.S_IFMT(mode) in _SPECIAL_TYPES
                ):  # sockets: a process makes its own when it listens
                    report.warnings.append(f"{shown(path)}: special file skipped")
                    continue
                yield WalkItem(path, path.lstrip("/"), st, root, dir_fd, name)
                if not stat.S_ISDIR(mode) or (one_file_system and st.st_dev != device):
                    continue
                fd = _open_dir(dir_fd, name, path, st, report)
                if fd is None:
                    continue
                children = _listing(fd, path, report)
                if children is None:
                    os.close(fd)
                    continue
                # walked before the rest of this directory
                stack.append(
                    (fd, path, _children(fd, path, children, device, one_file_system, report))
                )
                break
            else:
                stack.pop()
                if dir_fd is not None:
                    release(dir_fd)
    finally:  # the walk stopped early (an interrupted backup): close what is open
        for dir_fd, _, _ in stack:
            if dir_fd is not None:
                os.close(dir_fd)


def source_path(path: Path | str) -> str:
    """A source path as it is walked and stored: absolute, without `.` components or
    repeated slashes (a leading `//` too), and without `..`: the part up to the last
    `..` resolved as the kernel does (through links), the rest as given (a link as the
    last component is recorded as a link, not followed). A path stored with `..` in it
    could never be restored: a restore refuses every name that climbs."""
    parts = [p for p in os.fspath(Path(path).absolute()).split("/") if p not in ("", ".")]
    if ".." not in parts:
        return "/" + "/".join(parts)
    last = len(parts) - 1 - parts[::-1].index("..")
    head = os.path.realpath("/" + "/".join(parts[: last + 1]))
    return os.path.join(head, *parts[last + 1 :])


_SECOND_NS = 1_000_000_000  # file systems with whole-second times (ext4 with 128-byte
# inodes, ext3, some NFS servers) or two-second ones (FAT): a ctime that is an exact
# second (or an even one) is taken as one
_TICK_NS = 50_000_000  # more than the kernel's timestamp tick (jiffies, 4-10 ms) twice


def _now_ns() -> int:
    return time.time_ns()


def _settled(entry: TreeEntry, started: int) -> TreeEntry:
    """The entry, with its ctime recorded as 0 (unknown) when a change made after its
    reading began (`started`, before its attributes were listed and its data read)
    could leave the file's ctime as it is: its ctime is within a timestamp tick (a
    second or two, where the file system keeps those) of that moment. Else the next
    backup would find size, times and inode unchanged and take what was read here for
    good: with whole seconds, an attribute set in the second the walk read the old one
    was never backed up (the second attack), nor a block rewritten while a large file
    was read (the third). A ctime of 0 matches no file: the next backup reads it again."""
    ctime = entry.ctime_ns
    if ctime % (2 * _SECOND_NS) == 0:
        window = 2 * _SECOND_NS + _TICK_NS
    elif ctime % _SECOND_NS == 0:
        window = _SECOND_NS + _TICK_NS
    else:
        window = _TICK_NS
    if ctime and ctime + window > started:
        return dataclasses.replace(entry, ctime_ns=0)
    return entry


def _distinct_roots(
    paths: list[Path], report: WalkReport, exclude: list[str], one_file_system: bool
) -> list[Path]:
    """The source paths as walked (`source_path`), without those the walk of another
    one covers (or that repeat one), each of those a warning: walked twice, its files
    would be recorded twice in every snapshot and restored twice."""
    absolute = [source_path(p) for p in paths]
    kept: list[Path] = []
    for i, (path, here) in enumerate(zip(paths, absolute, strict=True)):
        outer = next(
            (
                paths[j]
                for j, other in enumerate(absolute)
                if (other == here and j < i)
                or (other != here and _covered(other, here, exclude, one_file_system))
            ),
            None,
        )
        if outer is None:
            kept.append(Path(here))
        else:
            report.warnings.append(
                f"{shown(str(path))}: inside source path {shown(str(outer))}, backed up once"
            )
    return kept


def _covered(outer: str, inner: str, exclude: list[str], one_file_system: bool) -> bool:
    """Whether walking `outer` takes `inner` and all under it: `inner` is below it by
    name, and every directory on the way down is a directory the walk enters (not a
    link, which is recorded and not followed; not excluded; not another file system
    with `one_file_system`), and so is `inner` itself when it is a directory. When in
    doubt, no: walking a path twice costs a warning-free duplicate, skipping it a loss."""
    base = outer.rstrip("/")  # "" for the root directory
    if not inner.startswith(base + "/"):
        return False
    if exclude and _excluded(outer, exclude):  # the walk skips an excluded source path
        return False
    try:
        top = os.lstat(outer)
    except OSError:
        return False
    if not stat.S_ISDIR(top.st_mode) or not _listable(outer):
        return False
    steps = inner[len(base) + 1 :].split("/")
    current = base
    for depth, name in enumerate(steps):
        current = f"{current}/{name}"
        if exclude and _excluded(current, exclude):
            return False
        try:
            st = os.lstat(current)
        except OSError:
            return False  # let its own walk say it is missing
        last = depth == len(steps) - 1
        if not stat.S_ISDIR(st.st_mode):
            if not last:
                return False
            continue
        if one_file_system and st.st_dev != top.st_dev:
            return False
        if not last and not _listable(current):  # the walk would stop there
            return False
    return True


def _listable(directory: str) -> bool:
    """Whether this process can open and list the directory, as the walk does (a
    directory it may only search, 0711, is a step `lstat` passes and the walk does not)."""
    try:
        fd = os.open(directory, _DIR_FLAGS)
    except OSError:
        return False
    try:
        with os.scandir(fd) as listing:
            next(listing, None)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def _join(directory: str, name: str) -> str:
    return f"{directory}{name}" if directory.endswith("/") else f"{directory}/{name}"


def _open_dir(
    dir_fd: int | None, name: str, path: str, st: os.stat_result, report: WalkReport
) -> int | None:
    """A handle on the directory the walk stat'ed, from its parent's handle, no link
    followed; None (and why, in the report) when it cannot be opened or is no longer
    that directory."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        report.warnings.append(f"{shown(path)}: vanished during backup")
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # a link or a file there now
            report.warnings.append(f"{shown(path)}: replaced during backup, skipped")
        elif exc.errno == errno.EMFILE:
            report.unreadable.append(
                f"{shown(path)}: cannot list directory: more levels of directories than"
                " the open-file limit allows (raise `ulimit -n`)"
            )
        else:
            report.unreadable.append(f"{shown(path)}: cannot list directory: {exc.strerror}")
        return None
    opened = os.fstat(fd)
    if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        report.warnings.append(f"{shown(path)}: replaced during backup, skipped")
        return None
    return fd


def _listing(fd: int, path: str, report: WalkReport) -> list[os.DirEntry[str]] | None:
    """A directory's entries sorted by name; None when it cannot be listed."""
    try:
        with os.scandir(fd) as listing:
            return sorted(listing, key=_name)
    except OSError as exc:
        report.unreadable.append(f"{shown(path)}: cannot list directory: {exc.strerror}")
    return None


def _children(
    fd: int,
    path: str,
    children: list[os.DirEntry[str]],
    device: int,
    one_file_system: bool,
    report: WalkReport,
) -> Iterator[tuple[str, os.stat_result]]:
    """Each entry's name with its stat (through the directory's handle), taken when the
    walk comes to it."""
    for child in children:
        name = child.name
        try:
            child_st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            report.warnings.append(f"{shown(_join(path, name))}: vanished during backup")
            continue
        except OSError as exc:
            report.unreadable.append(f"{shown(_join(path, name))}: {exc.strerror}")
            continue
        if one_file_system and stat.S_ISDIR(child_st.st_mode) and child_st.st_dev != device:
            report.warnings.append(f"{shown(_join(path, name))}: on another file system, skipped")
            continue
        yield name, child_st


def _raise_open_file_limit() -> None:
    """The soft open-file limit raised to the hard one (as Go programs, restic among
    them, do at start): the walk holds a handle for each level of directories."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


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
        self._parent_xattrs = False  # whether the parent listed every object's (archive)

    def archive(
        self,
        paths: list[Path],
        exclude: list[str],
        one_file_system: bool,
        parent: Snapshot | None,
    ) -> ArchiveResult:
        """Walk and store the paths; raises BackupError when none of them exists.

        The tree is cut into blobs as its lines are made, and the parent's tree is read in
        step with the walk (both are in the same order): memory does not grow with the
        number of files. An unchanged file's line is the parent's line, not re-encoded."""
        result = ArchiveResult()
        paths = _distinct_roots(paths, result, exclude, one_file_system)
        result.lister = xattr_lister()
        self._parent_xattrs = (
            parent is not None and parent.stats.get("xattrs_listed_as") == result.lister
        )
        roots = [str(p.absolute()).lstrip("/") for p in paths]
        previous = ParentTree(self.repo, parent, roots, result)
        lines = _LineReader(self._tree_lines(paths, exclude, one_file_system, previous, result))
        result.tree = [
            self.writer.add(BlobType.TREE, bytes(c.data)).hex()
            for c in self.chunker.cut_stream(lines)
        ]
        if len(result.missing) == len(paths):
            raise BackupError(f"no source path exists: {', '.join(result.missing)}")
        return result

    def _tree_lines(
        self,
        paths: list[Path],
        exclude: list[str],
        one_file_system: bool,
        previous: ParentTree,
        result: ArchiveResult,
    ) -> Iterator[str]:
        """The tree's lines in walk order.

        A file to read (new, or its size, ctime or inode not the parent's) starts a
        batch: the walk goes on until `READ_AHEAD_FILES` such files (`READ_AHEAD_BYTES`
        of them, or `READ_AHEAD` items, or handles held past `_handles_to_spare`) are in
        it, each opened and the kernel asked to read it in (`_prefetch`), and then the
        batch is handled in order. So the disk reads the next files together while
        they wait, not each in turn when the walk comes to it: the files a nightly
        backup reads are the day's changes, mostly out of the page cache by night
        (10,000 files of 11 KiB, cold: 0.88 s one by one, 0.47 s eight ahead). Outside
        a batch an item is handled as it is pulled; most are files taken as the
        parent's line (`_reused_as_is`).

        What the walk and the parent say (warnings, unreadable paths) while an item is
        pulled is put in the result when the item is handled, in the order it would be
        said without the batch. A directory's handle, released by the walk once all its
        items are pulled, is closed once they are handled (see `walk`)."""
        links: dict[tuple[int, int], TreeEntry] = {}  # (device, inode) -> first entry
        released: list[int] = []  # directory handles the walk is done with
        batch: list[_Ahead] = []
        reading = asked = 0  # files in the batch read in, and their bytes asked for
        ahead_files, ahead_bytes, ahead_items = READ_AHEAD_FILES, READ_AHEAD_BYTES, READ_AHEAD
        held, room = _handles_to_spare()
        saying = WalkReport()  # what is said while an item is pulled
        warned, unreadable, missing = saying.warnings, saying.unreadable, saying.missing
        previous.warnings = warned
        reuse = self._reused_as_is if self._parent_xattrs else None
        items = walk(paths, exclude, one_file_system, saying, released.append)
        try:
            for item in items:
                old = previous.find(item.root, item.rel)
                said = None
                if warned or unreadable or missing:
                    said = (warned[:], unreadable[:], missing[:])
                    del warned[:], unreadable[:], missing[:]
                line = None
                if reuse is not None and old is not None and old.data is None:
                    line = reuse(item, old)
                if not batch:
                    if released:  # their items are all handled: none is in a batch
                        _close_all(released)
                    if line is not None and said is None:  # handled now, inline: most items
                        if self.should_stop():
                            raise InterruptedError("backup interrupted")
                        size = item.st.st_size
                        result.files_reused += 1
                        self.progress(size, 1)
                        yield line
                        result.files += 1
                        result.bytes += size
                        continue
                # the handles a batch may hold here: fewer as deep as the walk's own
                # handle a level nears the open-file limit (`_handles_to_spare`)
                spare = min(held, room - item.rel.count("/"))
                fd, span = -1, 0
                if line is None and reading + len(released) < spare:
                    fd, span = self._prefetch(item, old)
                batch.append((item, old, line, fd, said))
                if fd >= 0:
                    reading += 1
                    asked += span
                elif not reading:  # nothing read in waits for it: handled now
                    yield from self._handled(batch, links, previous, result)
                    continue
                if (
                    reading >= ahead_files
                    or asked >= ahead_bytes
                    or len(batch) >= ahead_items
                    or reading + len(released) >= spare
                ):
                    yield from self._handled(batch, links, previous, result)
                    reading = asked = 0
            yield from self._handled(batch, links, previous, result)
            _put_said((warned, unreadable, missing), result)  # at the walk's end
        finally:
            items.close()
            for ahead in batch:  # interrupted as it was filled
                if ahead[3] >= 0:
                    os.close(ahead[3])
            _close_all(released)

    def _handled(
        self,
        batch: list[_Ahead],
        links: dict[tuple[int, int], TreeEntry],
        previous: ParentTree,
        result: ArchiveResult,
    ) -> Iterator[str]:
        """The lines of the items in `batch`, in order; the batch is empty after, its
        files opened ahead closed also when the backup is interrupted."""
        done = 0
        try:
            for item, old, line, fd, said in batch:
                done += 1
                if said is not None:  # in the order it would be said without the batch
                    _put_said(said, result)
                if self.should_stop():
                    if fd >= 0:
                        os.close(fd)
                    raise InterruptedError("backup interrupted")
                made: tuple[str, str, int] | None
                if line is not None:  # the parent's line, as it is
                    made = line, "file", item.st.st_size
                    result.files_reused += 1
                    self.progress(item.st.st_size, 1)
                else:
                    failures = previous.failures
                    pulling, previous.warnings = previous.warnings, result.warnings  # said now
                    try:
                        made = self._entry(item, old, links, result, fd)
                    finally:
                        previous.warnings = pulling
                        if fd >= 0:
                            os.close(fd)
                    if previous.failures != failures:
                        # a parent line that cannot be read ended its cursor: the items
                        # after it, found before that, are read again, as they would have
                        # been had the walk not run ahead
                        for j in range(done, len(batch)):
                            later, _, _, opened, was_said = batch[j]
                            if previous.broken(later.root):
                                batch[j] = (later, None, None, opened, was_said)
                if made is None:
                    continue
                line, kind, size = made
                yield line
                if kind == "file":
                    result.files += 1
                    result.bytes += size
                elif kind == "dir":
                    result.dirs += 1
        finally:
            for ahead in batch[done:]:
                if ahead[3] >= 0:
                    os.close(ahead[3])
            batch.clear()

    def _prefetch(self, item: WalkItem, old: ParentLine | None) -> tuple[int, int]:
        """A regular file that will be read, opened and its first `WHOLE_READ` bytes
        asked of the kernel (`POSIX_FADV_WILLNEED` starts the reads and returns), and
        how many bytes; (-1, 0) for anything else, or when it cannot be opened now
        (`_read_file` opens it again, and reports why). A file whose size, ctime and
        inode are the parent's is not asked for: it is read only when its chunks are
        not all in the index (`_entry` decides), and reading it in would cost a read of
        every unchanged file with extended attributes (SELinux labels every file)."""
        st = item.st
        size = st.st_size
        if not size or not _FADVISE or not stat.S_ISREG(st.st_mode):
            return -1, 0
        if old is not None:
            data = old.data
            if data is None:
                tail = f',"inode":{st.st_ino},"ctime_ns":{st.st_ctime_ns}'
                text = old.line
                if f',"size":{size},' in text and (tail + "}" in text or tail + "," in text):
                    return -1, 0
            elif (data["size"], data["inode"], data["ctime_ns"]) == (
                size,
                st.st_ino,
                st.st_ctime_ns,
            ):
                return -1, 0
        try:
            fd = os.open(item.name, _READ_FLAGS, dir_fd=item.dir_fd)
        except OSError:
            return -1, 0
        span = min(size, WHOLE_READ)
        try:
            os.posix_fadvise(fd, 0, span, os.POSIX_FADV_WILLNEED)
        except OSError:  # not a regular file any more: read (and refused) as usual
            span = 0
        return fd, span

    def store_stream(self, data: bytes, blob_type: BlobType) -> list[str]:
        """Chunk an in-memory byte string into blobs (trees, small dumps)."""
        return [self.writer.add(blob_type, bytes(c.data)).hex() for c in self.chunker.cut_buf(data)]

    def store_file(self, handle: object, size_hint: int = -1) -> tuple[list[str], list[int]]:
        """Chunk a binary stream into data blobs; returns chunk IDs and sizes.

        A seekable file of at most `WHOLE_READ` bytes (`size_hint`, from its stat) is
        read in one call and cut in memory: the streaming chunker's per-stream buffer
        costs more than the work on small files, and both cut the same bytes alike."""
        return self._store_chunks(self._cut(handle, size_hint))

    def _store_chunks(self, cut: Iterable[Chunk], whole: int = 0) -> tuple[list[str], list[int]]:
        """Store the chunks `cut` gives. Each is copied out of the chunker's buffer,
        which the streaming chunker reuses. With `whole`, the size of a file read whole
        into an immutable `bytes`, a large chunk of it is kept as a view instead (a copy
        less, and its fresh pages), but only one that goes to the seal pool at once
        (past SMALL_BLOB: small ones wait in a batch) and is at least a quarter of the
        file: a view keeps the whole file's buffer alive, and 2 KiB tails of 4 MiB
        files, kept as views, held a backup at 1.1 GiB."""
        chunks: list[str] = []
        sizes: list[int] = []
        for chunk in cut:
            size = len(chunk.data)
            view = whole and size > SMALL_BLOB and 4 * size >= whole
            data = chunk.data if view else bytes(chunk.data)
            chunks.append(self.writer.add(BlobType.DATA, data).hex())
            sizes.append(len(data))
            self.progress(len(data), 0)
            if self.should_stop():
                raise InterruptedError("backup interrupted")
        return chunks, sizes

    def _cut(self, handle: object, size_hint: int) -> Iterator[Chunk]:
        if 0 <= size_hint <= WHOLE_READ:
            # a buffer of the stat's size (+1 to see growth), not WHOLE_READ per file
            data = _read_up_to(handle, size_hint + 1)
            if len(data) <= size_hint:
                return iter(self.chunker.cut_buf(data))
            handle.seek(0)  # type: ignore[attr-defined]  # grew since its stat: stream it
        return iter(self.chunker.cut_stream(handle))  # type: ignore[arg-type]

    def _entry(
        self,
        item: WalkItem,
        old: ParentLine | None,
        links: dict[tuple[int, int], TreeEntry],
        result: ArchiveResult,
        opened: int = -1,
    ) -> tuple[str, str, int] | None:
        """The object's tree line, its type and size; None when it cannot be taken.
        `opened`: the file as `_tree_lines` opened it ahead (-1: not), left open."""
        st = item.st
        if old is not None and old.data is None and old.decoded() is None:
            old = None
        unchanged = old is not None and self._unchanged(old.data, st)  # type: ignore[arg-type]
        started = _now_ns()  # before anything of it is read (see `_settled`)
        xattrs = None
        if unchanged and self._parent_xattrs:
            xattrs = _parent_xattrs(old.data)  # type: ignore[union-attr,arg-type]
        if xattrs is None:
            xattrs = _xattrs(item.at, item.path, result)
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
            "xattrs": xattrs,
        }
        if stat.S_ISDIR(st.st_mode):
            return _made(TreeEntry(type="dir", **common))  # type: ignore[arg-type]
        if stat.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(item.name, dir_fd=item.dir_fd)
            except FileNotFoundError:
                result.warnings.append(f"{shown(item.path)}: vanished during backup")
                return None
            except OSError as exc:
                why = "replaced during backup, skipped"  # EINVAL: no link there any more
                if exc.errno != errno.EINVAL:
                    why = f"cannot read link: {exc.strerror}"
                result.warnings.append(f"{shown(item.path)}: {why}")
                return None
            return _made(TreeEntry(type="symlink", target=target, **common))  # type: ignore[arg-type]
        special = _SPECIAL_TYPES.get(stat.S_IFMT(st.st_mode))
        if special is not None:  # never opened: reading a FIFO would block
            rdev = st.st_rdev if special != "fifo" else 0
            return _made(TreeEntry(type=special, rdev=rdev, **common))  # type: ignore[arg-type]
        key = (st.st_dev, st.st_ino)
        first = links.get(key) if st.st_nlink > 1 else None
        if first is not None and (first.ctime_ns, first.size) != (st.st_ctime_ns, st.st_size):
            # the inode number of a file deleted since, reused by a new file (or the
            # file changed between its links): read it, do not take it for a link
            first = None
        if first is not None:  # a hard link of a file already in this tree: not read again
            self.progress(st.st_size, 1)
            # the same inode: its attributes are the first link's, as listed or taken
            # there (this name's parent line may hold ones changed since, unnoticed)
            linked = {**common, "xattrs": first.xattrs}
            return _made(
                _settled(
                    TreeEntry(
                        type="file",
                        size=first.size,
                        chunks=first.chunks,
                        chunk_sizes=first.chunk_sizes,
                        link_to=first.path,
                        **linked,  # type: ignore[arg-type]
                    ),
                    started,
                )
            )
        if old is not None and unchanged:
            result.files_reused += 1
            self.progress(st.st_size, 1)
            if _same_metadata(old.data, common):  # the parent's line says it all
                if st.st_nlink > 1:
                    links[key] = TreeEntry.from_json(old.line)
                return old.line, "file", st.st_size
            entry: TreeEntry | None = TreeEntry(
                type="file",
                size=old.data["size"],
                chunks=tuple(old.data["chunks"]),
                chunk_sizes=tuple(old.data["chunk_sizes"]),
                **common,  # type: ignore[arg-type]
            )
        else:
            entry = self._read_file(item, common, result, opened)
        if entry is None:
            return None
        if st.st_nlink > 1:
            links[key] = entry
        return _made(_settled(entry, started))

    def _reused_as_is(self, item: WalkItem, old: ParentLine) -> str | None:
        """The parent's line itself, when it is exactly the line this file would get
        (the same type, mode, owner, times, size and inode; no link, no device, no
        extended attributes, and a parent that listed every object's: the caller
        checks that one) and its chunks are all in the index; else None, and `_entry`
        decodes and compares it. What this takes is what the decoding path would also
        take, without the decoding: most of an unchanged walk's time was spent decoding
        the parent's lines. The cursor checked the line up to `"type":"file"`
        (`old.matched`)."""
        st = item.st
        if st.st_nlink != 1 or not stat.S_ISREG(st.st_mode):
            return None
        line = old.line
        rest = (
            f',"mode":{stat.S_IMODE(st.st_mode)},"mtime_ns":{st.st_mtime_ns},'
            f'"uid":{st.st_uid},"gid":{st.st_gid},"user":{_user_json(st.st_uid)},'
            f'"group":{_group_json(st.st_gid)},"size":{st.st_size},"chunks":['
        )
        suffix = f'],"target":"","inode":{st.st_ino},"ctime_ns":{st.st_ctime_ns}}}\n'
        start = old.matched
        if not (start and line.startswith(rest, start) and line.endswith(suffix)):
            return None
        lists = _CHUNK_LISTS.fullmatch(line, start + len(rest), len(line) - len(suffix))
        if lists is None:
            return None
        chunks = lists.group(1)
        if chunks and not all(
            map(self.repo.index.__contains__, map(bytes.fromhex, chunks[1:-1].split('","')))
        ):
            return None
        return line

    def _unchanged(self, old: dict[str, Any], st: os.stat_result) -> bool:
        same = (old["size"], old["mtime_ns"], old["ctime_ns"], old["inode"]) == (
            st.st_size,
            st.st_mtime_ns,
            st.st_ctime_ns,
            st.st_ino,
        )
        index = self.repo.index
        return same and all(bytes.fromhex(c) in index for c in old["chunks"])

    def _read_file(
        self, item: WalkItem, common: dict[str, object], result: ArchiveResult, opened: int = -1
    ) -> TreeEntry | None:
        """Read and store a regular file the walk listed. Opened without following a
        link and without blocking, and checked after reading to be a regular file: a
        writer in the source who swaps the file for a link, a FIFO or a directory
        meanwhile gets a warning and no entry, never another file read in its place (a
        root backup through a link to /etc/shadow) or a backup that hangs on a FIFO. A
        file replaced by another (saved by a rename over it) is stored with the new
        file's owner and mode, and the walk's times and inode, so the next backup
        reads it again. A file `opened` ahead (by `_prefetch`) is read from that handle,
        which the caller closes."""
        fd = opened
        try:
            if fd < 0:
                fd = os.open(item.name, _READ_FLAGS, dir_fd=item.dir_fd)
        except FileNotFoundError:
            result.warnings.append(f"{shown(item.path)}: vanished during backup")
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # O_NOFOLLOW: a link now, where the walk saw a file
                result.warnings.append(f"{shown(item.path)}: replaced during backup, skipped")
            else:
                result.unreadable.append(f"{shown(item.path)}: {exc.strerror}")
            return None
        failed: OSError | None = None
        try:
            try:
                chunks, sizes = self._store_fd(fd, item.st.st_size)
            except OSError as exc:
                failed = exc
            after = os.fstat(fd)
        finally:
            if opened < 0:
                os.close(fd)
        st = item.st
        if not stat.S_ISREG(after.st_mode):
            result.warnings.append(f"{shown(item.path)}: replaced during backup, skipped")
            return None
        replaced = (after.st_dev, after.st_ino) != (st.st_dev, st.st_ino)
        if replaced:
            common = {
                **common,
                "mode": stat.S_IMODE(after.st_mode),
                "uid": after.st_uid,
                "gid": after.st_gid,
                "user": _user(after.st_uid),
                "group": _group(after.st_gid),
            }
        if failed is not None:
            result.unreadable.append(f"{shown(item.path)}: read failed: {failed.strerror}")
            return None
        size = sum(sizes)
        result.bytes_read += size
        self.progress(0, 1)
        if replaced or (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
            result.warnings.append(f"{shown(item.path)}: changed during backup")
        return TreeEntry(
            type="file",
            size=size,
            chunks=tuple(chunks),
            chunk_sizes=tuple(sizes),
            **common,  # type: ignore[arg-type]
        )

    def _store_fd(self, fd: int, size: int) -> tuple[list[str], list[int]]:
        """`store_file` for an open descriptor, without a file object where the file is
        small (a file object costs an fstat and more Python than reading the file)."""
        if size <= WHOLE_READ:
            data = _read_whole(fd, size)
            if data is not None:
                return self._store_chunks(self.chunker.cut_buf(data), whole=len(data))
            os.lseek(fd, 0, os.SEEK_SET)  # grew since its stat: stream it
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return [], []  # swapped since listed (a FIFO would not stream): the caller says so
        with io.FileIO(fd, "rb", closefd=False) as handle:
            return self._store_chunks(self.chunker.cut_stream(handle))


def _read_whole(fd: int, size: int) -> bytes | None:
    """A file of `size` bytes (its stat's) by one read call when it gives them all, more
    calls only after a short one (FUSE with direct I/O, a signal mid-read: taken for the
    end, it would store the file cut short); None when the file holds more than `size`
    (it grew since its stat). A file that grew only after the first call gives `size`
    bytes, as it would have at its stat, and the check after reading warns of it."""
    data = os.read(fd, size + 1)
    if len(data) >= size:
        return data if len(data) == size else None
    parts, got = [data], len(data)
    while got <= size:
        more = os.read(fd, size + 1 - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts) if got <= size else None


def _read_up_to(handle: Any, limit: int) -> bytes | bytearray:
    """Up to `limit` bytes, fewer only at the end of the file. One raw read may return
    less than asked on a regular file too (FUSE with direct I/O, a signal mid-read):
    taking that as the end would store the file cut short, without a warning."""
    data = handle.read(limit)
    if not data or len(data) >= limit:
        return data
    buffer = bytearray(data)
    while len(buffer) < limit:
        more = handle.read(limit - len(buffer))
        if not more:
            break
        buffer += more
    return buffer


# an item pulled in a batch, its parent line, that line when taken as it is, its file
# opened ahead (or -1), and the warnings, unreadable and missing paths said as it was
_Ahead = tuple[
    WalkItem,
    "ParentLine | None",
    str | None,
    int,
    tuple[list[str], list[str], list[str]] | None,
]


def _put_said(said: tuple[list[str], list[str], list[str]], result: WalkReport) -> None:
    """Warnings, unreadable and missing paths said as an item was pulled, put in the
    result as it is handled (emptied: the walk's own lists are passed at its end)."""
    result.warnings.extend(said[0])
    result.unreadable.extend(said[1])
    result.missing.extend(said[2])
    for lines in said:
        lines.clear()


def _handles_to_spare() -> tuple[int, int]:
    """How many handles a read-ahead batch may hold (files opened ahead, directories kept
    open for its items), and how many the walk and the batch may hold together: the
    first is `READ_AHEAD_HANDLES`, or a 64th of the open-file limit when that is less,
    none below 1,024; the second, the limit less the handles open now and
    `_HANDLES_KEPT` for the repository's files and the walk's listing. An item as deep
    as `room` less the batch's handles gets none: the walk holds a handle a directory
    level, and past the limit it would report readable directories as unreadable (the
    limit is raised to its hard value first, as the walk does)."""
    _raise_open_file_limit()
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return READ_AHEAD_HANDLES, 2**31
    try:
        open_now = len(os.listdir("/proc/self/fd"))
    except OSError:  # no /proc: a guess
        open_now = 64
    room = soft - open_now - _HANDLES_KEPT
    return (0 if soft < 1024 else min(READ_AHEAD_HANDLES, soft // 64)), room


def _close_all(handles: list[int]) -> None:
    for handle in handles:
        os.close(handle)
    handles.clear()


def _made(entry: TreeEntry) -> tuple[str, str, int]:
    """A new entry's tree line (with its newline), type and size."""
    return entry.to_json() + "\n", entry.type, entry.size


def _same_metadata(old: dict[str, Any], common: dict[str, Any]) -> bool:
    """Whether the parent's line records exactly what this entry would (mode, owner,
    times, inode, attributes; not a hard link), so it can be reused as it is."""
    if "link_to" in old or "rdev" in old:
        return False
    for name in ("mode", "mtime_ns", "uid", "gid", "user", "group", "inode", "ctime_ns"):
        if old.get(name) != common[name]:
            return False
    xattrs = common["xattrs"]
    if not xattrs:
        return "xattrs" not in old
    return old.get("xattrs") == {k: base64.b64encode(v).decode() for k, v in xattrs}


class ParentLine:
    """The parent's line for one walk item, a file's: its text, and its fields once
    decoded. The cursor hands it over undecoded when its path matched: most lines are
    then taken whole by `Archiver._reused_as_is` without ever being decoded."""

    __slots__ = ("_cursor", "data", "line", "matched")

    def __init__(
        self,
        line: str,
        data: dict[str, Any] | None,
        cursor: _ParentCursor | None = None,
        matched: int = 0,
    ) -> None:
        self.line = line  # as stored, with its newline
        self.data = data  # the line decoded, checked to be a well-formed file entry
        self._cursor = cursor
        self.matched = matched  # undecoded: how far it is this path's `"type":"file"`

    def decoded(self) -> dict[str, Any] | None:
        """The fields; None when the line is malformed (then the parent serves no file
        after it, as when the cursor meets such a line) or not a file's after all."""
        if self.data is None:
            try:
                data = _file_line(self.line[:-1])
            except (ValueError, TypeError, KeyError) as exc:
                if self._cursor is not None:
                    self._cursor.fail(exc)
                return None
            if data["type"] != "file":  # a "type" given twice: the last one counts
                return None
            self.data = data
        return self.data


class ParentTree:
    """The parent snapshot's file entries, read in step with the walk.

    A tree is stored in walk order: the source paths in the config's order, each one
    depth first with names sorted. An entry's place is (its source path's rank, its
    path's components), so a cursor only moves forward and memory holds one tree blob,
    not every file. Source paths that nest in or repeat another one (`/x` and `/x/y`)
    cannot be told apart by a stored name: each of those has a cursor of its own over
    the parent, which takes the first entry stored under its name (`archive` walks
    such paths once since session 15; a parent made before holds them twice). Roots listed in
    another order than the parent's only cost reading some files again. A parent that
    cannot be read, or a line that is not a well-formed entry, costs reading the
    remaining files again: a warning, never the end of the backup."""

    def __init__(
        self, repo: Repository, parent: Snapshot | None, roots: list[str], result: ArchiveResult
    ) -> None:
        self._parent = parent
        self._result = result
        self.failures = 0  # cursors ended by a line or blob that cannot be read
        self.warnings = result.warnings  # where a failure is said (see Archiver._tree_lines)
        overlapping = [
            any(_overlap(root, other) for other in roots[:i] + roots[i + 1 :])
            for i, root in enumerate(roots)
        ]
        prefixes = [_json_prefix(root) for root in roots]
        shared = [None if overlapping[i] else prefix for i, prefix in enumerate(prefixes)]
        self._cursors: list[_ParentCursor] = []
        if parent is None:
            return
        common = _ParentCursor(self, repo.read_tree_lines(parent), shared, list(range(len(roots))))
        for i, overlaps in enumerate(overlapping):
            if overlaps:  # a cursor of its own, over this root's entries only
                lines = repo.read_tree_lines(parent)
                self._cursors.append(_ParentCursor(self, lines, [prefixes[i]], [i]))
            else:
                self._cursors.append(common)

    def find(self, root: int, rel: str) -> ParentLine | None:
        """The parent's entry for this path under the `root`-th source path, if a file."""
        if not self._cursors:
            return None
        return self._cursors[root].find(root, rel)

    def broken(self, root: int) -> bool:
        """Whether the cursor over the `root`-th source path was ended by a failure."""
        return bool(self._cursors) and self._cursors[root].broken

    def failed(self, exc: Exception) -> None:
        """A cursor met a line or blob it cannot read: said once, and no parent named."""
        assert self._parent is not None
        self.failures += 1
        if self._result.parent_read:
            self._result.parent_read = False
            self.warnings.append(
                f"parent snapshot {self._parent.short_id} cannot be read ({exc}):"
                " every file read again"
            )


class _ParentCursor:
    """One forward-only pass over the parent's lines: a line is ranked by the first of
    `prefixes` its name starts with (`ranks` gives the source path each stands for; a
    prefix of None is skipped) and left out when none does.

    A line is decoded only when needed: the one the walk asks for next begins with
    that path's own `{"path":...,"type":"` (a JSON string is written one way only),
    and a file's is handed over as it is; any other line is decoded to place it."""

    def __init__(
        self,
        tree: ParentTree,
        lines: Iterator[bytes],
        prefixes: list[bytes | None],
        ranks: list[int],
    ) -> None:
        self._tree = tree
        self._lines = lines
        self._prefixes = [(rank, p) for rank, p in zip(ranks, prefixes, strict=True)]
        self._text: str | None = None  # the current line, None at the end
        self._text_rank = 0
        self._key: tuple[int, tuple[str, ...]] | None = None  # once decoded
        self._current: ParentLine | None = None
        self._started = False
        self.broken = False  # ended by a line or blob it cannot read

    def find(self, root: int, rel: str) -> ParentLine | None:
        if not self._started:
            self._started = True
            self._advance()
        head = _line_head(rel)
        key: tuple[int, tuple[str, ...]] | None = None
        while (text := self._text) is not None:
            if self._key is None:  # not decoded: this path's own line, or decode it
                if (
                    self._text_rank == root
                    and text.startswith(head)
                    and text.startswith('file"', len(head))
                ):
                    self._advance()
                    return ParentLine(text + "\n", None, self, len(head) + 5)
                self._decode()
                continue
            if key is None:
                key = (root, tuple(rel.split("/")))
            if self._key < key:
                self._advance()
                continue
            return self._current if self._key == key else None
        return None

    def fail(self, exc: Exception) -> None:
        """A line or blob that cannot be read: said, and the cursor ends."""
        self.broken = True
        self._tree.failed(exc)
        self._text, self._key, self._current = None, None, None

    def _rank(self, raw: bytes) -> int | None:
        """The rank of the source path a stored line is under, from its first bytes."""
        for rank, prefix in self._prefixes:
            if prefix is None:
                continue
            if prefix == b"" or (
                raw.startswith(prefix) and raw[len(prefix) : len(prefix) + 1] in (b'"', b"/")
            ):
                return rank
        return None

    def _advance(self) -> None:
        """The next line under one of the prefixes, undecoded."""
        self._key, self._current = None, None
        try:
            for raw in self._lines:
                rank = self._rank(raw) if raw.strip() else None
                if rank is None:
                    continue
                self._text = raw.decode("utf-8", "surrogateescape")
                self._text_rank = rank
                return
        except (BackupError, ValueError, TypeError, KeyError) as exc:
            self.fail(exc)
            return
        self._text = None

    def _decode(self) -> None:
        """The current line's place in walk order, and its entry if a file's."""
        assert self._text is not None
        try:
            data = _file_line(self._text)
        except (ValueError, TypeError, KeyError) as exc:
            self.fail(exc)
            return
        self._key = (self._text_rank, tuple(data["path"].split("/")))
        self._current = ParentLine(self._text + "\n", data) if data["type"] == "file" else None


def _line_head(rel: str) -> str:
    """How the stored line of the object at `rel` begins, up to its type's value."""
    return '{"path":' + _encode_json_str(rel) + ',"type":"'


def _overlap(one: str, other: str) -> bool:
    """Whether two source paths (relative to /) are the same or one holds the other."""
    if not one or not other:  # the root directory holds everything
        return True
    return one == other or one.startswith(other + "/") or other.startswith(one + "/")


def _json_prefix(root: str) -> bytes:
    """How a stored line under this source path begins (`path` is the first field,
    written without spaces); empty for the root directory (every line is under it)."""
    if not root:
        return b""
    text = _encode_json_str(root)[:-1]  # without its closing quote
    return b'{"path":' + text.encode("utf-8", "surrogateescape")


_encode_json_str: Callable[[str], str] = json.encoder.encode_basestring  # type: ignore[attr-defined]
# a file line's chunk IDs and sizes, as `TreeEntry.to_json` writes them: group 1 the IDs
_NUMBER = "(?:0|[1-9][0-9]*)"
_CHUNK_LISTS = re.compile(
    rf'((?:"[0-9a-f]{{64}}")(?:,"[0-9a-f]{{64}}")*)?\],"chunk_sizes":\[(?:{_NUMBER}(?:,{_NUMBER})*)?'
)


def _file_line(line: str) -> dict[str, Any]:
    """A stored tree line decoded and checked as far as reusing it needs: the fields a
    reused file line is compared on or copied with (the rest is compared for equality
    with what this walk found, which a malformed value never is). Once per parent file
    in every backup: the checks are C calls (`map`, `set`), not per-item Python."""
    try:
        data, end = _scan_json(line, 0)
    except StopIteration:
        raise ValueError("malformed tree entry") from None
    if end != len(line) and line[end:].strip():
        raise ValueError("malformed tree entry")
    if type(data) is not dict or type(data.get("path")) is not str:
        raise ValueError("malformed tree entry")
    if data.get("type") != "file":
        return data
    if not data.keys() <= _ENTRY_FIELDS:
        raise ValueError(f"fields {sorted(set(data) - _ENTRY_FIELDS)} are unknown to this agent")
    chunks, sizes = data.get("chunks"), data.get("chunk_sizes")
    if (
        set(map(type, map(data.get, _NUMBER_FIELDS))) != _INT
        or type(chunks) is not list
        or type(sizes) is not list
        or not set(map(type, chunks)) <= _STR
        or not set(map(type, sizes)) <= _INT
    ):
        raise ValueError(f"malformed file entry for {data['path']!r}")
    return data


_scan_json = json.JSONDecoder().scan_once  # the C scanner: no per-line wrapper or regex
_NUMBER_FIELDS = ("size", "mtime_ns", "ctime_ns", "inode", "mode")
_INT = {int}
_STR = {str}
_ENTRY_FIELDS = frozenset(TreeEntry.__dataclass_fields__)


class _LineReader(io.RawIOBase):
    """Tree lines as a byte stream the chunker can pull (`readinto`), encoded as
    `encode_tree` does, so the blobs are the same as cutting the whole tree at once."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines
        self._pending = bytearray()  # consumed from the front: CPython does that in place

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while len(self._pending) < len(view):
            batch = list(itertools.islice(self._lines, 256))
            if not batch:
                break
            self._pending += "".join(batch).encode("utf-8", "surrogateescape")
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        del self._pending[:n]
        return n


def _xattrs(at: str, path: str, report: WalkReport) -> tuple[tuple[str, bytes], ...]:
    """The object's extended attributes (links not followed), sorted by name; none where
    the platform or file system has no such thing. `at` reaches the object (see
    `WalkItem.at`), `path` names it."""
    if not _XATTRS:
        return ()
    try:
        names = os.listxattr(at, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.ENOTSUP, errno.ENOENT):
            report.xattrs_incomplete = True
            report.warnings.append(
                f"{shown(str(path))}: cannot list extended attributes: {exc.strerror}"
            )
        return ()
    pairs: list[tuple[str, bytes]] = []
    for name in sorted(names):
        try:
            pairs.append((name, os.getxattr(at, name, follow_symlinks=False)))
        except OSError as exc:
            if exc.errno != errno.ENODATA:  # ENODATA: removed since listed
                report.xattrs_incomplete = True
                report.warnings.append(
                    f"{shown(str(path))}: cannot read extended attribute {name}: {exc.strerror}"
                )
    return tuple(pairs)


_CAP_SYS_ADMIN = 21  # the bit in /proc/self/status's CapEff


def xattr_lister() -> str:
    """Who this process is to the kernel's extended-attribute listing: its effective
    user, whether it holds CAP_SYS_ADMIN (without it `trusted.*` is not even listed)
    and its user namespace's ID maps (which map `security.capability` and ACLs). A
    parent's attributes are taken only when the same lister listed them: a parent
    listed by a service user holds no `trusted.*` names, and a root backup taking them
    from it would lose them."""
    admin = "unknown"
    maps = "unknown"
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    admin = "yes" if int(line.split()[1], 16) >> _CAP_SYS_ADMIN & 1 else "no"
        # the namespace by its ID maps, not its inode number: the kernel gives a new
        # namespace the number of one that ended, with other maps (an ACL's IDs read
        # as -1 where unmapped)
        with (
            open("/proc/self/uid_map", "rb") as uid_map,
            open("/proc/self/gid_map", "rb") as gid_map,
        ):
            mapped = b" ".join(uid_map.read().split()) + b";" + b" ".join(gid_map.read().split())
        maps = hashlib.sha256(mapped).hexdigest()[:16]
    except (OSError, ValueError, IndexError):
        pass
    return f"uid={os.geteuid()} cap_sys_admin={admin} userns_maps={maps}"


def _parent_xattrs(old: dict[str, Any]) -> tuple[tuple[str, bytes], ...] | None:
    """The extended attributes a parent's file line records, as `_xattrs` gives them;
    None when the line's are malformed (then they are listed again)."""
    if "xattrs" not in old:
        return ()
    stored = old["xattrs"]
    if type(stored) is not dict or not all(
        type(name) is str and type(value) is str for name, value in stored.items()
    ):
        return None
    try:
        return tuple(
            (name, base64.b64decode(value, validate=True)) for name, value in sorted(stored.items())
        )
    except ValueError:  # not base64
        return None


@lru_cache(maxsize=1024)
def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


@lru_cache(maxsize=1024)
def _user_json(uid: int) -> str:
    return _encode_json_str(_user(uid))


@lru_cache(maxsize=1024)
def _group_json(gid: int) -> str:
    return _encode_json_str(_group(gid))


@lru_cache(maxsize=1024)
def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return ""
