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
from typing import NamedTuple

import zstandard

from agents.backup.crypto import Crypto
from agents.backup.errors import IntegrityError
from agents.backup.pack import BlobType, PackEntry

_MAGIC = b"OAIX1\n"
_ASSOCIATED = b"opsagent-index"
_ENTRY = struct.Struct("<32sIIIB")
_MAX_INDEX_BYTES = 1 << 31
_TYPES = {int(t): t for t in BlobType}  # a dict lookup, not an enum call, per entry


class Location(NamedTuple):
    """Where a blob is: its pack, the offset and length of its sealed bytes, its type."""

    pack: str
    offset: int
    length: int
    type: BlobType


# A blob's place is held as one int, (pack number, offset, length, type) in 8 bits of type
# and 32 each of length and offset, with the pack's ID once in a list: about 80 bytes a
# blob with its dict slot instead of about 150 as an object (a year of daily database
# dumps in 8 KiB chunks is millions of blobs).
_TYPE_BITS, _FIELD_BITS = 8, 32
_new_location = tuple.__new__  # a Location without the keyword-argument machinery
_FIELD_MASK = (1 << _FIELD_BITS) - 1


class Index:
    """In-memory merge of every index file; thread-safe for lookups and additions."""

    def __init__(self) -> None:
        self._blobs: dict[bytes, int] = {}
        self._pack_ids: list[str] = []
        self._pack_numbers: dict[str, int] = {}
        self._lock = threading.Lock()

    def __contains__(self, blob_id: bytes) -> bool:
        return blob_id in self._blobs

    def __len__(self) -> int:
        return len(self._blobs)

    def get(self, blob_id: bytes) -> Location | None:
        packed = self._blobs.get(blob_id)
        return None if packed is None else self._location(packed)

    def add_pack(self, pack_id: str, entries: Iterable[PackEntry]) -> None:
        with self._lock:
            number = self._pack_numbers.get(pack_id)
            if number is None:
                number = self._pack_numbers[pack_id] = len(self._pack_ids)
                self._pack_ids.append(pack_id)
            high = number << (2 * _FIELD_BITS)
            setdefault = self._blobs.setdefault
            for e in entries:
                setdefault(
                    e.id, ((high | e.offset << _FIELD_BITS | e.length) << _TYPE_BITS) | e.type
                )

    def add_file(self, opened: IndexFile, present: set[str] | None) -> None:
        """Merge a checked index file's entries for the packs in `present` (all if None)."""
        with self._lock:
            numbers: list[int | None] = []
            for pack_id in opened.packs:
                if present is not None and pack_id not in present:
                    numbers.append(None)
                    continue
                number = self._pack_numbers.get(pack_id)
                if number is None:
                    number = self._pack_numbers[pack_id] = len(self._pack_ids)
                    self._pack_ids.append(pack_id)
                numbers.append(number << (2 * _FIELD_BITS))
            setdefault = self._blobs.setdefault
            for blob_id, local, offset, length, kind in _ENTRY.iter_unpack(opened.entries):
                high = numbers[local]
                if high is not None:
                    setdefault(
                        blob_id, ((high | offset << _FIELD_BITS | length) << _TYPE_BITS) | kind
                    )

    def discard(self, blob_id: bytes) -> None:
        """Forget a blob found damaged, so this process stores it again rather than
        referencing the damaged copy."""
        with self._lock:
            self._blobs.pop(blob_id, None)

    def items(self) -> Iterator[tuple[bytes, Location]]:
        location = self._location
        return ((blob_id, location(packed)) for blob_id, packed in list(self._blobs.items()))

    def blob_packs(self) -> dict[str, list[bytes]]:
        """pack -> the IDs of the blobs it holds, without a Location per blob (a whole
        repository's worth of those is about 190 bytes a blob; this is about 9)."""
        grouped: dict[int, list[bytes]] = {}
        shift = _TYPE_BITS + 2 * _FIELD_BITS
        with self._lock:
            for blob_id, packed in self._blobs.items():
                number = packed >> shift
                ids = grouped.get(number)
                if ids is None:
                    grouped[number] = [blob_id]
                else:
                    ids.append(blob_id)
        return {self._pack_ids[number]: ids for number, ids in grouped.items()}

    def packs(self) -> set[str]:
        numbers = {packed >> (_TYPE_BITS + 2 * _FIELD_BITS) for packed in self._blobs.values()}
        return {self._pack_ids[n] for n in numbers}

    def _location(self, packed: int) -> Location:
        fields = packed >> _TYPE_BITS
        return _new_location(
            Location,
            (
                self._pack_ids[fields >> (2 * _FIELD_BITS)],
                (fields >> _FIELD_BITS) & _FIELD_MASK,
                fields & _FIELD_MASK,
                _TYPES[packed & 0xFF],
            ),
        )


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


@dataclass(frozen=True)
class IndexFile:
    """One opened index file, its entries still in the file's binary form: a repository
    merges them straight into its Index, without an object per entry on the way."""

    packs: list[str]
    supersedes: list[str]
    entries: bytes  # _ENTRY records: blob ID, pack number, offset, length, type


def read_index_file(crypto: Crypto, sealed: bytes, name: str) -> IndexFile:
    """Open and check an index file; IntegrityError (one line) when it is not whole."""
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
        count = len(pack_ids)
        for _, number, _, _, kind in _ENTRY.iter_unpack(rest):
            if number >= count or kind not in _TYPES:
                raise ValueError(f"entry names pack {number} of {count} or type {kind}")
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
    return IndexFile(pack_ids, supersedes, rest)
