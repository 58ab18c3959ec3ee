"""The tree line format: old trees read exactly as before, names are bytes, and what a
newer agent wrote is refused with a clear message."""

from __future__ import annotations

import re

import pytest

from agents.backup.archiver import _file_line
from agents.backup.snapshot import TreeEntry, decode_tree_line, encode_tree, shown

# written by the version before hard links, FIFOs, devices and xattrs were recorded
OLD_LINE = (
    '{"path":"srv/naïve","type":"file","mode":420,"mtime_ns":1,"uid":0,"gid":0,"user":"",'
    '"group":"","size":3,"chunks":["ab"],"chunk_sizes":[3],"target":"","inode":7,"ctime_ns":0}'
)


def test_an_old_line_reads_and_a_plain_entry_is_written_with_the_same_bytes() -> None:
    entry = TreeEntry.from_json(OLD_LINE)
    assert entry == TreeEntry(
        path="srv/naïve",
        type="file",
        mode=0o644,
        mtime_ns=1,
        size=3,
        chunks=("ab",),
        chunk_sizes=(3,),
        inode=7,
    )
    assert entry.to_json() == OLD_LINE
    assert encode_tree([entry]) == (OLD_LINE + "\n").encode()


def test_new_fields_round_trip() -> None:
    entries = [
        TreeEntry(
            path="d/a", type="file", mode=0o600, mtime_ns=1, xattrs=(("user.k", b"\x00\xff"),)
        ),
        TreeEntry(path="d/b", type="file", mode=0o600, mtime_ns=1, link_to="d/a"),
        TreeEntry(path="d/null", type="chardev", mode=0o666, mtime_ns=1, rdev=259),
        TreeEntry(path="d/pipe", type="fifo", mode=0o644, mtime_ns=1),
    ]
    lines = encode_tree(entries).split(b"\n")
    assert [decode_tree_line(line) for line in lines] == [*entries, None]


def test_names_are_kept_byte_for_byte_and_shown_escaped() -> None:
    raw = b'bad\xff\xfe name\nwith "quotes" and \\ \x01'
    name = raw.decode("utf-8", "surrogateescape")
    entry = TreeEntry(path=f"d/{name}", type="symlink", mode=0o777, mtime_ns=1, target=name)
    data = encode_tree([entry])
    assert data.count(b"\n") == 1 and raw.replace(b"\n", b"") not in data  # newline escaped
    assert b"bad\xff\xfe name" in data  # the bytes themselves, not an escape
    back = decode_tree_line(data.rstrip(b"\n"))
    assert back == entry
    assert back is not None and back.target.encode("utf-8", "surrogateescape") == raw
    assert shown(name) == 'bad\\xff\\xfe name\nwith "quotes" and \\ \x01'


def test_blank_lines_are_nothing() -> None:
    assert decode_tree_line(b"") is None
    assert decode_tree_line(b"  \r") is None
    assert encode_tree([]) == b""


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"path":"a","type":"door","mode":0,"mtime_ns":0}', "entry type 'door' is unknown"),
        (
            '{"path":"a","type":"file","mode":0,"mtime_ns":0,"acl":"x"}',
            "fields ['acl'] are unknown",
        ),
        ("[1]", "not an object"),
    ],
)
def test_what_a_newer_agent_wrote_is_a_clear_error(line: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        TreeEntry.from_json(line)


def test_a_parent_line_is_reused_only_when_well_formed() -> None:
    """What the next backup compares an unchanged file on, or copies, must be exactly
    typed: anything else makes the parent unusable (a warning, every file read again)."""
    assert _file_line(OLD_LINE)["chunks"] == ["ab"]
    assert _file_line(OLD_LINE + "  ")["inode"] == 7  # trailing blanks, as json.loads
    assert _file_line('{"path":"d","type":"dir","mode":"any"}')["type"] == "dir"
    bad = [
        "",
        "not json",
        "[1, 2]",
        ' {"path":"a","type":"dir"}',  # the writer never indents a line
        '{"path":"a","type":"dir"} trailing',
        '{"path":1,"type":"dir"}',
        OLD_LINE.replace('"size":3', '"size":true'),
        OLD_LINE.replace('"size":3', '"size":3.0'),
        OLD_LINE.replace('"mtime_ns":1,', ""),
        OLD_LINE.replace('["ab"]', '["ab",7]'),
        OLD_LINE.replace('"chunks":["ab"]', '"chunks":"ab"'),
        OLD_LINE.replace("[3]", '["3"]'),
        OLD_LINE.replace('"ctime_ns":0}', '"ctime_ns":0,"owner":"x"}'),
    ]
    for line in bad:
        with pytest.raises(ValueError):
            _file_line(line)
