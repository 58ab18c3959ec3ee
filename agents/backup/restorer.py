"""Restore a snapshot's files into a target directory, safely.

Whatever the manifest says, nothing is written outside the target: absolute paths
and `..` components are refused, every parent directory is resolved and must lie
inside the target, files are created with O_NOFOLLOW, and symbolic links are made
last so that no link can redirect a later write. Existing files are never
overwritten unless asked. Files are restored in batches in the tree's order (memory
holds one batch's plan, whatever the number of files); within a batch data is fetched
pack by pack (each needed run of a pack is read once however many files it feeds) on
a small pool of workers, each run streamed with one request and its blobs written as
they arrive, while the files are created.

Each file is written under a temporary name in its directory and given its name
only when complete, so no file ever looks whole when it is not. With `overwrite`
the rename replaces whatever has the name (a symbolic link is replaced, never
written through); without it an existing name (a link too) is kept. A restore killed
midway leaves `.opsagent-restore-*` temporaries, never a partial file under its name.

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
was restored whole in the same run (else it is written from its own chunk list, as a
file of its own, or a `.damaged` copy), device nodes only as root (else a
warning), and link()/mknod() never follow a last component. Extended attributes are
set without following links; one the target cannot take is a warning.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import threading
from collections import defaultdict
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
TREE_KEEP = 4 << 20  # a tree up to this size is read from storage once for both passes
DAMAGED_SUFFIX = ".damaged"
_TEMP_PREFIX = ".opsagent-restore-"
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
    path: Path
    entry: TreeEntry


@dataclass
class _Pending:
    """A file being written under a temporary name until its data is all in."""

    item: _Target
    temp: Path
    problem: str = ""
    tried: bool = False  # the temporary was made, or failed to be (`error`)
    made: bool = False
    error: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)  # one thread makes it


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
    wanted = [p.strip("/") for p in include]
    unmatched = [
        p
        for p, w in zip(include, wanted, strict=True)
        if not any(_under(e.path, w) for e in entries)
    ]
    if unmatched:
        raise _unmatched(snapshot, unmatched)
    return [e for e in entries if _included(e.path, wanted)]


def _included(path: str, wanted: list[str]) -> bool:
    """Whether an entry is restored for these includes: the path itself, what is under
    it, and the directories above it (their metadata)."""
    return any(_under(path, w) or _under(w, path) for w in wanted)


def _under(path: str, top: str) -> bool:
    """Whether `path` is `top` or lies under it (`a/bc` is not under `a/b`)."""
    return path == top or path.startswith(top + "/")


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
    the second restores its files in batches of BATCH_FILES (or BATCH_BYTES), so memory
    holds one batch's plan, not one object per file of the snapshot. Directories, links
    and device nodes are kept for the end (their metadata, and links made last)."""
    progress = progress or (lambda b, f: None)
    result = RestoreResult()
    keep = TreeBlobs(TREE_KEEP)
    firsts, tree_dirs = _survey(repo, snapshot, include, keep)
    wanted = [p.strip("/") for p in include] if include else None
    root = _prepare_target(target)
    lost_tree: list[str] = []
    dirs: list[_Target] = []
    for entry in tree_dirs:
        item = _target(root, entry, wanted, result)
        if item is not None:
            _make_dir(root, item, result)
            dirs.append(item)
    del tree_dirs
    links: list[_Target] = []
    nodes: list[_Target] = []
    hard_links: list[_Target] = []
    planned: set[str] = set()  # first links this run writes: their hard links are linked
    made: dict[str, Path] = {}  # those of them written whole
    pending: list[_Pending] = []  # temporaries not yet named, removed after a failure
    damaged: list[_Pending] = []  # named last, once every name they could take is known
    batch: list[_Target] = []
    try:
        with ThreadPoolExecutor(max(1, workers), thread_name_prefix="restore") as pool:

            def write(files: list[_Target]) -> None:
                _write_files(repo, root, files, overwrite, progress, pool, result, pending)
                _name_batch(pending, overwrite, progress, result, made, firsts, damaged)

            batch_bytes = 0
            for entry in repo.read_tree(snapshot, lost_tree, keep):
                if entry.type == "dir":
                    continue  # made first
                item = _target(root, entry, wanted, result)
                if item is None:
                    continue
                if entry.type == "symlink":
                    links.append(item)
                elif entry.type != "file":
                    nodes.append(item)
                elif entry.link_to and entry.link_to in planned:
                    hard_links.append(item)
                else:
                    if not entry.link_to and entry.path in firsts:
                        planned.add(entry.path)
                    batch.append(item)
                    batch_bytes += entry.size
                    if len(batch) >= BATCH_FILES or batch_bytes >= BATCH_BYTES:
                        write(batch)
                        batch, batch_bytes = [], 0
            write(batch)
            # a link whose first link was not restored whole (damaged, kept existing,
            # failed) is written from its own chunk list, as a file of its own
            orphans = _make_hard_links(root, hard_links, made, overwrite, result)
            for start in range(0, len(orphans), BATCH_FILES):
                write(orphans[start : start + BATCH_FILES])
        for part in lost_tree:
            result.damaged.append(
                Damaged(part, "this part of the file list is damaged or missing", "")
            )
        if damaged:
            reserved = _names_taken(repo, snapshot, root, wanted, damaged, keep)
            while damaged:
                job = damaged.pop()
                try:
                    _name(job, overwrite, result, reserved)
                finally:
                    job.temp.unlink(missing_ok=True)
                progress(0, 1)
            pending.clear()
    finally:
        for job in pending:  # after a failure that stopped the restore: no temporary left
            job.temp.unlink(missing_ok=True)
    _make_nodes(root, nodes, overwrite, result)
    _make_symlinks(root, links, overwrite, result)
    for item in sorted(dirs, key=lambda d: -len(d.path.parts)):
        if item.path.is_dir() and not item.path.is_symlink():
            _apply_xattrs(item.path, item.entry, result)
            _apply_metadata(item.path, item.entry, follow=True)
    return result


def _target(
    root: Path, entry: TreeEntry, wanted: list[str] | None, result: RestoreResult
) -> _Target | None:
    """Where an entry the includes take goes under `root`; None when not included, or
    when its path would leave the target (refused, listed)."""
    if wanted is not None and not _included(entry.path, wanted):
        return None
    rel = _safe_relative(entry.path)
    if rel is None:
        result.refused.append(entry.path)
        return None
    return _Target(root / rel, entry)


def _survey(
    repo: Repository, snapshot: Snapshot, include: list[str] | None, keep: TreeBlobs
) -> tuple[set[str], list[TreeEntry]]:
    """The first pass: refuse an include that matches nothing (before anything is
    written); return the paths hard links name as their first link, and the
    directories (made before any file, as the file system's allocator places files
    best when their directories exist first). Only lines that can answer are decoded:
    a directory, a line with `link_to`, and while an include is unmatched, each line's
    path (its first field)."""
    wanted = [p.strip("/") for p in include or ()]
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
    repo: Repository,
    snapshot: Snapshot,
    root: Path,
    wanted: list[str] | None,
    damaged: list[_Pending],
    keep: TreeBlobs,
) -> set[Path]:
    """Every name the snapshot gives in the damaged files' directories, included or not:
    a `.damaged` file never takes a name the snapshot itself has (one more pass, only
    after damage)."""
    parents = {job.item.path.parent for job in damaged}
    taken: set[Path] = set()
    for entry in repo.read_tree(snapshot, [], keep):  # not only the included: a later
        rel = _safe_relative(entry.path)  # restore of the rest must find its names free
        if rel is None:
            continue
        path = root / rel
        if path.parent in parents:
            taken.add(path)
    return taken


def _make_dir(root: Path, item: _Target, result: RestoreResult) -> None:
    """Create one of the snapshot's directories (its metadata is applied last)."""
    if _inside(root, item.path, result):
        try:
            item.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            result.errors.append(f"{item.entry.path}: {exc.strerror}")
            return
        result.dirs += 1


def _make_symlinks(
    root: Path, links: list[_Target], overwrite: bool, result: RestoreResult
) -> None:
    """Create the symbolic links; an existing one is kept unless `overwrite`."""
    for item in links:
        if not _inside(root, item.path.parent, result):
            continue
        try:
            item.path.parent.mkdir(parents=True, exist_ok=True)
            if overwrite and item.path.is_symlink():
                item.path.unlink()
            os.symlink(item.entry.target, item.path)
        except FileExistsError:
            result.skipped_existing.append(item.entry.path)
            continue
        except OSError as exc:
            result.errors.append(f"{item.entry.path}: {exc.strerror}")
            continue
        _apply_xattrs(item.path, item.entry, result)
        _apply_metadata(item.path, item.entry, follow=False)
        result.symlinks += 1


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
    root: Path,
    files: list[_Target],
    overwrite: bool,
    progress: ProgressFn,
    pool: ThreadPoolExecutor,
    result: RestoreResult,
    pending: list[_Pending],
) -> None:
    """Write each file of a batch under a temporary name and fill it; `pending` gets the
    temporaries made (in file order), each with its `problem` when some data could not
    be read. `_name_batch` then gives them their names.

    The reads start at once: the reader that first has data for a file makes its
    temporary, so making thousands of files overlaps the download (restic does the
    same); files no reader made (no readable data) are made here afterwards."""
    wanted: dict[bytes, list[tuple[_Pending, int]]] = defaultdict(list)
    sizes: dict[bytes, int] = {}
    jobs: list[_Pending] = []
    made_before = list(pending)  # earlier batches' damaged files, named last
    # a directory found inside the target stays so while files are written: this loop
    # makes only files (O_EXCL, O_NOFOLLOW), links come last; checked once, not per file
    verified: set[Path] = set()
    for item in files:
        if item.path.parent not in verified:
            if not _inside(root, item.path.parent, result):
                continue
            try:
                item.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                result.errors.append(f"{item.entry.path}: {exc.strerror}")
                continue
            if not _inside(root, item.path.parent, result):
                continue
            verified.add(item.path.parent)
        if not overwrite and os.path.lexists(item.path):
            result.skipped_existing.append(item.entry.path)
            continue
        job = _Pending(item, item.path.with_name(_TEMP_PREFIX + secrets.token_hex(8)))
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
    pending: list[_Pending],
    overwrite: bool,
    progress: ProgressFn,
    result: RestoreResult,
    made: dict[str, Path],
    firsts: set[str],
    damaged: list[_Pending],
) -> None:
    """Name the batch's whole files; a damaged one stays pending for the end, when the
    names it must not take are known. `made` gets the first links of hard links
    restored whole. Afterwards `pending` holds the damaged files only."""
    held = {id(job) for job in damaged}
    batch = [job for job in pending if id(job) not in held]
    damaged += [job for job in batch if job.problem]
    for job in reversed(batch):
        if job.problem:
            continue
        try:
            if _name(job, overwrite, result, set()) and job.item.entry.path in firsts:
                made[job.item.entry.path] = job.item.path
        finally:
            job.temp.unlink(missing_ok=True)
        progress(0, 1)
    pending[:] = damaged


def _create(job: _Pending, pending: list[_Pending]) -> bool:
    """Make the job's temporary at its full size (never through a link, never over a
    file), once, whichever thread asks first; True when it exists."""
    with job.lock:
        if job.tried:
            return job.made
        job.tried = True
        try:
            fd = os.open(job.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            job.error = str(exc.strerror)
            return False
        pending.append(job)
        job.made = True
        try:
            os.ftruncate(fd, job.item.entry.size)
        finally:
            os.close(fd)
        return True


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


def _name(job: _Pending, overwrite: bool, result: RestoreResult, reserved: set[Path]) -> bool:
    """Give a filled temporary its name: the entry's name when whole (True), `.damaged`
    if not."""
    entry, path = job.item.entry, job.item.path
    if job.problem:
        written = _link_unused(job.temp, path.name + DAMAGED_SUFFIX, reserved)
        result.damaged.append(Damaged(entry.path, job.problem, str(written or "")))
        return False
    _apply_xattrs(job.temp, entry, result)
    _apply_metadata(job.temp, entry, follow=True)
    try:
        if overwrite:
            os.replace(job.temp, path)  # replaces a link itself, never writes through it
        else:
            _link_new(job.temp, path)
    except FileExistsError:
        result.skipped_existing.append(entry.path)
        return False
    except OSError as exc:
        result.errors.append(f"{entry.path}: {exc.strerror}")
        return False
    result.files += 1
    result.bytes += entry.size
    return True


def _link_unused(temp: Path, name: str, reserved: set[Path]) -> Path | None:
    """Name the temporary `name`, or `name.1`, `name.2`...: the first that is free and
    that no entry of the snapshot itself will take."""
    for n in range(100):
        candidate = temp.with_name(name if n == 0 else f"{name}.{n}")
        if candidate in reserved:
            continue
        try:
            _link_new(temp, candidate)
        except FileExistsError:
            continue
        except OSError:
            return None
        return candidate
    return None


def _link_new(temp: Path, path: Path) -> None:
    """Give `temp` the name `path` only if nothing has it (FileExistsError otherwise):
    a hard link is atomic; on file systems without them, check then rename."""
    try:
        os.link(temp, path, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "File exists", str(path)) from None
        os.rename(temp, path)
        return
    os.unlink(temp)


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
                _write_at(job.temp, plain, offset)
                progress(len(plain), 0)

    try:
        for block in repo.storage.stream(pack_key(pack_id), first, end - first):
            for blob_id, _, sealed in cutter.feed(block):
                deliver(blob_id, sealed)
        for blob_id, _, sealed in cutter.finish():  # the pack ends early: these fail
            deliver(blob_id, sealed)
    except NotFound:
        failed.update((b, f"pack {pack_id[:12]} is missing") for _, b in run if b not in done)


def _write_at(path: Path, data: bytes, offset: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
        try:
            os.pwrite(fd, data, offset)
        finally:
            os.close(fd)
    except OSError as exc:  # a full disk or a failing one: nothing more can be written
        raise BackupError(f"cannot write {path.parent}: {exc.strerror}") from None


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


def _make_hard_links(
    root: Path,
    linked: list[_Target],
    made: dict[str, Path],
    overwrite: bool,
    result: RestoreResult,
) -> list[_Target]:
    """Link each to its first link as just restored (`made`); nothing outside the target.
    Returns the links whose first link this run did not restore whole: linking to what
    has that name could join a stranger, so they are to be written as files."""
    orphans: list[_Target] = []
    for item in linked:
        entry = item.entry
        first = made.get(entry.link_to)
        if first is None:
            orphans.append(item)
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
    return orphans


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
