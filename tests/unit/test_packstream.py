"""BlobCutter: blobs cut out of a pack's stream as they arrive, memory bounded."""

from __future__ import annotations

import random

from agents.backup.index import Location
from agents.backup.pack import BlobType
from agents.backup.packstream import BlobCutter


def _pack(rng: random.Random, count: int) -> tuple[bytes, list[tuple[int, Location]]]:
    """Random bytes with `count` blobs of random sizes and random gaps between them."""
    body = bytearray()
    blobs = []
    for n in range(count):
        body += rng.randbytes(rng.randrange(0, 50))  # unindexed bytes in between
        length = rng.randrange(1, 3000)
        blobs.append((n, Location("p", len(body), length, BlobType.DATA)))
        body += rng.randbytes(length)
    body += rng.randbytes(100)  # the header, say
    return bytes(body), blobs


def test_every_blob_comes_out_whole_whatever_the_block_sizes() -> None:
    rng = random.Random(5)
    for _ in range(40):
        body, blobs = _pack(rng, rng.randrange(0, 30))
        start = blobs[0][1].offset if blobs and rng.random() < 0.5 else 0
        cutter = BlobCutter(start, rng.sample(blobs, len(blobs)), keep_tail=40)
        got: dict[int, bytes] = {}
        position = start
        while position < len(body):
            block = body[position : position + rng.randrange(1, 5000)]
            position += len(block)
            for tag, loc, sealed in cutter.feed(block):
                assert tag not in got
                got[tag] = bytes(sealed)
                assert loc.offset + loc.length <= position  # out as soon as whole, not before
            assert len(cutter.tail) <= 6000 + 3000 + 50  # a block, a blob, a gap at most
        assert list(cutter.finish()) == []
        assert got == {tag: body[loc.offset : loc.offset + loc.length] for tag, loc in blobs}
        assert cutter.tail == body[-40:] or len(body) - start < 40


def test_a_stream_that_ends_early_gives_the_rest_short() -> None:
    body = bytes(range(200))
    blobs = [
        ("a", Location("p", 0, 50, BlobType.DATA)),
        ("b", Location("p", 120, 60, BlobType.DATA)),
        ("c", Location("p", 190, 40, BlobType.DATA)),
    ]
    cutter = BlobCutter(0, blobs)
    assert [(t, bytes(b)) for t, _, b in cutter.feed(body[:150])] == [("a", body[:50])]
    rest = [(t, bytes(b)) for t, _, b in cutter.finish()]
    assert rest == [("b", body[120:150]), ("c", b"")]
