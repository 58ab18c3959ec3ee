"""Restore a snapshot's files into a target directory, safely.

Whatever the manifest says, nothing is written outside the target: absolute paths
and `..` components are refused, and every write goes through a handle on its
directory (openat, mkdirat, linkat, renameat, symlinkat, mknodat), each directory
opened from its parent's handle one name at a time without following a link. A
symbolic link where the snapshot has a directory is refused with all under it (listed
once); a directory swapped for a link while the restore runs cannot redirect a write,
as the handle holds the directory that was opened. Files are created with O_EXCL and
O_NOFOLLOW, and symbolic links are made last. Existing files are never overwritten
unless asked. Files are restored in batches in the tree's order (memory holds one
batch's plan, and the handles of at most DIRS_HELD directories, whatever the size of
the snapshot); within a batch data is fetched pack by pack (each needed run of a pack
is read once however many files it feeds) on a small pool of workers, each run
streamed with one request and its blobs written as they arrive, while the files are
created. Metadata is set through handles too (of the file, or an O_PATH handle via
/proc/self/fd, so Linux's /proc is needed for the metadata of links, nodes and
directories).

Each file is written unnamed in its directory (O_TMPFILE, held open) and given its
name only when complete, so no file ever looks whole when it is not: nothing can be
swapped for it, and a killed restore leaves nothing of it. Where the file system has
no O_TMPFILE, or the open-file limit leaves no room for the handles, a file is
written under a temporary name instead. That temporary is
reopened for each write only if its name still leads to the very file made (same
device and inode, O_NOFOLLOW, O_NONBLOCK), and its metadata is set and its name
linked through that handle (link of /proc/self/fd/N): a process that replaces it
with a link to another file, a symbolic link or a FIFO fails that one file (an
error), and nothing is written, chmod'ed or linked through the replacement. With
`overwrite` the rename replaces whatever has the name (a symbolic link is replaced,
never written through); without it an existing name (a link too) is kept. A restore
killed midway leaves at most `.opsagent-restore-*` temporaries (of files written
named), never a partial file under its name. The soft open-file limit is raised to
the hard one, and the directory handles and unnamed files kept open are sized to it.

Damaged data never stops a restore: a blob that fails authentication, a blob the
index does not know, or a missing pack damages only the files that need it. Such a
file is written with its readable parts and zeros in the unreadable ranges, under
`<name>.damaged` (or `<name>.damaged.N`: an existing file is never overwritten),
mode 0600 with the restore time, and listed in `RestoreResult.damaged` with the
reason; every other file comes back byte for byte with its metadata. A damaged part
of the tree (the list of files itself) is skipped and listed as damaged; the entries
in the readable parts are restored.

A target that cannot hold the restore (a file, not writable) and an include that
matches nothing are refused with `RestoreRefused` before anything is written.
Missing parents of the target are created, as restic does.

Hard links, FIFOs and device nodes are made by their own helpers after the files are
written and before the symbolic links: a hard link is made to its first link when that
was restored whole in the same run and its name still leads to that inode (else it is
written from its own chunk list, as a file of its own, or a `.damaged` copy), device
nodes only as root (else a
warning), and link()/mknod() never follow a last component. Extended attributes are
set without following links; one the target cannot take is a warning.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import resource
import secrets
import stat
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from json.decoder import scanstring
from pathlib import Path, PurePosixPath

from agents.backup.errors import BackupError, IntegrityError, NotFound, RestoreRefused
from agents.backup.index import Location
from agents.backup.pack import pack_key
from agents.backup.packstream import BlobCutter
from agents.backup.repository import Repository, TreeBlobs
from agents.backup.snapshot import Snapshot, TreeEntry, decode_tree_line

ProgressFn = Callable[[int, int], None]
RUN_GAP = 1 << 20
RUN_MAX = 64 << 20  # a pack (16 MiB by default) is one run; memory is bounded by streaming
READERS = 4  # runs read at once: the network overlaps decryption and writing
BATCH_FILES = 4096  # files planned, fetched and named at a time: memory holds one batch
BATCH_BYTES = 256 << 20  # ... or fewer files holding this much data
DIRS_HELD = 256  # ... or files in this many directories (a handle open on each)
TREE_KEEP = 4 << 20  # a tree up to this size is read from storage once for both passes
DAMAGED_SUFFIX = ".damaged"
_TEMP_PREFIX = ".opsagent-restore-"
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_REPLACED = "its temporary file was replaced while the restore ran (another process writes here)"
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_ANONYMOUS_FILE = os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC  # no O_EXCL: it is linked
# files are written as unnamed files (O_TMPFILE) held open until named, while the
# open-file limit leaves room for them (`_Unnamed`); else under a temporary name
ANONYMOUS_TEMPORARIES = True
_NODE_REPLACED = "replaced while the restore ran (another process writes here); not restored"
_NODE_KINDS = {"fifo": stat.S_IFIFO, "chardev": stat.S_IFCHR, "blockdev": stat.S_IFBLK}


@dataclass(frozen=True)
class Damaged:
    """A file whose data could not all be read: where it was written, and why."""

    path: str  # the entry's path in the snapshot
    reason: str  # the first unreadable part, e.g. "blob 1a2b3c4d5e6f is in no stored pack"
    written_as: str  # the `.damaged` file in the target, or "" when none could be made

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason, "written_as": self.written_as}


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
    damaged: list[Damaged] = field(default_factory=list)


@dataclass
class _Target:
    rel: PurePosixPath  # where the entry goes, under the target
    entry: TreeEntry
    # rel.parent, one object a directory (`_parent_of`): a new object a file hashed
    # itself at every dict and set of directories it met, 15-20 % of the restore's time
    # under the GIL at 200,000 files
    parent: PurePosixPath


class _Unnamed:
    """How many files may be written unnamed at once: each holds a file descriptor from
    its first data until it is named (a damaged one, until the end). Beyond that, or
    where the file system has no O_TMPFILE, files get a temporary name instead."""

    def __init__(self, limit: int) -> None:
        self._left = limit if ANONYMOUS_TEMPORARIES else 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self._left <= 0:
                return False
            self._left -= 1
            return True

    def give(self, unsupported: bool = False) -> None:
        with self._lock:
            self._left = -(1 << 30) if unsupported else self._left + 1


@dataclass
class _Pending:
    """A file being written until its data is all in: an unnamed file (O_TMPFILE) held
    open, or a file under a temporary name reopened for each write.

    Unnamed, nothing can be swapped for it and a killed restore leaves nothing behind;
    it also saves two directory updates and a reopen per write, the bulk of a small
    file's cost."""

    item: _Target
    temp: str  # the temporary's name, in the file's directory (unused when unnamed)
    dir_fd: int  # that directory's handle: open while the file's batch is written
    unnamed: _Unnamed | None = None  # where an unnamed file's descriptor is accounted
    fd: int = -1  # the unnamed file, open until `_drop`
    problem: str = ""
    tried: bool = False  # the temporary was made, or failed to be (`error`)
    made: bool = False
    inode: tuple[int, int] = (0, 0)  # (device, inode) of the temporary made: reopened only if
    error: str = ""  # it is still that file (a name swapped for a link to another is refused)
    lock: threading.Lock = field(default_factory=threading.Lock)  # one thread makes it


class _Dirs:
    """Handles on the target's directories, each opened from its parent's handle one
    name at a time with O_NOFOLLOW: a link in the target cannot lead a write out of it,
    and a directory swapped for a link after it was opened changes nothing (the handle
    holds the directory). O_PATH handles need no read permission, as paths did not.

    The handles are kept in an LRU of `keep`; those `hold` names (the directories of
    the batch being written, used by the reader threads) are never closed. A directory
    that could not be had fails again without a new try (reported once)."""

    def __init__(self, root: Path, keep: int = DIRS_HELD + 128) -> None:
        limit = _open_file_limit()
        keep = min(keep, max(4, (limit - 64) // 2))
        self.max_held = max(1, keep // 2)  # a batch's directories: the rest of `keep`
        # descriptors left for files written unnamed (`_Unnamed`): half the limit, less
        # the directories', none under a low limit
        self.spare = max(0, min(BATCH_FILES, (limit - 64) // 2 - keep))
        self.root = root
        self.root_fd = os.open(root, _DIR_FLAGS & ~os.O_NOFOLLOW)  # resolved already
        self.reported: set[str] = set()
        self._open: OrderedDict[PurePosixPath, int] = OrderedDict()
        self._held: set[PurePosixPath] = set()
        self._failed: dict[PurePosixPath, OSError] = {}
        self._keep = max(keep, 2)

    def __enter__(self) -> _Dirs:
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self._open.values():
            os.close(fd)
        self._open.clear()
        os.close(self.root_fd)

    def hold(self, rels: set[PurePosixPath]) -> None:
        """Keep these directories' handles open (until the next `hold`)."""
        self._held = rels

    def get(self, rel: PurePosixPath, create: bool = True) -> int:
        """The handle of directory `rel` (made, mode 0700 until its metadata is set, when
        missing and `create`); OSError naming the first part that failed, relative to the
        target, with ELOOP when it is a symbolic link."""
        fd = self._open.get(rel)
        if fd is not None:
            self._open.move_to_end(rel)
            return fd
        steps = []  # down from the nearest directory already open
        while rel.parts and rel not in self._open:
            steps.append(rel)
            rel = rel.parent
        fd = self.root_fd if not rel.parts else self._open[rel]
        for step in reversed(steps):
            fd = self._step(fd, step, create)
        return fd

    def _open_at(self, parent: int, name: str) -> int:
        """Open a directory handle; out of file descriptors, close the handles not held
        and try once more."""
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent)
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE):
                raise
        for old in [r for r in self._open if r not in self._held and self._open[r] != parent]:
            os.close(self._open.pop(old))
        return os.open(name, _DIR_FLAGS, dir_fd=parent)

    def _step(self, parent: int, rel: PurePosixPath, create: bool) -> int:
        failed = self._failed.get(rel)
        if failed is not None:
            raise failed
        try:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(rel.name, 0o700, dir_fd=parent)
            fd = self._open_at(parent, rel.name)
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                raise OSError(exc.errno, exc.strerror, str(rel)) from None  # not lasting
            code, reason = exc.errno or errno.EIO, exc.strerror or str(exc)
            with contextlib.suppress(OSError):
                if stat.S_ISLNK(os.stat(rel.name, dir_fd=parent, follow_symlinks=False).st_mode):
                    code, reason = errno.ELOOP, "a symbolic link"
            self._failed[rel] = OSError(code, reason, str(rel))
            raise self._failed[rel] from None
        self._open[rel] = fd
        if len(self._open) > self._keep:
            for old in self._open:  # the least recently used not held
                if old not in self._held:
                    os.close(self._open.pop(old))
                    break
        return fd


def _open_file_limit() -> int:
    """The open-file limit, its soft value raised to the hard one first (as Go programs,
    restic among them, do at start): a restore keeps directory handles open."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return 1 << 20 if soft == resource.RLIM_INFINITY else soft


class _Batch:
    """The files to write next, written when BATCH_FILES of them, BATCH_BYTES of data or
    `max_dirs` directories (DIRS_HELD, fewer under a low open-file limit) are reached
    (or on `flush`)."""

    def __init__(self, write: Callable[[list[_Target]], None], max_dirs: int) -> None:
        self._write = write
        self._max_dirs = max_dirs
        self.files: list[_Target] = []
        self._dirs: set[PurePosixPath] = set()
        self._bytes = 0

    def add(self, item: _Target) -> None:
        if item.parent not in self._dirs and len(self._dirs) >= self._max_dirs:
            self.flush()
        self.files.append(item)
        self._dirs.add(item.parent)
        self._bytes += item.entry.size
        if len(self.files) >= BATCH_FILES or self._bytes >= BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        files, self.files, self._dirs, self._bytes = self.files, [], set(), 0
        self._write(files)


def plan(
    repo: Repository,
    snapshot: Snapshot,
    include: list[str] | None,
    lost: list[str] | None = None,
) -> list[TreeEntry]:
    """The entries a restore would write (after the include filter); an include that
    matches nothing is refused, naming it, so a typo never passes for an empty restore.
    With `lost`, a damaged part of the tree is skipped and described there instead of
    stopping everything."""
    entries = list(repo.read_tree(snapshot, lost))
    if not include:
        return entries
    wanted = _wanted(include)
    unmatched = [
        p
        for p, w in zip(include, wanted, strict=True)
        if not any(_under(e.path, w) for e in entries)
    ]
    if unmatched:
        raise _unmatched(snapshot, unmatched)
    return [e for e in entries if _included(e.path, wanted)]


def _wanted(include: list[str]) -> list[str]:
    """The include paths as the snapshot spells paths: relative, without `.`, `..` or
    doubled slashes (`/a//b/./c/` is `a/b/c`, `/` is everything); one that climbs above
    the root (`..`, `a/../..`) keeps its `..` and so matches nothing (refused)."""
    normal = [posixpath.normpath(p.strip("/") or ".") for p in include]
    return ["" if p == "." else p for p in normal]


def _included(path: str, wanted: list[str]) -> bool:
    """Whether an entry is restored for these includes: the path itself, what is under
    it, and the directories above it (their metadata)."""
    return any(_under(path, w) or _under(w, path) for w in wanted)


def _under(path: str, top: str) -> bool:
    """Whether `path` is `top` or lies under it (`a/bc` is not under `a/b`; everything
    is under the root, "")."""
    return not top or path == top or path.startswith(top + "/")


def _unmatched(snapshot: Snapshot, unmatched: list[str], lost: int = 0) -> RestoreRefused:
    if lost:  # not a typo, perhaps: the entries may be in the part that cannot be read
        return RestoreRefused(
            f"--include {', '.join(repr(p) for p in unmatched)} matches nothing in the"
            f" readable part of snapshot {snapshot.short_id}: {lost} part(s) of its file"
            " list are damaged or missing (run `opsagent backup check`); restore without"
            " --include to get every readable entry"
        )
    return RestoreRefused(
        f"--include {', '.join(repr(p) for p in unmatched)} matches nothing in snapshot"
        f" {snapshot.short_id}; see its paths with `opsagent backup show"
        f" {snapshot.short_id} --ls`"
    )


def restore(
    repo: Repository,
    snapshot: Snapshot,
    target: Path,
    include: list[str] | None = None,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    workers: int = READERS,
) -> RestoreResult:
    """Restore the snapshot (or its `include` paths) into `target`; what could not be
    restored is in the result (refused, kept existing, errors, damaged), never raised.
    Raises RestoreRefused before writing anything for a bad target or include.

    The tree is read twice and never held: a first pass refuses an include that matches
    nothing and finds the directories (made first) and the first links hard links name;
    the second restores its files in batches (`_Batch`), so memory holds one batch's
    plan, not one object per file of the snapshot. Directories, links and device nodes
    are kept for the end (their metadata, and links made last)."""
    progress = progress or (lambda b, f: None)
    result = RestoreResult()
    keep = TreeBlobs(TREE_KEEP)
    firsts, tree_dirs = _survey(repo, snapshot, include, keep)
    wanted = _wanted(include) if include else None
    dropped = _droppable(snapshot)
    parents: dict[str, PurePosixPath] = {}
    with _Dirs(_prepare_target(target)) as dirs:
        made_dirs: list[_Target] = []
        for entry in tree_dirs:
            item = _target(entry, wanted, result, parents)
            if item is None:
                continue
            fd = _open_dir(dirs, item.rel, result)
            if fd is not None:
                # before anything is made in it: a default ACL the snapshot lacks (the
                # existing directory's, or inherited from the target's) would be
                # inherited by every file restored into it
                _drop_xattrs(f"/proc/self/fd/{fd}", item.entry, result, dropped)
                result.dirs += 1
                made_dirs.append(item)
        del tree_dirs
        links: list[_Target] = []
        nodes: list[_Target] = []
        hard_links: list[_Target] = []
        planned: set[str] = set()  # first links this run writes: their hard links are linked
        unlinked: list[TreeEntry] = []  # hard links to be written as files of their own
        made: dict[str, tuple[PurePosixPath, tuple[int, int]]] = {}  # written whole: inode
        pending: list[_Pending] = []  # temporaries not yet named, removed after a failure
        damaged: list[_Pending] = []  # named last, once every name they could take is known
        lost_tree: list[str] = []
        try:
            with ThreadPoolExecutor(max(1, workers), thread_name_prefix="restore") as pool:
                unnamed = _Unnamed(dirs.spare)

                def write(files: list[_Target]) -> None:
                    _write_files(
                        repo, dirs, files, overwrite, progress, pool, result, pending, unnamed
                    )
                    _name_batch(dirs, pending, overwrite, progress, result, made, firsts, damaged)

                batch = _Batch(write, min(DIRS_HELD, dirs.max_held))
                for entry in repo.read_tree(snapshot, lost_tree, keep):
                    if entry.type == "dir":
                        continue  # made first
                    item = _target(entry, wanted, result, parents)
                    if item is None:
                        continue
                    if entry.type == "symlink":
                        links.append(item)
                    elif entry.type != "file":
                        nodes.append(item)
                    elif entry.link_to and entry.link_to in planned:
                        hard_links.append(item)
                    else:
                        if entry.link_to:  # its first link is not restored (--include)
                            unlinked.append(entry)
                        if not entry.link_to and entry.path in firsts:
                            planned.add(entry.path)
                        batch.add(item)
                batch.flush()
                # a link whose first link was not restored whole (damaged, kept existing,
                # failed) is written from its own chunk list, as a file of its own
                for item in _make_hard_links(dirs, hard_links, made, overwrite, result):
                    if item.entry.link_to not in made:
                        unlinked.append(item.entry)
                    batch.add(item)
                if batch.files:
                    batch.flush()
                # said only of those written: one kept existing was not written at all
                kept = set(result.skipped_existing)
                result.warnings += [_unlinked(e) for e in unlinked if e.path not in kept]
            for part in lost_tree:
                result.damaged.append(
                    Damaged(part, "this part of the file list is damaged or missing", "")
                )
            if damaged:
                reserved = _names_taken(repo, snapshot, damaged, keep)
                dirs.hold(set())
                while damaged:
                    job = damaged.pop()
                    try:
                        _name(dirs, job, overwrite, result, reserved)
                    finally:
                        _drop(dirs, job)
                    progress(0, 1)
                pending.clear()
        finally:
            for job in pending:  # after a failure that stopped the restore: none left
                _drop(dirs, job)
        _make_nodes(dirs, nodes, overwrite, result)
        _make_symlinks(dirs, links, overwrite, result)
        for item in sorted(made_dirs, key=lambda d: -len(d.rel.parts)):
            with contextlib.suppress(OSError):  # gone or swapped since: nothing to set
                _apply_at(dirs.get(item.rel, create=False), None, item.entry, result)
    return result


def _unlinked(entry: TreeEntry) -> str:
    """The warning for a hard link written as a file of its own."""
    return (
        f"{entry.path}: written as a file of its own, not as a hard link to"
        f" {entry.link_to}, which this restore did not write (not included, kept"
        " existing, damaged or failed); restore it too, with --overwrite into this"
        " target or into a fresh one, for the links"
    )


def _target(
    entry: TreeEntry,
    wanted: list[str] | None,
    result: RestoreResult,
    parents: dict[str, PurePosixPath],
) -> _Target | None:
    """Where an entry the includes take goes under the target; None when not included,
    or when its path would leave the target (refused, listed). `parents` holds the
    directories met so far, each once (`_parent_of`)."""
    if wanted is not None and not _included(entry.path, wanted):
        return None
    rel = _safe_relative(entry.path)
    if rel is None:
        result.refused.append(entry.path)
        return None
    return _Target(rel, entry, _parent_of(entry.path, parents))


def _parent_of(path: str, parents: dict[str, PurePosixPath]) -> PurePosixPath:
    """`PurePosixPath(path).parent` of a path `_safe_relative` took, as the one object
    `parents` holds for that directory: found by the normalised string (no empty or "."
    parts, as pathlib drops them), made once."""
    directory = "/".join(part for part in path.split("/") if part and part != ".")
    directory = directory.rpartition("/")[0]
    parent = parents.get(directory)
    if parent is None:
        parent = parents[directory] = PurePosixPath(directory)
    return parent


def _open_dir(dirs: _Dirs, rel: PurePosixPath, result: RestoreResult) -> int | None:
    """The handle of a directory to write into, made if missing; None when it cannot be
    had, reported once per directory: a symbolic link on the way is refused (it could
    lead out of the target, and is refused even when it would not), anything else (a
    file in the way, no permission) is an error."""
    try:
        return dirs.get(rel)
    except OSError as exc:
        where = str(exc.filename)
        if where not in dirs.reported:
            dirs.reported.add(where)
            if exc.errno == errno.ELOOP:
                result.refused.append(where)
            else:
                result.errors.append(f"{where}: {exc.strerror}")
        return None


def _survey(
    repo: Repository, snapshot: Snapshot, include: list[str] | None, keep: TreeBlobs
) -> tuple[set[str], list[TreeEntry]]:
    """The first pass: refuse an include that matches nothing (before anything is
    written); return the paths hard links name as their first link, and the
    directories (made before any file, as the file system's allocator places files
    best when their directories exist first). Only lines that can answer are decoded:
    a directory, a line with `link_to`, and while an include is unmatched, each line's
    path (its first field)."""
    wanted = _wanted(include or [])
    unmatched = dict(zip(wanted, include or (), strict=True))
    firsts: set[str] = set()
    dirs: list[TreeEntry] = []
    lost: list[str] = []
    for line in repo.read_tree_lines(snapshot, lost, keep):
        entry = None
        if b'"link_to":' in line or b'"type":"dir"' in line:
            entry = _decoded(line)
            if entry is not None and entry.link_to:
                firsts.add(entry.link_to)
            if entry is not None and entry.type == "dir":
                dirs.append(entry)
        if not unmatched:
            continue
        path = entry.path if entry is not None else _line_path(line)
        if path is not None:
            for w in [w for w in unmatched if _under(path, w)]:
                del unmatched[w]
    if unmatched:
        raise _unmatched(snapshot, list(unmatched.values()), len(lost))
    return firsts, dirs


def _decoded(line: bytes) -> TreeEntry | None:
    try:
        return decode_tree_line(line)
    except (ValueError, TypeError):  # the restore's own pass reports it
        return None


def _line_path(line: bytes) -> str | None:
    """An entry's path read from its line without decoding the rest (the path is written
    first); other lines are decoded whole."""
    if line.startswith(b'{"path":"') and line.count(b'"path":') == 1:  # else: decoded
        with contextlib.suppress(ValueError):
            return scanstring(line.decode("utf-8", "surrogateescape"), 9)[0]
    entry = _decoded(line)
    return entry.path if entry is not None else None


def _names_taken(
    repo: Repository, snapshot: Snapshot, damaged: list[_Pending], keep: TreeBlobs
) -> set[PurePosixPath]:
    """Every name the snapshot gives in the damaged files' directories, included or not:
    a `.damaged` file never takes a name the snapshot itself has (one more pass, only
    after damage)."""
    parents = {job.item.parent for job in damaged}
    taken: set[PurePosixPath] = set()
    for entry in repo.read_tree(snapshot, [], keep):  # not only the included: a later
        rel = _safe_relative(entry.path)  # restore of the rest must find its names free
        if rel is not None and rel.parent in parents:
            taken.add(rel)
    return taken


def _prepare_target(target: Path) -> Path:
    """The target directory, created with its parents if missing, resolved; refused
    when it is not a directory this process can write into."""
    try:
        target.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise RestoreRefused(f"--to {target} is not a directory") from None
    except OSError as exc:
        raise RestoreRefused(f"cannot create the target {target}: {exc.strerror}") from None
    root = Path(os.path.realpath(target))
    if not root.is_dir():
        raise RestoreRefused(f"--to {target} is not a directory")
    if not os.access(root, os.W_OK | os.X_OK):
        raise RestoreRefused(f"--to {target} is not writable")
    return root


def _write_files(
    repo: Repository,
    dirs: _Dirs,
    files: list[_Target],
    overwrite: bool,
    progress: ProgressFn,
    pool: ThreadPoolExecutor,
    result: RestoreResult,
    pending: list[_Pending],
    unnamed: _Unnamed,
) -> None:
    """Write each file of a batch, unnamed or under a temporary name, and fill it;
    `pending` gets the temporaries made (in file order), each with its `problem` when
    some data could not be read. `_name_batch` then gives them their names.

    The reads start at once: the reader that first has data for a file makes its
    temporary, so making thousands of files overlaps the download (restic does the
    same); files no reader made (no readable data) are made here afterwards. The
    readers write through the directories' handles, held open for the batch."""
    wanted: dict[bytes, list[tuple[_Pending, int]]] = defaultdict(list)
    sizes: dict[bytes, int] = {}
    jobs: list[_Pending] = []
    made_before = list(pending)  # earlier batches' damaged files, named last
    dirs.hold({item.parent for item in files})
    for item in files:
        dir_fd = _open_dir(dirs, item.parent, result)
        if dir_fd is None:
            continue
        if not overwrite and _exists(dir_fd, item.rel.name):
            result.skipped_existing.append(item.entry.path)
            continue
        job = _Pending(item, _TEMP_PREFIX + secrets.token_hex(8), dir_fd, unnamed)
        jobs.append(job)
        job.problem = _locate(repo, item.entry, job, wanted, sizes)

    failed: dict[bytes, str] = {}
    try:
        futures = [
            pool.submit(_fetch, repo, pack_id, run, wanted, sizes, progress, failed, pending)
            for pack_id, run in _plan_runs(repo, wanted)
        ]
        try:
            for future in futures:
                future.result()
        except BaseException:  # storage unreachable, disk full: the rest is not read
            for future in futures:
                future.cancel()
            for future in futures:  # none may make a temporary after the clean-up
                with contextlib.suppress(BaseException):
                    future.result()
            raise
    finally:
        pending[:] = made_before + [job for job in jobs if job.made]  # in file order
    for job in jobs:
        if not job.tried:
            _create(job, pending)
        if job.error:
            result.errors.append(f"{job.item.entry.path}: {job.error}")
    pending[:] = made_before + [job for job in jobs if job.made]
    for blob_id, reason in failed.items():
        for job, _ in wanted[blob_id]:
            job.problem = job.problem or reason


def _name_batch(
    dirs: _Dirs,
    pending: list[_Pending],
    overwrite: bool,
    progress: ProgressFn,
    result: RestoreResult,
    made: dict[str, tuple[PurePosixPath, tuple[int, int]]],
    firsts: set[str],
    damaged: list[_Pending],
) -> None:
    """Name the batch's whole files; a damaged one stays pending for the end, when the
    names it must not take are known. `made` gets the first links of hard links
    restored whole. Afterwards `pending` holds the damaged files only."""
    held = {id(job) for job in damaged}
    batch = [job for job in pending if id(job) not in held]
    damaged += [job for job in batch if job.problem and not job.error]
    for job in reversed(batch):
        if job.problem or job.error:
            if job.error:
                _drop(dirs, job)
            continue
        try:
            if _name(dirs, job, overwrite, result, set()) and job.item.entry.path in firsts:
                made[job.item.entry.path] = (job.item.rel, job.inode)
        finally:
            _drop(dirs, job)
        progress(0, 1)
    pending[:] = damaged


def _create(job: _Pending, pending: list[_Pending]) -> bool:
    """Make the job's temporary at its full size (never through a link, never over a
    file), once, whichever thread asks first; True when it exists."""
    with job.lock:
        if job.tried:
            return job.made
        job.tried = True
        fd = _create_unnamed(job)
        if fd < 0:
            try:
                fd = os.open(job.temp, _NEW_FILE, 0o600, dir_fd=job.dir_fd)
            except OSError as exc:
                job.error = str(exc.strerror)
                return False
        pending.append(job)
        job.made = True
        try:
            st = os.fstat(fd)
            job.inode = (st.st_dev, st.st_ino)
            os.ftruncate(fd, job.item.entry.size)
        finally:
            if fd != job.fd:
                os.close(fd)
        return True


def _create_unnamed(job: _Pending) -> int:
    """The job's file made unnamed in its directory and kept open (`job.fd`), if the
    descriptor budget allows and the file system can; else -1."""
    if job.unnamed is None or not job.unnamed.take():
        return -1
    try:
        job.fd = os.open(".", _ANONYMOUS_FILE, 0o600, dir_fd=job.dir_fd)
    except OSError as exc:
        job.unnamed.give(unsupported=exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL))
        return -1
    return job.fd


class _Replaced(Exception):
    """A temporary's name no longer leads to the file the restore made."""


def _reopen(job: _Pending, flags: int) -> int:
    """Open the job's temporary again, by name but only if it is still the file made
    (same device and inode, a regular file): a process writing into the target may
    have put a link to another file, a symbolic link or a FIFO in its place, and
    nothing is ever written, chmod'ed or linked through that. O_NONBLOCK: a FIFO
    cannot hang the restore."""
    try:
        fd = os.open(
            job.temp, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=job.dir_fd
        )
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EROFS, errno.EMFILE):
            raise
        raise _Replaced from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != job.inode:
        os.close(fd)
        raise _Replaced
    return fd


def _locate(
    repo: Repository,
    entry: TreeEntry,
    job: _Pending,
    wanted: dict[bytes, list[tuple[_Pending, int]]],
    sizes: dict[bytes, int],
) -> str:
    """Queue the file's blobs at their offsets; returns why some cannot be read, or ""."""
    if len(entry.chunk_sizes) != len(entry.chunks) or sum(entry.chunk_sizes) != entry.size:
        return "its chunk sizes in the snapshot are inconsistent"
    problem = ""
    offset = 0
    for chunk, size in zip(entry.chunks, entry.chunk_sizes, strict=True):
        try:
            blob_id = bytes.fromhex(chunk)
        except ValueError:
            blob_id = b""
        if repo.location(blob_id) is None:
            problem = problem or f"blob {chunk[:12]} is in no stored pack"
        else:
            wanted[blob_id].append((job, offset))
            sizes[blob_id] = size
        offset += size
    return problem


def _name(
    dirs: _Dirs, job: _Pending, overwrite: bool, result: RestoreResult, reserved: set[PurePosixPath]
) -> bool:
    """Give a filled temporary its name: the entry's name when whole (True), `.damaged`
    if not. The directory's handle is had again (a damaged file is named at the end);
    the metadata is set on, and the name linked to, the very file written (through its
    handle), never to what its temporary's name may lead to by then."""
    entry, rel = job.item.entry, job.item.rel
    try:
        dir_fd = job.dir_fd = dirs.get(job.item.parent, create=False)  # its batch's may be closed
        fd = job.fd if job.fd >= 0 else _reopen(job, os.O_RDONLY)
    except (OSError, _Replaced) as exc:  # its directory or its temporary went away
        why = exc.strerror if isinstance(exc, OSError) else _REPLACED
        if job.problem:
            result.damaged.append(Damaged(entry.path, job.problem, ""))
        else:
            result.errors.append(f"{entry.path}: {why}")
        return False
    temp = job.temp if job.fd < 0 else ""  # an unnamed file has no name to rename
    try:
        if job.problem:
            written = _link_unused(fd, dir_fd, rel, reserved, temp)
            shown = str(dirs.root / written) if written is not None else ""
            result.damaged.append(Damaged(entry.path, job.problem, shown))
            return False
        _apply_to(fd, entry, result)
        named = _created(entry, result, _link_name, fd, dir_fd, rel.name, temp, overwrite)
    except OSError as exc:  # naming the damaged file
        result.errors.append(f"{entry.path}: {exc.strerror}")
        return False
    finally:
        if fd != job.fd:  # reopened here; an unnamed file is closed by `_drop`
            os.close(fd)
    if not named:
        return False
    result.files += 1
    result.bytes += entry.size
    return True


def _link_name(fd: int, dir_fd: int, name: str, temp: str, overwrite: bool) -> None:
    """Link the open file under `name`; with `overwrite` through a fresh name and a
    rename, which replaces a link itself and never writes through it."""
    if overwrite:
        fresh = _TEMP_PREFIX + secrets.token_hex(8)
        _link_fd(fd, dir_fd, fresh, temp)
        os.replace(fresh, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    else:
        _link_fd(fd, dir_fd, name, temp)


def _link_unused(
    fd: int, dir_fd: int, rel: PurePosixPath, reserved: set[PurePosixPath], temp: str
) -> PurePosixPath | None:
    """Name the file `<name>.damaged`, or `.damaged.1`, `.damaged.2`...: the first that
    is free and that no entry of the snapshot itself will take."""
    name = rel.name + DAMAGED_SUFFIX
    for n in range(100):
        candidate = rel.with_name(name if n == 0 else f"{name}.{n}")
        if candidate in reserved:
            continue
        try:
            _link_fd(fd, dir_fd, candidate.name, temp)
        except FileExistsError:
            continue
        except OSError:
            return None
        return candidate
    return None


def _link_fd(fd: int, dir_fd: int, name: str, temp: str = "") -> None:
    """Give the open file `fd` the name `name` only if nothing has it (FileExistsError
    otherwise): link(2) of the handle's own inode (/proc/self/fd), atomic. On a file
    system without hard links (vfat, some FUSE), its temporary `temp` is renamed."""
    try:
        os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=dir_fd)  # follows to the inode
    except FileExistsError:
        raise
    except OSError as exc:
        if not temp or exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        if _exists(dir_fd, name):
            raise FileExistsError(errno.EEXIST, "File exists", name) from None
        os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def _drop(dirs: _Dirs, job: _Pending) -> None:
    """Remove the job's temporary if it is still there; an unnamed one is closed (and is
    gone unless it was named)."""
    if job.fd >= 0:
        fd, job.fd = job.fd, -1
        os.close(fd)
        assert job.unnamed is not None
        job.unnamed.give()
        return
    with contextlib.suppress(OSError):
        os.unlink(job.temp, dir_fd=dirs.get(job.item.parent, create=False))


def _plan_runs(
    repo: Repository, wanted: dict[bytes, list[tuple[_Pending, int]]]
) -> list[tuple[str, list[tuple[Location, bytes]]]]:
    """The needed parts of the packs: (pack, its blobs in a run), each run read once."""
    by_pack: dict[str, list[tuple[Location, bytes]]] = defaultdict(list)
    for blob_id in wanted:
        location = repo.location(blob_id)
        assert location is not None
        by_pack[location.pack].append((location, blob_id))
    runs: list[tuple[str, list[tuple[Location, bytes]]]] = []
    for pack_id, located in by_pack.items():
        runs += [(pack_id, run) for run in _runs(sorted(located, key=lambda i: i[0].offset))]
    return runs


def _fetch(
    repo: Repository,
    pack_id: str,
    run: list[tuple[Location, bytes]],
    wanted: dict[bytes, list[tuple[_Pending, int]]],
    sizes: dict[bytes, int],
    progress: ProgressFn,
    failed: dict[bytes, str],
    pending: list[_Pending],
) -> None:
    """Read one run of a pack with one streamed request and write each blob at its file
    offsets as soon as its bytes are in: each is opened (authenticated, decompressed,
    hash-checked) first, so memory holds a block and part of a blob, never a pack.

    A blob that cannot be read (missing pack, failed authentication, wrong size) goes
    to `failed` with the reason; its ranges stay zero. A storage failure other than a
    missing object (unreachable, denied) still stops the restore: it is not damage."""
    first = run[0][0].offset
    end = max(loc.offset + loc.length for loc, _ in run)
    cutter = BlobCutter(first, [(blob_id, loc) for loc, blob_id in run])
    done: set[bytes] = set()

    def deliver(blob_id: bytes, sealed: memoryview) -> None:
        done.add(blob_id)
        try:
            plain = repo.open_blob(blob_id, sealed, pack_id)  # type: ignore[arg-type]
        except IntegrityError as exc:
            failed[blob_id] = str(exc)
            return
        if len(plain) != sizes[blob_id]:
            failed[blob_id] = f"blob {blob_id.hex()[:12]} has an unexpected size"
            return
        for job, offset in wanted[blob_id]:
            if _create(job, pending):
                _write_at(job, plain, offset)
                progress(len(plain), 0)

    try:
        for block in repo.storage.stream(pack_key(pack_id), first, end - first):
            for blob_id, _, sealed in cutter.feed(block):
                deliver(blob_id, sealed)
        for blob_id, _, sealed in cutter.finish():  # the pack ends early: these fail
            deliver(blob_id, sealed)
    except NotFound:
        failed.update((b, f"pack {pack_id[:12]} is missing") for _, b in run if b not in done)


def _write_at(job: _Pending, data: bytes, offset: int) -> None:
    """Write a blob into the job's temporary; a temporary replaced meanwhile fails that
    file alone (its error), a write that fails (a full disk) stops the restore."""
    if job.error:
        return
    if job.fd >= 0:  # unnamed: nobody else can reach it
        try:
            os.pwrite(job.fd, data, offset)
        except OSError as exc:
            where = job.item.parent
            raise BackupError(f"cannot write into the target's {where}: {exc.strerror}") from None
        return
    try:
        fd = _reopen(job, os.O_WRONLY)
    except _Replaced:
        job.error = _REPLACED
        return
    except OSError as exc:
        raise BackupError(f"cannot write into the target: {exc.strerror}") from None
    try:
        os.pwrite(fd, data, offset)
    except OSError as exc:  # a full disk or a failing one: nothing more can be written
        where = job.item.parent
        raise BackupError(f"cannot write into the target's {where}: {exc.strerror}") from None
    finally:
        os.close(fd)


def _runs(located: list[tuple[Location, bytes]]) -> list[list[tuple[Location, bytes]]]:
    """Group a pack's needed blobs (sorted by offset) into runs read with one request
    each: neighbours closer than RUN_GAP are read through rather than split, and a run
    stops at RUN_MAX bytes so that the workers share a large pack."""
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
    """The entry's path if it is a plain relative path with no way out of the target.
    Judged on the string (pathlib keeps every ".." part and makes no path absolute that
    does not start with "/"), so a file costs one PurePosixPath, not its parts too."""
    if not path or "\x00" in path or path.startswith("/") or ".." in path.split("/"):
        return None
    return PurePosixPath(path)


def _apply_at(
    dir_fd: int, name: str | None, entry: TreeEntry, result: RestoreResult, made: int = 0
) -> bool:
    """Set the entry's extended attributes, owner, mode and times on `name` in the
    directory, or on the directory itself when None; never through a link: a symbolic
    link gets its attributes, owner and times on itself. Metadata is best effort (the
    data is what matters); an attribute the target cannot take is a warning.

    `made`: the type (S_IFIFO, S_IFCHR...) of the node this process just made under
    `name`; metadata is set only if the name still leads to a node of that type owned
    by this process (False otherwise): a writer in the target that swapped its own
    file in (a rename exchange) never gets it chowned or chmod'ed."""
    if name is None:
        _apply_to(f"/proc/self/fd/{dir_fd}", entry, result)  # the handle's own directory
        return True
    try:
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return not made
    try:
        st = os.fstat(fd)
        if made and (stat.S_IFMT(st.st_mode) != made or st.st_uid != os.geteuid()):
            return False
        if not stat.S_ISLNK(st.st_mode):
            _apply_to(f"/proc/self/fd/{fd}", entry, result)  # the very inode opened
            return True
    finally:
        os.close(fd)
    if os.geteuid() == 0:  # before the attributes, as for a file
        with contextlib.suppress(OSError):
            os.chown(name, entry.uid, entry.gid, dir_fd=dir_fd, follow_symlinks=False)
    _apply_xattrs(f"/proc/self/fd/{dir_fd}/{name}", entry, result, follow=False)
    with contextlib.suppress(OSError):
        times = (entry.mtime_ns, entry.mtime_ns)
        os.utime(name, ns=times, dir_fd=dir_fd, follow_symlinks=False)
    return True


def _apply_to(handle: str | int, entry: TreeEntry, result: RestoreResult) -> None:
    """Metadata through a file's own handle, or an O_PATH handle's /proc/self/fd link
    (followed to the inode). The owner comes first: chown clears the set-id bits and
    the file capability (security.capability), so the attributes and the mode follow it.
    The attributes come before the mode: a read-only file would refuse user.* ones."""
    if os.geteuid() == 0:
        with contextlib.suppress(OSError):
            os.chown(handle, entry.uid, entry.gid)
    if entry.type == "file" and not any(name == _ACCESS_ACL for name, _ in entry.xattrs):
        # an ACL the file inherited from its directory's default, which it did not have
        with contextlib.suppress(OSError):  # none (ENODATA) or none possible: as wanted
            os.removexattr(handle, _ACCESS_ACL)
    _apply_xattrs(handle, entry, result, follow=True)
    with contextlib.suppress(OSError):
        os.chmod(handle, stat.S_IMODE(entry.mode))
        os.utime(handle, ns=(entry.mtime_ns, entry.mtime_ns))


def _make_hard_links(
    dirs: _Dirs,
    linked: list[_Target],
    made: dict[str, tuple[PurePosixPath, tuple[int, int]]],
    overwrite: bool,
    result: RestoreResult,
) -> list[_Target]:
    """Link each to its first link as just restored (`made`), if its name still leads to
    the file restored (its inode), linking that inode through a handle; nothing outside
    the target. Returns the links whose first link this run did not restore whole, or
    whose name leads elsewhere by now: linking to a stranger is never done, they are
    to be written as files."""
    orphans: list[_Target] = []
    for item in linked:
        entry, rel = item.entry, item.rel
        first, inode = made.get(entry.link_to, (None, (0, 0)))
        if first is None:
            orphans.append(item)
            continue
        dirs.hold({item.parent, first.parent})
        dir_fd = _open_dir(dirs, item.parent, result)
        if dir_fd is None:
            continue
        try:
            first_fd = _open_inode(dirs.get(first.parent, create=False), first.name, inode)
        except OSError:
            orphans.append(item)
            continue
        try:
            if overwrite:
                _remove_non_directory(dir_fd, rel.name)
            made_link = _created(entry, result, _link_fd, first_fd, dir_fd, rel.name)
        finally:
            os.close(first_fd)
        if not made_link:
            continue
        result.files += 1
        result.bytes += entry.size
    dirs.hold(set())
    return orphans


def _open_inode(dir_fd: int, name: str, inode: tuple[int, int]) -> int:
    """An O_PATH handle on `name` if it is still the regular file `inode`; OSError if not."""
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) == inode:
        return fd
    os.close(fd)
    raise OSError(errno.ESTALE, "not the file restored", name)


def _make_nodes(dirs: _Dirs, nodes: list[_Target], overwrite: bool, result: RestoreResult) -> None:
    """FIFOs always, device nodes as root only (the kernel allows no one else)."""
    for item in nodes:
        entry, rel = item.entry, item.rel
        if entry.type != "fifo" and os.geteuid() != 0:
            result.warnings.append(f"{entry.path}: device node not restored: needs root")
            continue
        dir_fd = _open_dir(dirs, item.parent, result)
        if dir_fd is None:
            continue
        if overwrite:
            _remove_non_directory(dir_fd, rel.name)
        try:
            os.mknod(rel.name, _NODE_KINDS[entry.type] | 0o600, entry.rdev, dir_fd=dir_fd)
        except FileExistsError:
            result.skipped_existing.append(entry.path)
            continue
        except PermissionError as exc:  # a container without CAP_MKNOD
            result.warnings.append(f"{entry.path}: {entry.type} not restored: {exc.strerror}")
            continue
        except OSError as exc:
            result.errors.append(f"{entry.path}: {exc.strerror}")
            continue
        if not _apply_at(dir_fd, rel.name, entry, result, made=_NODE_KINDS[entry.type]):
            result.errors.append(f"{entry.path}: {_NODE_REPLACED}")
            continue
        result.specials += 1


def _make_symlinks(
    dirs: _Dirs, links: list[_Target], overwrite: bool, result: RestoreResult
) -> None:
    """Create the symbolic links; an existing one is kept unless `overwrite`."""
    for item in links:
        entry, rel = item.entry, item.rel
        dir_fd = _open_dir(dirs, item.parent, result)
        if dir_fd is None:
            continue
        if not _created(entry, result, _symlink, entry.target, dir_fd, rel.name, overwrite):
            continue
        _apply_at(dir_fd, rel.name, entry, result)
        result.symlinks += 1


def _symlink(target: str, dir_fd: int, name: str, overwrite: bool) -> None:
    """A symbolic link; with `overwrite` it replaces a link of that name (nothing else)."""
    if overwrite and _is_link(dir_fd, name):
        os.unlink(name, dir_fd=dir_fd)
    os.symlink(target, name, dir_fd=dir_fd)


def _created(
    entry: TreeEntry, result: RestoreResult, make: Callable[..., object], *args: object
) -> bool:
    """Make one name with `make(*args)`: a name that exists already is skipped (listed
    as such), any other failure is that entry's error; True when made."""
    try:
        make(*args)
    except FileExistsError:
        result.skipped_existing.append(entry.path)
        return False
    except OSError as exc:
        result.errors.append(f"{entry.path}: {exc.strerror}")
        return False
    return True


def _exists(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return False
    return True


def _is_link(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _remove_non_directory(dir_fd: int, name: str) -> None:
    """Make room for an overwrite; a directory in the way is left (creation then fails)."""
    with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
        os.unlink(name, dir_fd=dir_fd)


# what a directory restored over an existing one (or made under a default ACL) must not
# keep unless the snapshot has it: access rules and data; security.* labels stay (an
# SELinux context is the system's), and what this process cannot list it cannot remove
_ACCESS_ACL, _DEFAULT_ACL = "system.posix_acl_access", "system.posix_acl_default"
_ACLS = (_ACCESS_ACL, _DEFAULT_ACL)


def _droppable(snapshot: Snapshot) -> tuple[str, ...]:
    """The attribute names a restored directory loses when the snapshot lacks them: only
    those its backup could see. A snapshot whose lister lacked CAP_SYS_ADMIN never saw
    `trusted.*` (an overlay's opaque mark), one with an incomplete or unknown listing
    says nothing of `user.*` either; the ACLs are dropped in any case (a stranger's
    access must not survive a restore)."""
    lister = snapshot.stats.get("xattrs_listed_as")
    if not isinstance(lister, str):
        return _ACLS
    if "cap_sys_admin=yes" in lister.split():
        return ("user.", "trusted.", *_ACLS)
    return ("user.", *_ACLS)


def _drop_xattrs(
    where: str, entry: TreeEntry, result: RestoreResult, dropped: tuple[str, ...]
) -> None:
    """Remove a directory's extended attributes (of the `dropped` kinds) that the
    snapshot's entry lacks: one restored onto an existing directory kept that
    directory's ACLs (a stranger's write access, inherited by every new file) and
    attributes (the second attack)."""
    try:
        present = os.listxattr(where)
    except OSError:
        return
    wanted = dict(entry.xattrs)
    for name in present:
        if name in wanted:
            # the snapshot's default ACL now, before files inherit the other; its access
            # ACL waits for the end with the mode (it could shut the restore out)
            if name == _DEFAULT_ACL:
                with contextlib.suppress(OSError):
                    if os.getxattr(where, name) != wanted[name]:
                        os.setxattr(where, name, wanted[name])
            continue
        if not name.startswith(dropped):
            continue
        try:
            os.removexattr(where, name)
        except OSError as exc:
            if exc.errno != errno.ENODATA:
                result.warnings.append(
                    f"{entry.path}: extended attribute {name} not removed: {exc.strerror}"
                )


def _apply_xattrs(where: str | int, entry: TreeEntry, result: RestoreResult, follow: bool) -> None:
    """Set the entry's extended attributes; one the target file system or our privileges
    do not allow is a warning: the data is what matters."""
    for name, value in entry.xattrs:
        try:
            os.setxattr(where, name, value, follow_symlinks=follow)
        except OSError as exc:
            result.warnings.append(
                f"{entry.path}: extended attribute {name} not restored: {exc.strerror}"
            )
