"""The local object cache on its own: copies checked against their names, links and
strangers in its directories, temporaries of killed runs."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from agents.backup.cache import ObjectCache


def _named(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_copy_is_given_only_while_it_hashes_to_its_name(tmp_path: Path) -> None:
    cache = ObjectCache(tmp_path / "c")
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
    cache = ObjectCache(tmp_path / "c")
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
    cache = ObjectCache(tmp_path / "c")
    name = "cd" * 32
    cache.put("trees", "ef" * 32, b"kept", hashed=False)
    (tmp_path / "c" / "trees" / name).symlink_to(secret)
    assert cache.get("trees", name, hashed=False) is None
    assert not (tmp_path / "c" / "trees" / name).is_symlink()
    assert cache.get("trees", "ef" * 32, hashed=False) == b"kept"  # the cache still works
    assert secret.read_bytes() == b"not the cache's"


def test_keep_only_follows_storage_and_sweeps_dead_runs_temporaries(tmp_path: Path) -> None:
    cache = ObjectCache(tmp_path / "c")
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
