"""The table of contents at the head of a pg_dump custom-format archive, read without pg_restore.

A restore streams the archive into `pg_restore` from the repository; to restore the
post-data section (indexes, constraints, triggers) with parallel jobs, which
pg_restore only does from a seekable file, it needs the archive's head as a file and
whether there are enough post-data items for jobs to matter. The head (header and
table of contents) holds every item's definition; the data blocks after it are only
read for table data, which that post-data run does not restore. The layout is the
one `pg_backup_archiver.c` writes (`WriteHead`, `WriteToc`) for archive versions
1.12 to 1.16 (PostgreSQL 9.0 to 17); any other version is not read (None), and the
caller restores from a full file as before.
"""

from __future__ import annotations

from dataclasses import dataclass

_MAGIC = b"PGDMP"
_CUSTOM_FORMAT = 1
_SECTION_NONE, _SECTION_POST_DATA = 1, 4
_V1_14, _V1_15, _V1_16 = (1, 14), (1, 15), (1, 16)  # tableam, compression algorithm, relkind


@dataclass(frozen=True)
class ArchiveHead:
    """Where a custom-format archive's table of contents ends, and its post-data items."""

    toc_end: int  # bytes from the start of the archive to the first data block
    post_data_items: int


class _Incomplete(Exception):
    """The bytes given end before the table of contents does."""


class _Unreadable(Exception):
    """Not a custom-format archive of a version this module reads."""


class HeadReader:
    """Collects an archive's first bytes until its table of contents can be read."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.head: ArchiveHead | None = None  # None once done: not an archive read here
        self.done = False
        self._next_try = 0

    def feed(self, data: bytes) -> bool:
        """Add the archive's next bytes; True once the head is read or known unreadable."""
        self.buffer += data
        if len(self.buffer) < self._next_try:
            return False
        try:
            self.head = _Reader(bytes(self.buffer)).head()
        except _Incomplete:
            self._next_try = 2 * len(self.buffer)  # a long head is parsed O(log n) times
            return False
        except _Unreadable:
            self.head = None
        self.done = True
        return True


class _Reader:
    """A cursor over an archive's first bytes, reading the encodings pg_dump writes."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.int_size = 4
        self.off_size = 8

    def head(self) -> ArchiveHead:
        if self.take(5) != _MAGIC:
            raise _Unreadable
        version = (self.byte(), self.byte())
        self.byte()  # revision
        if not (1, 12) <= version <= _V1_16:
            raise _Unreadable
        self.int_size, self.off_size = self.byte(), self.byte()
        if self.byte() != _CUSTOM_FORMAT or not 1 <= self.int_size <= 8:
            raise _Unreadable
        if version >= _V1_15:
            self.byte()  # compression algorithm
        else:
            self.int()  # compression level
        for _ in range(7):  # creation time: sec, min, hour, mday, mon, year, isdst
            self.int()
        for _ in range(3):  # database name, server version, pg_dump version
            self.text()
        post_data, section = 0, 0
        for _ in range(self.int()):
            self.int()  # dump ID
            self.int()  # has a data dumper
            for _ in range(4):  # table OID, OID, tag, description
                self.text()
            declared = self.int()
            for _ in range(5):  # definition, drop, copy, namespace, tablespace
                self.text()
            if version >= _V1_14:
                self.text()  # table access method
            if version >= _V1_16:
                self.int()  # relkind
            self.text()  # owner
            self.text()  # "false": with OIDs
            while self.text() is not None:  # dependencies, ended by a null string
                pass
            self.byte()  # data offset state ...
            self.take(self.off_size)  # ... and offset
            # an item without a section belongs to the section before it (as pg_restore reads it)
            section = section if declared == _SECTION_NONE else declared
            post_data += section == _SECTION_POST_DATA
        return ArchiveHead(self.pos, post_data)

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise _Incomplete
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def int(self) -> int:
        sign = self.byte()
        value = int.from_bytes(self.take(self.int_size), "little")
        return -value if sign else value

    def text(self) -> bytes | None:
        length = self.int()
        if length < 0:
            return None
        if length > 2**30:
            raise _Unreadable
        return self.take(length)
