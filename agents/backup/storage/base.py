"""The storage protocol and its small records, apart from `open_storage` so that the
backends can import them without importing the package that imports the backends."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from agents.config import S3Config

STREAM_BLOCK = 1 << 20  # bytes a `Storage.stream` block holds at most


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


@dataclass(frozen=True)
class S3Endpoint:
    """Where a client connects and as whom: what decides which objects a read sees.

    `identity` is what an early unlock (`backup.unlock`) is matched by; the secret is
    in it only as a digest and never in the repr."""

    endpoint_url: str | None
    region: str
    path_style: bool
    access_key_id: str | None
    secret_access_key: str | None = field(repr=False)

    @classmethod
    def of(cls, config: S3Config) -> S3Endpoint:
        """The endpoint an S3 config names, its credentials resolved (`${ENV}` or file)."""
        from agents.config import resolve_secret

        return cls(
            config.endpoint_url,
            config.region,
            config.path_style,
            resolve_secret(config.access_key_id, config.access_key_id_file),
            resolve_secret(config.secret_access_key, config.secret_access_key_file),
        )

    def identity(self) -> tuple[Any, ...]:
        """Endpoint, region, addressing, key ID and a digest of the secret."""
        digest = hashlib.sha256((self.secret_access_key or "").encode()).hexdigest()
        return (self.endpoint_url, self.region, self.path_style, self.access_key_id, digest)


class Storage(Protocol):
    """Where repository objects live. Keys are `/`-separated relative names."""

    url: str

    def put(self, key: str, data: bytes, kind: ObjectKind = ObjectKind.META) -> None:
        """Store an object whole and durably; replaces nothing silently (keys are unique)."""
        ...

    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        """Read an object or a byte range of it; raises NotFound."""
        ...

    def stream(self, key: str, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        """A byte range of an object (to its end when length is None) in blocks of at most
        STREAM_BLOCK bytes, in order, read with one request: a whole pack costs one GET,
        yet memory holds one block. Raises NotFound; a range past the end gives what
        exists or fails, as `get` does."""
        ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with prefix (all pages)."""
        ...

    def delete(self, keys: list[str], verify: bool = True) -> None:
        """Remove objects (missing ones are fine) and verify they are gone (one more
        request each on S3; `verify=False` where one left behind is harmless: a lock,
        stale once its process is gone)."""
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

    # Optional, for a backend that can write a pack from a file without a copy (a local
    # directory): `spool() -> BinaryIO` gives an unnamed file the pack is written to, and
    # `put_file(key, handle, kind)` stores it whole and durably. The writer uses them
    # when present (`getattr`), and a pack buffer in memory with `put` otherwise.

    def leftovers(self) -> list[str]:
        """Incomplete uploads a failed run left behind (multipart uploads on S3)."""
        ...
