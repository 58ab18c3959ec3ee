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
- a tree blob is opened and ID-checked like one read from a pack (the repository
  does that), and a copy that fails is dropped and read from storage;
- the listings are always taken from storage: a copy of an object no longer listed
  (a forget or prune by another host) is never used, and is removed.

What a copy hides: damage to the stored object it copies. `backup check` and the
restore test therefore never use the cache; they read what storage holds, as a fresh
host would.

Nothing here fails a command: a cache that cannot be read or written (a full disk, a
directory the service user cannot write) is given up for the run with one warning.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger("opsagent.backup")

Kind = Literal["index", "snapshots", "trees"]
KINDS: tuple[Kind, ...] = ("index", "snapshots", "trees")
_NAME = re.compile(r"[0-9a-f]{32,128}")
_REPOSITORY_ID = re.compile(r"[0-9a-f]{16,64}")


class ObjectCache:
    """Immutable repository objects kept as files, one directory per kind."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._usable = True
        self._made: set[str] = set()

    @classmethod
    def for_repository(cls, state_dir: Path, info: dict[str, Any]) -> ObjectCache | None:
        """The cache of the repository whose config is `info`, or None when its ID is not
        plain hex (the config object comes from storage: never a path part unchecked)."""
        repository_id = info.get("id")
        if not isinstance(repository_id, str) or not _REPOSITORY_ID.fullmatch(repository_id):
            return None
        return cls(Path(state_dir) / "cache" / f"repo-{repository_id}")

    def get(self, kind: Kind, name: str, hashed: bool = True) -> bytes | None:
        """The copy of an object, or None. `hashed`: the name is the SHA-256 of the bytes,
        checked here (a copy that fails is removed); else the caller checks it."""
        if not self._usable or not _NAME.fullmatch(name):
            return None
        try:
            fd = os.open(self.root / kind / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # a link where a copy was: no copy, and gone
                self.drop(kind, name)
            else:
                self._give_up(exc)
            return None
        try:
            with os.fdopen(fd, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            self._give_up(exc)
            return None
        if hashed and hashlib.sha256(data).hexdigest() != name:
            log.info("cached %s %s does not match its name; read from storage", kind, name[:8])
            self.drop(kind, name)
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
        directory = self.root / kind
        temporary = directory / f".{name}.{os.getpid()}-{threading.get_native_id()}.tmp"
        try:
            if kind not in self._made:
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._made.add(kind)
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(temporary, flags, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(temporary, directory / name)
        except OSError as exc:
            _unlink(temporary)
            self._give_up(exc)

    def drop(self, kind: Kind, name: str) -> None:
        """Remove one copy (it failed its check)."""
        if _NAME.fullmatch(name):
            _unlink(self.root / kind / name)

    def keep_only(self, kind: Kind, names: Iterable[str]) -> None:
        """Remove the copies of objects storage no longer lists, and temporaries left by
        a killed run, so the cache follows the repository's forgets and prunes."""
        if not self._usable:
            return
        wanted = set(names)
        try:
            present = os.listdir(self.root / kind)
        except FileNotFoundError:
            return
        except OSError as exc:
            self._give_up(exc)
            return
        for name in present:
            if name in wanted:
                continue
            if name.startswith(".") and name.endswith(".tmp"):
                if not _is_ours_running(name):
                    _unlink(self.root / kind / name)
            elif _NAME.fullmatch(name):
                _unlink(self.root / kind / name)

    def names(self, kind: Kind) -> set[str]:
        """The objects of a kind held (for tests and `cache` reports)."""
        try:
            return {n for n in os.listdir(self.root / kind) if _NAME.fullmatch(n)}
        except OSError:
            return set()

    def _give_up(self, exc: OSError) -> None:
        if self._usable:
            log.warning("local cache %s not used for this run: %s", self.root, exc)
        self._usable = False


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


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
