"""Storage backends: one small interface (put, get a range, list by prefix, delete, stat).

The repository knows nothing of S3 or directories; a backend knows nothing of packs
or snapshots. Both backends pass the same test suite (tests/integration/test_storage.py).
The repository URL picks the backend: `/path` or `file:///path` (local), `s3://bucket/prefix`;
S3 comes wrapped in `RetryingStorage` (storage/retry.py), which retries its transient failures.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from agents.config import S3Config


class ObjectKind(StrEnum):
    """What an object is: packs may go to a colder storage class, metadata never."""

    DATA = "data"
    META = "meta"


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    # when the storage last wrote it, by the storage's clock (None if unknown): lock
    # staleness is judged by it, so a host whose clock is wrong cannot fake an old lock
    modified: datetime | None = None


class Storage(Protocol):
    """Where repository objects live. Keys are `/`-separated relative names."""

    url: str

    def put(self, key: str, data: bytes, kind: ObjectKind = ObjectKind.META) -> None:
        """Store an object whole and durably; replaces nothing silently (keys are unique)."""
        ...

    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        """Read an object or a byte range of it; raises NotFound."""
        ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with prefix (all pages)."""
        ...

    def delete(self, keys: list[str]) -> None:
        """Remove objects (missing ones are fine) and verify they are gone."""
        ...

    def stat(self, key: str) -> ObjectInfo:
        """Size of one object; raises NotFound."""
        ...

    def retention(self, key: str) -> datetime | None:
        """Until when the object is locked against deletion (S3 Object Lock), None if not."""
        ...

    def delete_versions(self, keys: list[str]) -> None:
        """Remove every stored version of the keys (a versioned bucket keeps old ones)."""
        ...

    def leftovers(self) -> list[str]:
        """Incomplete uploads a failed run left behind (multipart uploads on S3)."""
        ...


def open_storage(url: str, s3: S3Config | None = None) -> Storage:
    """The backend for a repository URL; S3 with its requests retried (`max_attempts`).

    The local backend is not wrapped: none of its failures is transient."""
    if url.startswith("s3://"):
        from agents.backup.storage.retry import RetryingStorage
        from agents.backup.storage.s3 import S3Storage

        bucket, _, prefix = url[5:].partition("/")
        config = s3 or S3Config()
        return RetryingStorage(S3Storage(bucket, prefix.strip("/"), config), config.max_attempts)
    from agents.backup.storage.local import LocalStorage

    path = url[7:] if url.startswith("file://") else url
    return LocalStorage(path)
