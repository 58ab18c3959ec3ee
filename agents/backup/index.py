"""The index: which pack holds each blob, at which offset and length.

Index files are written after their packs and before any snapshot that needs them,
encrypted, in a compact binary form (41 bytes a blob). Reading a repository merges
every index file; an index file may name older ones it supersedes (prune writes
one index to replace many), which are then ignored and later deleted. The merge is
held as one hash table of those same records (`Index`), 64-96 bytes a blob.
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


# The merged index is one open-addressing hash table in a bytearray: a slot per blob in the
# index files' own record form (ID, pack number, offset, length, type; 45 bytes), the
# pack's ID once in a list. About half to 70 % of the slots are used, so a blob costs
# 64-96 bytes, against about 150 in a dict of IDs to packed ints (30 MiB for 200,000 blobs,
# the largest thing a backup of that many files held; a year of daily database dumps
# in 6 KiB chunks is millions of blobs). A probe compares a byte of the hash (a tag per
# slot) before it compares an ID.
_SLOT = _ENTRY
_SLOT_SIZE = _SLOT.size
_ID_SIZE = 32
_TYPE_AT = _SLOT_SIZE - 1  # the type byte's place in a slot
_GONE = 0xFF  # the type byte of a discarded blob's slot: probing goes on past it
_FULL = 0.7  # grow past this share of slots used (live and discarded)
_SPARE = 1.8  # slots a blob when growing: 55 % used
_new_location = tuple.__new__  # a Location without the keyword-argument machinery


class Index:
    """In-memory merge of every index file; thread-safe for lookups and additions.

    Additions hold the lock and write each slot with one slice assignment; a growth
    builds a new table and swaps it in whole, so a lookup (no lock) always probes one
    consistent table."""

    def __init__(self) -> None:
        # (slots, their tags, slot count), swapped whole; a tag is 0 for a slot never used,
        # else a byte of the hash of the ID there, so most probes need no compare
        self._table = (bytearray(_SLOT_SIZE * 8), bytearray(8), 8)
        self._live = 0  # blobs in the table
        self._used = 0  # slots taken, discarded ones included
        self._pack_ids: list[str] = []
        self._pack_numbers: dict[str, int] = {}
        self._lock = threading.Lock()

    def __contains__(self, blob_id: bytes) -> bool:
        # `_find` written out: an unchanged file's every chunk is looked up here, and a
        # call less is a quarter of the time
        table, tags, slots = self._table
        if type(blob_id) is not bytes or len(blob_id) != _ID_SIZE:
            return False  # what no blob's ID is (a str, None) is not in, as with a dict
        h = hash(blob_id)
        i = h % slots
        tag = (h >> 40) % 255 + 1
        while True:
            seen = tags[i]
            if not seen:
                return False
            if seen == tag and table.startswith(blob_id, i * _SLOT_SIZE):
                return table[i * _SLOT_SIZE + _TYPE_AT] != _GONE
            i = i + 1 if i + 1 < slots else 0

    def __len__(self) -> int:
        return self._live

    def get(self, blob_id: bytes) -> Location | None:
        table, tags, slots = self._table
        at = self._find(blob_id, table, tags, slots)
        if at < 0:
            return None
        _, number, offset, length, kind = _SLOT.unpack_from(table, at)
        if kind == _GONE:  # discarded by another thread since `_find`
            return None
        return _new_location(Location, (self._pack_ids[number], offset, length, _TYPES[kind]))

    @staticmethod
    def _find(blob_id: bytes, table: bytearray, tags: bytearray, slots: int) -> int:
        """The byte offset of the blob's slot in `table`, or -1."""
        if type(blob_id) is not bytes or len(blob_id) != _ID_SIZE:
            return -1
        startswith = table.startswith
        h = hash(blob_id)
        i = h % slots
        tag = (h >> 40) % 255 + 1
        while True:
            seen = tags[i]
            if not seen:
                return -1
            if seen == tag and startswith(blob_id, i * _SLOT_SIZE):
                at = i * _SLOT_SIZE
                return -1 if table[at + _TYPE_AT] == _GONE else at
            i = i + 1 if i + 1 < slots else 0

    def reserve(self, more: int) -> None:
        """Make room for `more` additions at once (a growth is one pass over the table)."""
        with self._lock:
            self._room(more)

    def add_pack(self, pack_id: str, entries: Iterable[PackEntry]) -> None:
        records = [(e.id, 0, e.offset, e.length, int(e.type)) for e in entries]
        with self._lock:
            self._put([self._number(pack_id)], records, len(records))

    def add_file(self, opened: IndexFile, present: set[str] | None) -> None:
        """Merge a checked index file's entries for the packs in `present` (all if None)."""
        with self._lock:
            numbers = [
                self._number(p) if present is None or p in present else -1 for p in opened.packs
            ]
            self._put(numbers, _ENTRY.iter_unpack(opened.entries), opened.count)

    def _number(self, pack_id: str) -> int:
        number = self._pack_numbers.get(pack_id)
        if number is None:
            number = self._pack_numbers[pack_id] = len(self._pack_ids)
            self._pack_ids.append(pack_id)
        return number

    def _put(
        self, numbers: list[int], records: Iterable[tuple[bytes, int, int, int, int]], count: int
    ) -> None:
        """Add `count` blobs, each (ID, local pack number, offset, length, type), with its
        pack's number from `numbers` (-1: left out); a blob known stays where it is.
        Under the lock."""
        self._room(count)
        table, tags, slots = self._table
        counted = [0, 0]
        try:
            _fill(table, tags, slots, records, numbers, counted)
        finally:  # a record that failed to pack (a bad offset, a wrong ID) counts what was
            self._live += counted[0]  # written before it, so the table still grows in time
            self._used += counted[1]

    def _room(self, more: int) -> None:
        """Before `more` additions could fill past `_FULL`: a table `_SPARE` times the
        blobs' count (and half as large again at least, so that growing one pack at a
        time costs a few copies a blob), filled, then swapped in whole (a lookup
        meanwhile probes the old one)."""
        old, old_tags, slots = self._table
        if self._used + more <= slots * _FULL:
            return
        size = max(8, int((self._live + more) * _SPARE), slots * 3 // 2)
        table, tags = bytearray(_SLOT_SIZE * size), bytearray(size)
        live = (r for i, r in enumerate(_SLOT.iter_unpack(old)) if old_tags[i] and r[4] != _GONE)
        counted = [0, 0]
        _fill(table, tags, size, live, None, counted)
        self._table = (table, tags, size)
        self._live = self._used = counted[0]

    def discard(self, blob_id: bytes) -> None:
        """Forget a blob found damaged, so this process stores it again rather than
        referencing the damaged copy."""
        with self._lock:
            table, tags, slots = self._table
            at = self._find(blob_id, table, tags, slots)
            if at >= 0:
                table[at + _TYPE_AT] = _GONE
                self._live -= 1

    def _records(self) -> Iterator[tuple[bytes, int, int, int, int]]:
        """Every blob's slot as it was when the table was taken (lock-free: additions
        made meanwhile may or may not be seen). A slot is read only once its tag is
        seen set, so never before it is written."""
        table, tags, _ = self._table
        unpack_from = _SLOT.unpack_from
        for i, tag in enumerate(tags):
            if tag:
                record = unpack_from(table, i * _SLOT_SIZE)
                if record[4] != _GONE:
                    yield record

    def items(self) -> Iterator[tuple[bytes, Location]]:
        pack_ids = self._pack_ids
        for blob_id, number, offset, length, kind in self._records():
            yield blob_id, _new_location(Location, (pack_ids[number], offset, length, _TYPES[kind]))

    def blob_packs(self) -> dict[str, bytes]:
        """pack -> the IDs of the blobs it holds, end to end in one `bytes` (32 bytes a
        blob; a Location per blob for a whole repository would be about 190, a list of
        ID objects about 80)."""
        grouped: dict[int, bytearray] = {}
        with self._lock:
            for blob_id, number, _, _, _ in self._records():
                ids = grouped.get(number)
                if ids is None:
                    grouped[number] = bytearray(blob_id)
                else:
                    ids += blob_id
        return {self._pack_ids[number]: bytes(ids) for number, ids in grouped.items()}

    def packs(self) -> set[str]:
        numbers = {record[1] for record in self._records()}
        return {self._pack_ids[n] for n in numbers}


def _fill(
    table: bytearray,
    tags: bytearray,
    slots: int,
    records: Iterable[tuple[bytes, int, int, int, int]],
    numbers: list[int] | None,
    counted: list[int],
) -> None:
    """Put records (ID, pack number, offset, length, type) into a table, each pack number
    mapped through `numbers` (-1: left out) unless None; a blob there stays. `counted`
    gets the blobs added and the slots newly taken, also when a record raises. A slot is
    written before its tag (a slot without one is empty, even half written), so a lookup
    never sees half an entry. One loop with no call a blob: the whole index is merged on
    every command."""
    pack_into, startswith = _SLOT.pack_into, table.startswith
    added = taken = 0
    try:
        for blob_id, number, offset, length, kind in records:
            if numbers is not None:
                number = numbers[number]
            if number < 0 or kind == _GONE:
                continue  # left out, or no blob's type (index files refuse it)
            if type(blob_id) is not bytes or len(blob_id) != _ID_SIZE:
                raise TypeError(f"a blob ID is 32 bytes, not {blob_id!r:.80}")
            h = hash(blob_id)
            i = h % slots
            tag = (h >> 40) % 255 + 1
            while True:
                seen = tags[i]
                if not seen:
                    pack_into(table, i * _SLOT_SIZE, blob_id, number, offset, length, kind)
                    tags[i] = tag
                    added += 1
                    taken += 1
                    break
                if seen == tag and startswith(blob_id, i * _SLOT_SIZE):
                    if table[i * _SLOT_SIZE + _TYPE_AT] == _GONE:  # discarded: stored again
                        pack_into(table, i * _SLOT_SIZE, blob_id, number, offset, length, kind)
                        added += 1
                    break
                i = i + 1 if i + 1 < slots else 0
    finally:
        counted[0] += added
        counted[1] += taken


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

    @property
    def count(self) -> int:
        """Its entries (what merging it may add to an Index)."""
        return len(self.entries) // _ENTRY.size


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
