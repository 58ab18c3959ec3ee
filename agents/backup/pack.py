"""Pack objects: many encrypted blobs in one object, so S3 sees few, large PUTs.

Layout: `blob blob ... blob header header_length(4, little endian)`. Each blob is
sealed on its own (nonce, ciphertext, tag; its ID as associated data); the header,
sealed too, lists every blob (type, ID, offset, length) so an index can be rebuilt
from packs alone. A pack's name is the SHA-256 of its bytes, so any reader can
verify a whole pack without the key.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import BinaryIO

from agents.backup.crypto import OVERHEAD, Crypto
from agents.backup.errors import IntegrityError

_ENTRY = struct.Struct("<B32sII")
_HEADER_ASSOCIATED = b"opsagent-pack-header"


class BlobType(IntEnum):
    DATA = 0
    TREE = 1


@dataclass(frozen=True)
class PackEntry:
    type: BlobType
    id: bytes
    offset: int
    length: int


@dataclass(frozen=True)
class FinishedPack:
    id: str  # "" from a builder that leaves the hashing to the uploader (`named`)
    data: bytes | bytearray  # the builder's own buffer: a 16 MiB pack is not copied
    entries: list[PackEntry]
    file: BinaryIO | None = None  # or the spool file holding the pack (`data` is empty)
    size: int = 0

    def named(self) -> FinishedPack:
        """This pack with its ID, the SHA-256 of its bytes, hashed now if the builder
        left it to the uploading thread: hashing 16 MiB a pack on the thread that fills
        them cost a small-file backup's busy core 3 % (a spool file is read back from
        the page cache)."""
        if self.id:
            return self
        if self.file is None:
            return replace(self, id=hashlib.sha256(self.data).hexdigest())
        digest = hashlib.sha256()
        self.file.seek(0)
        block = bytearray(1 << 20)  # one buffer read into again: no fresh pages a MiB
        view = memoryview(block)
        while got := self.file.readinto(block):
            digest.update(view[:got])
        return replace(self, id=digest.hexdigest())


def header_size(blobs: int) -> int:
    """Bytes a pack of `blobs` blobs spends on its sealed header and its length."""
    return blobs * _ENTRY.size + OVERHEAD + 4


def pack_key(pack_id: str) -> str:
    return f"data/{pack_id[:2]}/{pack_id}"


class PackBuilder:
    """Accumulates sealed blobs until the pack is full, in one buffer: each sealed blob
    is freed once copied in, and the finished pack is that buffer (cut to its length),
    so a pack is never copied whole. The buffer grows as blobs come, unless a
    `capacity` has it made at that size first. BlobWriter lets it grow: a buffer made
    at a pack's size (20 MiB) is zero-filled, so touched whole at once, and an
    incremental S3 backup's few MiB of new data held all of it (S3 backups, alternating:
    108-109 MiB against 110-123 incremental, 156-166 against 178 first). Past the
    allocator's mmap threshold, growing is a remap, not a copy.

    With a `spool` (a storage's, see `LocalStorage.spool`: it makes a file) the blobs are
    written to a file instead and hashed as they go: memory holds no pack at all, and
    the storage links the file into place without a copy."""

    def __init__(
        self,
        capacity: int = 0,
        spool: Callable[[], BinaryIO] | None = None,
        hashed: bool = True,
    ) -> None:
        self._capacity = capacity
        self._hashed = hashed  # else `finish` leaves the ID to `FinishedPack.named`
        self._data = bytearray()  # allocated by the first blob: most packs never start
        self._entries: list[PackEntry] = []
        self._make_spool = spool  # called at the first blob, likewise
        self._spool: BinaryIO | None = None
        self._hash = hashlib.sha256()
        self.size = 0

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, blob_type: BlobType, blob_id: bytes, sealed: bytes) -> None:
        self._entries.append(PackEntry(blob_type, blob_id, self.size, len(sealed)))
        self._append(sealed)

    def add_many(
        self, blobs: Iterable[tuple[BlobType, bytes]], sealed: Sequence[bytes | bytearray]
    ) -> None:
        """Several blobs at once: one copy (or write) and one hash update for all, where
        a pack of small files' blobs cost one of each per blob."""
        offset = self.size
        for (blob_type, blob_id), data in zip(blobs, sealed, strict=True):
            self._entries.append(PackEntry(blob_type, blob_id, offset, len(data)))
            offset += len(data)
        self._append(sealed[0] if len(sealed) == 1 else b"".join(sealed))

    def _append(self, sealed: bytes | bytearray) -> None:
        end = self.size + len(sealed)
        if self._make_spool is not None:
            if self._spool is None:
                self._spool = self._make_spool()
            self._spool.write(sealed)
            if self._hashed:
                self._hash.update(sealed)
        else:
            if not self._data:
                self._data = bytearray(self._capacity)
            if end <= len(self._data):
                self._data[self.size : end] = sealed
            else:
                del self._data[self.size :]
                self._data += sealed
        self.size = end

    def finish(self, crypto: Crypto) -> FinishedPack:
        header = b"".join(_ENTRY.pack(e.type, e.id, e.offset, e.length) for e in self._entries)
        sealed_header = crypto.seal(header, _HEADER_ASSOCIATED)
        tail = sealed_header + struct.pack("<I", len(sealed_header))
        if self._spool is not None:
            spool, self._spool = self._spool, None
            spool.write(tail)
            size = self.size + len(tail)
            digest = ""
            if self._hashed:
                self._hash.update(tail)
                digest = self._hash.hexdigest()
            return FinishedPack(digest, b"", list(self._entries), spool, size)
        data, self._data = self._data, bytearray()
        del data[self.size :]
        data += tail
        digest = hashlib.sha256(data).hexdigest() if self._hashed else ""
        return FinishedPack(digest, data, list(self._entries))


def header_length(tail: bytes, pack_id: str) -> int:
    """The sealed header's length, from the last four bytes of a pack."""
    if len(tail) < 4:
        raise IntegrityError(f"pack {pack_id[:12]} is truncated")
    (length,) = struct.unpack("<I", tail[-4:])
    return int(length)


def read_header(
    crypto: Crypto, tail: bytes, pack_id: str, size: int | None = None
) -> list[PackEntry]:
    """Parse and authenticate a pack's header from the pack's last bytes (or the whole
    pack); `size` is the whole pack's size when `tail` is only its end."""
    size = len(tail) if size is None else size
    length = header_length(tail, pack_id)
    if length > len(tail) - 4 or length > size - 4:
        raise IntegrityError(f"pack {pack_id[:12]} has an impossible header length")
    header = crypto.open(tail[-4 - length : -4], _HEADER_ASSOCIATED, f"pack {pack_id[:12]} header")
    if len(header) % _ENTRY.size:
        raise IntegrityError(f"pack {pack_id[:12]} header is malformed")
    entries = []
    limit = size - 4 - length
    for offset in range(0, len(header), _ENTRY.size):
        kind, blob_id, blob_offset, blob_length = _ENTRY.unpack_from(header, offset)
        if blob_offset + blob_length > limit or kind not in (0, 1):
            raise IntegrityError(f"pack {pack_id[:12]} header points outside the pack")
        entries.append(PackEntry(BlobType(kind), blob_id, blob_offset, blob_length))
    return entries


def verify_pack_hash(pack: bytes, pack_id: str) -> None:
    if hashlib.sha256(pack).hexdigest() != pack_id:
        raise IntegrityError(f"pack {pack_id[:12]} does not match its hash (corrupted)")
