"""A local copy of an S3 repository's index files, snapshots and tree blobs.

Each nightly backup reads every index file, every snapshot and its parent's tree: on
S3 a GET each, a number that grows with the repository's history. They never change
once written (index files and snapshots are named by the SHA-256 of their sealed
bytes, tree blobs by their keyed ID), so a copy kept under
`STATE_DIR/cache/repo-<repository id>/` saves those reads, as restic's cache does.

What a copy may be trusted for:
- an index file or snapshot is used only if its bytes still hash to its name, so a
  torn or altered copy is read from storage again; it is then opened with the key as
  any object is;
- a tree blob is used only if the index knows it, at the length the index gives,
  and it is opened and ID-checked like one read from a pack (the repository does
  that); a copy that fails is dropped and read from storage;
- a copy is read only if it is a regular file of the size storage lists (never a
  link, a FIFO or a directory, never more than that into memory);
- the listings are always taken from storage: a copy of an object no longer listed
  (a forget or prune by another host) is never used, and is removed.

What a copy hides: damage to the stored object it copies. `backup check` and the
restore test therefore never use the cache; they read what storage holds, as a fresh
host would.

Below the state directory nothing is followed: each directory is opened from its
parent with O_NOFOLLOW and made 0700 when missing, so a link planted in the state
directory cannot lead a copy out of it.

Nothing here fails a command: a cache that cannot be read or written (a full disk, a
directory the service user cannot write) is given up for the run with one warning; a
copy that cannot be read or replaced is a miss, and is removed when it can be.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import shutil
import stat
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger("opsagent.backup")

Kind = Literal["index", "snapshots", "trees"]
KINDS: tuple[Kind, ...] = ("index", "snapshots", "trees")
_NAME = re.compile(r"[0-9a-f]{32,128}")
_REPOSITORY_ID = re.compile(r"[0-9a-f]{16,64}")
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO never blocks
_WRITE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# the cache as a whole is given up on these; any other failure is one copy's
_LASTING = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO)


class ObjectCache:
    """Immutable repository objects kept as files, one directory per kind, under
    `state_dir/cache/repo-<id>`."""

    def __init__(self, state_dir: Path, parts: tuple[str, ...]) -> None:
        self.state_dir = Path(state_dir)
        self.parts = parts
        self.root = self.state_dir.joinpath(*parts)
        self._usable = True

    @classmethod
    def for_repository(cls, state_dir: Path, info: dict[str, Any]) -> ObjectCache | None:
        """The cache of the repository whose config is `info`, or None when its ID is not
        plain hex (the config object comes from storage: never a path part unchecked)."""
        repository_id = info.get("id")
        if not isinstance(repository_id, str) or not _REPOSITORY_ID.fullmatch(repository_id):
            return None
        return cls(Path(state_dir), ("cache", f"repo-{repository_id}"))

    def get(
        self, kind: Kind, name: str, hashed: bool = True, size: int | None = None
    ) -> bytes | None:
        """The copy of an object, or None. `hashed`: the name is the SHA-256 of the bytes,
        checked here; else the caller checks them. `size`: what storage lists (a copy of
        another size is no copy). A copy that fails is removed."""
        if not self._usable or not _NAME.fullmatch(name):
            return None
        with self._directory(kind, create=False) as dir_fd:
            if dir_fd is None:
                return None
            try:
                fd = os.open(name, _READ, dir_fd=dir_fd)
            except FileNotFoundError:
                return None
            except OSError as exc:  # a link, a directory's permissions, a full table...
                self._miss(dir_fd, kind, name, exc)
                return None
            try:
                data = _read_regular(fd, size)
            except OSError as exc:
                self._miss(dir_fd, kind, name, exc)
                return None
            finally:
                os.close(fd)
            if data is None or (hashed and hashlib.sha256(data).hexdigest() != name):
                log.info("cached %s %s is no copy of it; read from storage", kind, name[:8])
                _remove(dir_fd, name)
                return None
            return data

    def put(self, kind: Kind, name: str, data: bytes, hashed: bool = True) -> None:
        """Keep a copy: written under a temporary name and renamed, so a reader sees the
        whole file or none (a copy torn by a power cut fails its check and is reread).
        `hashed` as for `get`: an object that does not hash to its name (damaged in
        storage) is not kept."""
        if not self._usable or not _NAME.fullmatch(name):
            return
        if hashed and hashlib.sha256(data).hexdigest() != name:
            return
        temporary = f".{name}.{os.getpid()}-{threading.get_native_id()}.tmp"
        with self._directory(kind, create=True) as dir_fd:
            if dir_fd is None:
                return
            try:
                fd = os.open(temporary, _WRITE, 0o600, dir_fd=dir_fd)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                try:
                    os.replace(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                except IsADirectoryError:  # a directory where the copy goes: cleared
                    _remove(dir_fd, name)
                    os.replace(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except OSError as exc:
                _remove(dir_fd, temporary)
                self._miss(dir_fd, kind, name, exc, remove=False)

    def drop(self, kind: Kind, name: str) -> None:
        """Remove one copy (it failed its check)."""
        if not _NAME.fullmatch(name):
            return
        with self._directory(kind, create=False) as dir_fd:
            if dir_fd is not None:
                _remove(dir_fd, name)

    def keep_only(self, kind: Kind, names: Iterable[str]) -> None:
        """Remove the copies of objects storage no longer lists, and temporaries left by
        a killed run, so the cache follows the repository's forgets and prunes. Names
        that are neither are someone else's: left alone."""
        if not self._usable:
            return
        wanted = set(names)
        with self._directory(kind, create=False) as dir_fd:
            if dir_fd is None:
                return
            try:
                present = os.listdir(dir_fd)
            except OSError as exc:
                self._give_up(exc, kind)
                return
            for name in present:
                if name in wanted:
                    continue
                if name.startswith(".") and name.endswith(".tmp"):
                    if not _is_ours_running(name):
                        _remove(dir_fd, name)
                elif _NAME.fullmatch(name):
                    _remove(dir_fd, name)

    def names(self, kind: Kind) -> set[str]:
        """The objects of a kind held (for tests and reports)."""
        with self._directory(kind, create=False) as dir_fd:
            if dir_fd is None:
                return set()
            try:
                return {n for n in os.listdir(dir_fd) if _NAME.fullmatch(n)}
            except OSError:
                return set()

    @contextlib.contextmanager
    def _directory(self, kind: Kind, create: bool) -> Iterator[int | None]:
        """A handle on the kind's directory, each part below the state directory opened
        from its parent without following a link (made 0700 when missing and `create`);
        None when it is missing, or when the cache has been given up."""
        opened: list[int] = []
        try:
            fd = self._walk(kind, create, opened) if self._usable else None
        except OSError as exc:
            self._give_up(exc, kind)
            fd = None
        try:
            yield fd
        finally:
            for handle in opened:
                os.close(handle)

    def _walk(self, kind: Kind, create: bool, opened: list[int]) -> int | None:
        try:
            fd = os.open(self.state_dir, _DIRECTORY & ~os.O_NOFOLLOW)  # it may be a link
        except FileNotFoundError:  # no state directory: nothing to keep, nothing to say
            self._usable = False
            return None
        opened.append(fd)
        for part in (*self.parts, kind):
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o700, dir_fd=fd)
            try:
                fd = os.open(part, _DIRECTORY, dir_fd=fd)
            except FileNotFoundError:
                if create:
                    raise
                return None
            opened.append(fd)
        return fd

    def _miss(self, dir_fd: int, kind: Kind, name: str, exc: OSError, remove: bool = True) -> None:
        """One copy that cannot be read or written: removed where it can be, unless the
        failure is the whole cache's (a full or read-only disk)."""
        if exc.errno in _LASTING:
            self._give_up(exc, f"{kind}/{name}")
            return
        log.info("cached %s %s not usable (%s); read from storage", kind, name[:8], exc.strerror)
        if remove:
            _remove(dir_fd, name)

    def _give_up(self, exc: OSError, what: str) -> None:
        if self._usable:
            where = exc.filename if isinstance(exc.filename, str) else what
            log.warning(
                "local cache %s not used for this run: %s: %s",
                self.root,
                where,
                exc.strerror or exc,
            )
        self._usable = False


def _read_regular(fd: int, size: int | None) -> bytes | None:
    """The whole file if it is a regular file of `size` bytes (any size if None), else
    None; never more than that is read."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or (size is not None and st.st_size != size):
        return None
    want = st.st_size
    with os.fdopen(os.dup(fd), "rb") as handle:
        data = handle.read(want)
        if len(data) != want or handle.read(1):
            return None
    return data


def _remove(dir_fd: int, name: str) -> None:
    """Remove a name in the cache, whatever it is (a directory with its contents; a
    link itself, never what it leads to)."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except IsADirectoryError:
        with contextlib.suppress(OSError):
            shutil.rmtree(name, dir_fd=dir_fd)
    except OSError:
        pass


def _is_ours_running(temporary: str) -> bool:
    """A temporary written by a process that still runs (another agent on this state
    directory, mid-write) is left alone; one whose process is gone is removed."""
    pid = temporary.rsplit(".", 2)[-2].partition("-")[0]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
