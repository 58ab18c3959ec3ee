"""The index: which pack holds each blob, at which offset and length.

Index files are written after their packs and before any snapshot that needs them,
encrypted, in a compact binary form (41 bytes a blob). Reading a repository merges
every index file; an index file may name older ones it supersedes (prune writes
one index to replace many), which are then ignored and later deleted.
"""

from __future__ import annotations

import json
import struct
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import zstandard

from agents.backup.crypto import Crypto
from agents.backup.errors import IntegrityError
from agents.backup.pack import BlobType, PackEntry

_MAGIC = b"OAIX1\n"
_ASSOCIATED = b"opsagent-index"
_ENTRY = struct.Struct("<32sIIIB")
_MAX_INDEX_BYTES = 1 << 31
_TYPES = {int(t): t for t in BlobType}  # a dict lookup, not an enum call, per entry


@dataclass(frozen=True)
class Location:
    pack: str
    offset: int
    length: int
    type: BlobType


class Index:
    """In-memory merge of every index file; thread-safe for lookups and additions."""

    def __init__(self) -> None:
        self._blobs: dict[bytes, Location] = {}
        self._lock = threading.Lock()

    def __contains__(self, blob_id: bytes) -> bool:
        return blob_id in self._blobs

    def __len__(self) -> int:
        return len(self._blobs)

    def get(self, blob_id: bytes) -> Location | None:
        return self._blobs.get(blob_id)

    def add_pack(self, pack_id: str, entries: Iterable[PackEntry]) -> None:
        with self._lock:
            for e in entries:
                self._blobs.setdefault(e.id, Location(pack_id, e.offset, e.length, e.type))

    def discard(self, blob_id: bytes) -> None:
        """Forget a blob found damaged, so this process stores it again rather than
        referencing the damaged copy."""
        with self._lock:
            self._blobs.pop(blob_id, None)

    def items(self) -> Iterator[tuple[bytes, Location]]:
        return iter(list(self._blobs.items()))

    def packs(self) -> set[str]:
        return {loc.pack for loc in self._blobs.values()}


def encode_index(
    crypto: Crypto, packs: dict[str, list[PackEntry]], supersedes: list[str] = ()
) -> bytes:
    """Serialise pack entries (and superseded index names) into a sealed index file."""
    pack_ids = list(packs)
    header = json.dumps({"packs": pack_ids, "supersedes": list(supersedes)}).encode()
    body = bytearray(_MAGIC + struct.pack("<I", len(header)) + header)
    for number, pack_id in enumerate(pack_ids):
        for e in packs[pack_id]:
            body += _ENTRY.pack(e.id, number, e.offset, e.length, e.type)
    return crypto.seal(zstandard.ZstdCompressor(level=3).compress(bytes(body)), _ASSOCIATED)


def decode_index(
    crypto: Crypto, sealed: bytes, name: str
) -> tuple[dict[str, list[PackEntry]], list[str]]:
    """Open an index file: pack ID -> entries, and the index files it supersedes."""
    plain = crypto.open(sealed, _ASSOCIATED, f"index {name[:12]}")
    try:
        body = zstandard.ZstdDecompressor().decompress(plain, max_output_size=_MAX_INDEX_BYTES)
        if not body.startswith(_MAGIC):
            raise ValueError("bad magic")
        (hlen,) = struct.unpack_from("<I", body, len(_MAGIC))
        start = len(_MAGIC) + 4
        header = json.loads(body[start : start + hlen])
        pack_ids = [str(p) for p in header["packs"]]
        supersedes = [str(s) for s in header.get("supersedes", [])]
        rest = body[start + hlen :]
        if len(rest) % _ENTRY.size:
            raise ValueError("truncated entries")
        packs: dict[str, list[PackEntry]] = {p: [] for p in pack_ids}
        lists = [packs[p] for p in pack_ids]
        for blob_id, number, blob_offset, length, kind in _ENTRY.iter_unpack(rest):
            lists[number].append(PackEntry(_TYPES[kind], blob_id, blob_offset, length))
    except (
        ValueError,
        KeyError,
        IndexError,
        TypeError,
        AttributeError,
        struct.error,
        zstandard.ZstdError,
    ) as exc:
        raise IntegrityError(f"index {name[:12]} is malformed: {exc}") from None
    return packs, supersedes
