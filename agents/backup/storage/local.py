"""Local directory backend: the embedded default. Writes are atomic (temp file, fsync, rename)."""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from agents.backup.errors import NotFound, StorageError
from agents.backup.storage.base import STREAM_BLOCK, ObjectInfo, ObjectKind


class LocalStorage:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise StorageError(f"invalid object key {key!r}")
        return self.root / key

    def put(self, key: str, data: bytes, kind: ObjectKind = ObjectKind.META) -> None:
        path = self._path(key)
        tmp = path.parent / f".tmp-{secrets.token_hex(8)}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _store(tmp, path, lambda out: out.write(data))
            _fsync_dir(path.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"{self.url}: cannot write {key}: {exc.strerror or exc}") from None

    def spool(self) -> BinaryIO:
        """An unnamed file on the repository's file system for a pack being written
        (O_TMPFILE where the file system has it): `put_file` links it into place without
        a copy, and a crash leaves nothing behind. Memory then holds no pack."""
        directory = self.root / "data"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            try:  # not tempfile's: it adds O_EXCL, which makes the file unlinkable
                fd = os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                    raise
                return tempfile.TemporaryFile(dir=directory, prefix=".tmp-")  # copied
            return os.fdopen(fd, "w+b", buffering=1 << 20)
        except OSError as exc:
            raise StorageError(
                f"{self.url}: cannot write in data/: {exc.strerror or exc}"
            ) from None

    def put_file(self, key: str, handle: BinaryIO, kind: ObjectKind = ObjectKind.DATA) -> None:
        """Store a file from `spool` whole and durably: fsync, then link it in under its
        key at once (no named temporary a kill could leave); when the key exists, or
        the file cannot be linked (copied then), through a temporary and a rename."""
        path = self._path(key)
        tmp = path.parent / f".tmp-{secrets.token_hex(8)}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle.flush()
            os.fchmod(handle.fileno(), 0o600)
            os.fsync(handle.fileno())
            try:
                _link_open_file(handle.fileno(), path)
            except FileExistsError:  # stored before: replaced whole, as `put` does
                _link_open_file(handle.fileno(), tmp)
                os.replace(tmp, path)
            except OSError:  # a named temporary already unlinked, or no /proc: copy it
                handle.seek(0)
                _store(tmp, path, lambda out: shutil.copyfileobj(handle, out, 1 << 20))
            _fsync_dir(path.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"{self.url}: cannot write {key}: {exc.strerror or exc}") from None

    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        try:
            with open(self._path(key), "rb") as handle:
                handle.seek(start)
                return handle.read() if length is None else handle.read(length)
        except FileNotFoundError:
            raise NotFound(f"{self.url}: {key} does not exist") from None
        except OSError as exc:
            raise StorageError(f"{self.url}: cannot read {key}: {exc.strerror or exc}") from None

    def stream(self, key: str, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        try:
            handle = open(self._path(key), "rb")  # noqa: SIM115 (closed below, a generator)
        except FileNotFoundError:
            raise NotFound(f"{self.url}: {key} does not exist") from None
        except OSError as exc:
            raise StorageError(f"{self.url}: cannot read {key}: {exc.strerror or exc}") from None
        with handle:
            handle.seek(start)
            left = -1 if length is None else length  # -1: to the end
            while left:
                try:
                    data = handle.read(STREAM_BLOCK if left < 0 else min(STREAM_BLOCK, left))
                except OSError as exc:
                    raise StorageError(
                        f"{self.url}: cannot read {key}: {exc.strerror or exc}"
                    ) from None
                if not data:
                    return  # the end (shorter than asked: fewer bytes, as with `get`)
                if left > 0:
                    left -= len(data)
                yield data

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        directory = prefix.rpartition("/")[0]
        base = self.root / directory if directory else self.root
        if not base.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for name in sorted(filenames):
                if name.startswith(".tmp-"):
                    continue
                full = Path(dirpath) / name
                key = full.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    try:
                        st = full.stat()
                    except FileNotFoundError:
                        continue
                    yield ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def delete(self, keys: list[str], verify: bool = True) -> None:
        for key in keys:
            path = self._path(key)
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                raise StorageError(f"{self.url}: cannot delete {key}: {exc.strerror}") from None
            if path.exists():
                raise StorageError(f"{self.url}: {key} still exists after delete")

    def stat(self, key: str) -> ObjectInfo:
        try:
            return ObjectInfo(key, self._path(key).stat().st_size)
        except FileNotFoundError:
            raise NotFound(f"{self.url}: {key} does not exist") from None

    def retention(self, key: str) -> datetime | None:
        """Never locked: a directory has no object lock."""
        return None

    def delete_versions(self, keys: list[str]) -> None:
        """Nothing to do: a directory keeps no old versions."""

    def leftovers(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.relative_to(self.root).as_posix() for p in self.root.rglob(".tmp-*") if p.is_file()
        )


def _store(tmp: Path, path: Path, fill: Callable[[BinaryIO], object]) -> None:
    """Write `tmp` with `fill`, fsync it, make it 0600 and rename it over `path`."""
    with open(tmp, "wb") as out:
        fill(out)
        out.flush()
        os.fsync(out.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _link_open_file(fd: int, path: Path) -> None:
    """Give an open (unnamed) file the name `path`: linkat of its /proc/self/fd link,
    followed (os.link without a directory handle would call link(2), which links the
    /proc link itself and fails)."""
    directory = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.link(f"/proc/self/fd/{fd}", path.name, dst_dir_fd=directory)
    finally:
        os.close(directory)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
