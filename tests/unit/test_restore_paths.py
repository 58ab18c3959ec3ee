"""The restorer judges and splits entry paths on strings, not pathlib objects (a file
cost several PurePosixPath objects and their hashes): the answers must be pathlib's,
for any string a hostile snapshot can hold."""

from __future__ import annotations

from pathlib import PurePosixPath

from hypothesis import given
from hypothesis import strategies as st

from agents.backup.restorer import _parent_of, _safe_relative

# paths built from the parts that change how pathlib reads a path
PART = st.sampled_from(["", ".", "..", "a", "b c", "...", ".hidden", "\x00", "é", "\udcff", "x/"])
PATHS = st.lists(PART, max_size=6).map("/".join) | st.text(max_size=12)


def _pathlib_safe(path: str) -> PurePosixPath | None:
    """The rule as it was written with pathlib (before this change)."""
    if not path or "\x00" in path or path.startswith("/"):
        return None
    rel = PurePosixPath(path)
    if any(part in ("..", "") for part in rel.parts) or rel.is_absolute():
        return None
    return rel


@given(PATHS)
def test_safe_relative_is_the_pathlib_rule(path: str) -> None:
    assert _safe_relative(path) == _pathlib_safe(path)


@given(st.lists(PATHS, max_size=8))
def test_parent_is_pathlibs_and_one_object_a_directory(paths: list[str]) -> None:
    parents: dict[str, PurePosixPath] = {}
    seen: dict[PurePosixPath, PurePosixPath] = {}
    for path in paths:
        rel = _safe_relative(path)
        if rel is None:
            continue
        parent = _parent_of(path, parents)
        assert parent == rel.parent, path
        assert seen.setdefault(parent, parent) is parent  # the same directory, one object


def test_examples() -> None:
    parents: dict[str, PurePosixPath] = {}
    assert _parent_of("a//b/./c/", parents) == PurePosixPath("a/b")
    assert _parent_of("c", parents) == PurePosixPath(".")
    assert _parent_of("./d", parents) is _parent_of("e", parents)
    for bad in ("", "/etc/passwd", "a/../../x", "..", "a/..", "a\x00b", "//x"):
        assert _safe_relative(bad) is None, bad
