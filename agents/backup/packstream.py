"""Cut sealed blobs out of a pack's bytes as they stream in (restore, `check --read-data`).

A reader asks storage for one range of a pack (`Storage.stream`: one GET on S3) and
feeds the blocks here; each wanted blob comes out as soon as its last byte is in, and
only the bytes a later blob still needs are kept. Memory is a block plus the part of
one blob, whatever the pack's size, while the pack costs one request instead of one
per blob or per few megabytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from agents.backup.index import Location

T = TypeVar("T")


class BlobCutter(Generic[T]):
    """Blobs (each with its tag, e.g. its ID) cut from the stream of a pack's bytes that
    starts at `start`; `keep_tail` more bytes at the end are kept for the caller (a
    pack's header)."""

    def __init__(self, start: int, blobs: list[tuple[T, Location]], keep_tail: int = 0) -> None:
        self._pending = sorted(blobs, key=lambda item: (item[1].offset, item[1].length))
        self._next = 0
        self._keep_tail = keep_tail
        self._kept = b""  # the stream's bytes from `_kept_from` on, as far as received
        self._kept_from = start
        self.position = start  # the stream's offset after the last byte fed

    def feed(self, block: bytes) -> Iterator[tuple[T, Location, memoryview]]:
        """Take the next block; yield the blobs now whole (tag, location, sealed bytes).
        The bytes are a view valid until the next call."""
        self.position += len(block)
        self._kept = self._kept + block if self._kept else block
        yield from self._whole(self.position)
        self._trim()

    def finish(self) -> Iterator[tuple[T, Location, memoryview]]:
        """The blobs the stream ended before: each with what there was of it (short or
        empty), so that opening it fails as reading a truncated pack does."""
        yield from self._whole(None)

    @property
    def tail(self) -> bytes:
        """The last bytes fed (at least `keep_tail` of them, when the stream had them)."""
        return self._kept

    def _whole(self, upto: int | None) -> Iterator[tuple[T, Location, memoryview]]:
        view = memoryview(self._kept)
        try:
            while self._next < len(self._pending):
                tag, loc = self._pending[self._next]
                if upto is not None and loc.offset + loc.length > upto:
                    return
                start = max(0, loc.offset - self._kept_from)
                self._next += 1
                yield tag, loc, view[start : start + loc.length]
        finally:
            view.release()

    def _trim(self) -> None:
        """Drop the bytes no pending blob (nor the kept tail) needs any more."""
        if self._next < len(self._pending):
            keep = self._pending[self._next][1].offset
        else:
            keep = self.position - self._keep_tail
        if keep > self._kept_from:
            cut = min(keep, self.position) - self._kept_from
            self._kept = self._kept[cut:]
            self._kept_from += cut
