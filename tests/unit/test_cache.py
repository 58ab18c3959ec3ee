"""The local object cache on its own: copies checked against their names and sizes,
links, FIFOs, directories and strangers in its directories, temporaries of killed
runs (several of them found by an attack on the first version)."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agents.backup.cache import ObjectCache


def _named(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_copy_is_given_only_while_it_hashes_to_its_name(tmp_path: Path) -> None:
    cache = ObjectCache(tmp_path, ("c",))
    data = b"sealed index bytes"
    cache.put("index", _named(data), data)
    assert cache.get("index", _named(data)) == data
    (tmp_path / "c" / "index" / _named(data)).write_bytes(b"sealed index byteZ")
    assert cache.get("index", _named(data)) is None
    assert cache.names("index") == set()  # the bad copy is gone
    cache.put("index", _named(b"other"), data)  # bytes that are not the name's: not kept
    assert cache.names("index") == set()
    assert os.stat(tmp_path / "c" / "index").st_mode & 0o777 == 0o700


def test_names_that_are_not_hex_are_never_paths(tmp_path: Path) -> None:
    cache = ObjectCache(tmp_path, ("c",))
    for name in ("../../escape", "/etc/passwd", "ab" * 8 + "/x"):
        cache.put("trees", name, b"x", hashed=False)
        assert cache.get("trees", name, hashed=False) is None
    assert not (tmp_path / "escape").exists()
    assert ObjectCache.for_repository(tmp_path, {"id": "../x"}) is None
    assert ObjectCache.for_repository(tmp_path, {"id": 7}) is None
    assert ObjectCache.for_repository(tmp_path, {"id": "ab" * 16}) is not None


def test_a_link_planted_as_a_copy_is_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"not the cache's")
    cache = ObjectCache(tmp_path, ("c",))
    name = "cd" * 32
    cache.put("trees", "ef" * 32, b"kept", hashed=False)
    (tmp_path / "c" / "trees" / name).symlink_to(secret)
    assert cache.get("trees", name, hashed=False) is None
    assert not (tmp_path / "c" / "trees" / name).is_symlink()
    assert cache.get("trees", "ef" * 32, hashed=False) == b"kept"  # the cache still works
    assert secret.read_bytes() == b"not the cache's"


def test_keep_only_follows_storage_and_sweeps_dead_runs_temporaries(tmp_path: Path) -> None:
    cache = ObjectCache(tmp_path, ("c",))
    keep, gone = b"kept snapshot", b"forgotten snapshot"
    cache.put("snapshots", _named(keep), keep)
    cache.put("snapshots", _named(gone), gone)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    directory = tmp_path / "c" / "snapshots"
    (directory / f".{'aa' * 32}.{dead}.tmp").write_bytes(b"torn")
    (directory / f".{'bb' * 32}.{os.getpid()}-1.tmp").write_bytes(b"being written")
    (directory / "README").write_text("someone's note\n")
    cache.keep_only("snapshots", [_named(keep)])
    assert sorted(os.listdir(directory)) == sorted(
        [_named(keep), f".{'bb' * 32}.{os.getpid()}-1.tmp", "README"]
    )


def test_a_fifo_or_a_directory_where_a_copy_was_is_a_miss_and_is_cleared(tmp_path: Path) -> None:
    """A FIFO made every reader of the first version block for ever; a directory made it
    give the cache up for good."""
    cache = ObjectCache(tmp_path, ("c",))
    data = b"a snapshot"
    name = _named(data)
    cache.put("snapshots", _named(b"other"), b"other")  # the kind's directory exists
    fifo = tmp_path / "c" / "snapshots" / name
    os.mkfifo(fifo)
    assert cache.get("snapshots", name) is None  # at once: O_NONBLOCK, not a regular file
    assert not fifo.exists()
    (fifo / "inside").mkdir(parents=True)
    assert cache.get("snapshots", name) is None
    assert not fifo.exists()
    (fifo / "inside").mkdir(parents=True)
    cache.put("snapshots", name, data)  # a directory in the way is cleared for the copy
    assert cache.get("snapshots", name) == data
    assert cache.get("snapshots", _named(b"other")) == b"other"  # still in use


def test_a_copy_of_another_size_than_listed_is_not_read(tmp_path: Path) -> None:
    """A 1 GiB sparse file under a copy's name is refused by its size, not read whole
    into memory and hashed (the first version did)."""
    cache = ObjectCache(tmp_path, ("c",))
    data = b"an index file"
    cache.put("index", _named(data), data)
    assert cache.get("index", _named(data), size=len(data)) == data
    path = tmp_path / "c" / "index" / _named(data)
    with open(path, "r+b") as handle:
        handle.truncate(1 << 30)
    before = _rss_peak()
    assert cache.get("index", _named(data), size=len(data)) is None
    assert _rss_peak() - before < 100 << 20
    assert not path.exists()


def _rss_peak() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@pytest.mark.parametrize("linked", ["c", "c/repo", "c/repo/trees"])
def test_a_link_inside_the_state_directory_is_never_followed(
    tmp_path: Path, linked: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A link at any level below the state directory: no copy is written where it leads;
    the cache is given up for the run with one warning naming it."""
    state, outside = tmp_path / "state", tmp_path / "outside"
    state.mkdir()
    outside.mkdir()
    (state / linked).parent.mkdir(parents=True, exist_ok=True)
    (state / linked).symlink_to(outside)
    cache = ObjectCache(state, ("c", "repo"))
    with caplog.at_level(logging.WARNING, logger="opsagent.backup"):
        cache.put("trees", "ab" * 32, b"sealed tree", hashed=False)
        cache.put("trees", "cd" * 32, b"sealed tree", hashed=False)
        assert cache.get("trees", "ab" * 32, hashed=False) is None
    assert list(outside.rglob("*")) == []
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "not used for this run" in warnings[0]


def test_every_directory_it_makes_is_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        ObjectCache(tmp_path, ("cache", "repo-x")).put("index", _named(b"i"), b"i")
    finally:
        os.umask(old)
    for part in ("cache", "cache/repo-x", "cache/repo-x/index"):
        assert os.stat(tmp_path / part).st_mode & 0o777 == 0o700, part
    assert os.stat(tmp_path / "cache/repo-x/index" / _named(b"i")).st_mode & 0o777 == 0o600
