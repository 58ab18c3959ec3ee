"""The in-memory index (a hash table in a bytearray) against a dict model: every
operation's answer, growth, discards and walks racing lookups, and IDs no blob can have."""

from __future__ import annotations

import os
import random
import struct
import sys
import threading
from collections.abc import Callable

import pytest

from agents.backup import index as index_module
from agents.backup.crypto import Crypto, MasterKey
from agents.backup.index import Index, Location, encode_index, read_index_file
from agents.backup.pack import BlobType, PackEntry


def entry(rng: random.Random, kind: BlobType = BlobType.DATA) -> PackEntry:
    return PackEntry(kind, rng.randbytes(32), rng.randrange(1 << 32), rng.randrange(1 << 32))


def check_against(index: Index, model: dict[bytes, Location], absent: list[bytes]) -> None:
    assert len(index) == len(model)
    for blob_id, where in model.items():
        assert blob_id in index
        assert index.get(blob_id) == where
    for blob_id in absent:
        assert blob_id not in index
        assert index.get(blob_id) is None
    assert dict(index.items()) == model
    grouped: dict[str, set[bytes]] = {}
    for blob_id, where in model.items():
        grouped.setdefault(where.pack, set()).add(blob_id)
    by_pack = index.blob_packs()
    assert {
        p: {ids[at : at + 32] for at in range(0, len(ids), 32)} for p, ids in by_pack.items()
    } == grouped
    assert sum(len(ids) for ids in by_pack.values()) == 32 * len(model)  # each ID once
    assert index.packs() == set(grouped)


def test_random_operations_answer_as_a_dict_does() -> None:
    rng = random.Random(20)
    index = Index()
    model: dict[bytes, Location] = {}
    gone: list[bytes] = []
    for round_ in range(60):
        pack = f"{round_:064x}"
        entries = [entry(rng, rng.choice(list(BlobType))) for _ in range(rng.randrange(1, 400))]
        if model and rng.random() < 0.5:  # a blob already known keeps its first place
            known = rng.choice(list(model))
            entries.append(PackEntry(BlobType.DATA, known, 1, 2))
        if gone and rng.random() < 0.5:  # a discarded blob stored again, in a new place
            entries.append(PackEntry(BlobType.TREE, gone.pop(), 3, 4))
        index.add_pack(pack, entries)
        for e in entries:
            model.setdefault(e.id, Location(pack, e.offset, e.length, e.type))
        for blob_id in rng.sample(list(model), min(len(model), rng.randrange(0, 20))):
            index.discard(blob_id)
            del model[blob_id]
            gone.append(blob_id)
        if round_ % 10 == 9:
            check_against(index, model, gone + [rng.randbytes(32) for _ in range(50)])
    check_against(index, model, gone)


def test_index_files_merge_only_the_packs_present() -> None:
    crypto = Crypto(MasterKey.generate())
    rng = random.Random(7)
    packs = {f"{n:064x}": [entry(rng) for _ in range(300)] for n in range(6)}
    first = dict(list(packs.items())[:3])
    second = dict(list(packs.items())[3:])
    present = set(list(packs)[1:5])
    index = Index()
    index.reserve(1800)
    for name, part in (("a" * 64, first), ("b" * 64, second)):
        index.add_file(read_index_file(crypto, encode_index(crypto, part), name), present)
    model = {
        e.id: Location(p, e.offset, e.length, e.type)
        for p, entries in packs.items()
        if p in present
        for e in entries
    }
    left_out = [e.id for p, entries in packs.items() if p not in present for e in entries]
    check_against(index, model, left_out)


def test_ids_that_are_no_blob_ids_are_never_found_nor_stored() -> None:
    index = Index()
    real = PackEntry(BlobType.DATA, os.urandom(32), 0, 10)
    zeros = PackEntry(BlobType.TREE, bytes(32), 5, 6)  # an ID like any other
    index.add_pack("p" * 64, [real, zeros])
    for wrong in (b"short", bytearray(32), memoryview(os.urandom(32)), "x" * 32):
        with pytest.raises(TypeError):
            index.add_pack("w" * 64, [PackEntry(BlobType.DATA, wrong, 0, 1)])  # type: ignore[arg-type]
    assert len(index) == 2
    assert index.get(bytes(32)) == Location("p" * 64, 5, 6, BlobType.TREE)
    hexed = real.id.hex()[:32]  # a str of an ID's length: not in, as with a dict
    for wrong in (b"", real.id[:1], real.id[:31], real.id + b"x", hexed, None, 7):
        assert wrong not in index  # a prefix of a stored ID matches nothing
        assert index.get(wrong) is None  # type: ignore[arg-type]
    assert index.get(real.id) == Location("p" * 64, 0, 10, BlobType.DATA)


def test_an_addition_that_fails_part_way_leaves_the_table_whole() -> None:
    """Each addition stores five blobs, then meets an offset no index can hold: the
    five are counted, so the table grows before it fills (it once filled every slot
    and the next probe went round for ever, holding the lock)."""
    rng = random.Random(9)
    index = Index()
    stored: list[PackEntry] = []
    for n in range(40):
        good = [entry(rng) for _ in range(5)]
        with pytest.raises(struct.error):
            index.add_pack(
                f"{n:064x}", [*good, PackEntry(BlobType.DATA, rng.randbytes(32), 1 << 32, 1)]
            )
        stored += good
    done = threading.Event()

    def more() -> None:
        index.add_pack("m" * 64, [entry(rng) for _ in range(1000)])
        assert rng.randbytes(32) not in index
        done.set()

    thread = threading.Thread(target=more, daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert done.is_set(), "an addition after the failed ones never returned"
    assert len(index) == len(stored) + 1000
    assert all(e.id in index for e in stored)


def test_lookups_during_growth_never_miss_a_known_blob() -> None:
    """A reader probing while another thread adds packs (each addition may grow and
    swap the table) finds every blob added before it started, every time."""
    rng = random.Random(3)
    index = Index()
    known = [entry(rng) for _ in range(2000)]
    index.add_pack("k" * 64, known)
    stop = threading.Event()
    misses: list[bytes] = []

    def read() -> None:
        while not stop.is_set():
            misses.extend(e.id for e in known if e.id not in index)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for n in range(200):
            index.add_pack(f"{n:064x}", [entry(rng) for _ in range(250)])
    finally:
        stop.set()
        reader.join()
    assert misses == []
    assert len(index) == 2000 + 200 * 250


def _racing(reader: Callable[[], None], writer: Callable[[], None]) -> list[BaseException]:
    """Run `reader` in a loop beside one run of `writer`, the interpreter switching
    threads as often as it can; what the reader raised."""
    raised: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                reader()
            except BaseException as exc:  # the test reports it
                raised.append(exc)
                return

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    thread = threading.Thread(target=read)
    thread.start()
    try:
        writer()
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)
    return raised


def test_a_lookup_that_a_discard_overtakes_answers_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """`get` finds the slot, then another thread discards the blob before the slot is
    read: the answer is None, never a Location of the discarded slot (nor an error)."""
    blob = entry(random.Random(5))
    index = Index()
    index.add_pack("q" * 64, [blob])

    class DiscardFirst:  # the record read, but only after the discard got in
        size = index_module._SLOT.size

        @staticmethod
        def unpack_from(buffer: bytearray, offset: int) -> tuple[bytes, int, int, int, int]:
            index.discard(blob.id)
            return real.unpack_from(buffer, offset)

    real = index_module._SLOT
    monkeypatch.setattr(index_module, "_SLOT", DiscardFirst)
    assert index.get(blob.id) is None
    monkeypatch.setattr(index_module, "_SLOT", real)
    assert blob.id not in index
    index.add_pack("r" * 64, [blob])  # stored again, in its new place
    assert index.get(blob.id) == Location("r" * 64, blob.offset, blob.length, blob.type)


def test_items_racing_additions_yield_only_blobs_added() -> None:
    rng = random.Random(6)
    index = Index()
    added: dict[bytes, Location] = {}
    wrong: list[object] = []

    def walk() -> None:
        for blob_id, where in index.items():
            if added.get(blob_id) != where:
                wrong.append((blob_id, where))

    def grow() -> None:
        for n in range(100):
            entries = [entry(rng) for _ in range(100)]
            for e in entries:  # known before they can be seen
                added[e.id] = Location(f"{n:064x}", e.offset, e.length, e.type)
            index.add_pack(f"{n:064x}", entries)

    assert _racing(walk, grow) == []
    assert wrong == []
