"""Hostile cases for the faster backup engine (whole reads of small files, the parent
tree read in step with the walk, reused tree lines), against the real engine and a
local repository: every one must restore what the source held, byte for byte."""

from __future__ import annotations

import io
import os
import stat
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.backup import archiver as archiver_module
from agents.backup.archiver import WHOLE_READ, Archiver, WalkItem, _read_whole
from agents.backup.runner import init_repository, open_repository, run_backup
from tests.integration.test_files_source import backed_up_twice, load, write_config


class ShortReads(io.RawIOBase):
    """A real file read through a file system that answers at most `step` bytes per
    read call, as FUSE with direct I/O does: a short read is not the end of the file."""

    def __init__(self, path: Path, step: int) -> None:
        self._file = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by close()
        self._step = step

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")[: self._step]
        return self._file.readinto(view) or 0

    def close(self) -> None:
        self._file.close()
        super().close()


def test_a_short_read_is_not_taken_for_the_end_of_a_small_file(tmp_path: Path) -> None:
    """Files up to WHOLE_READ are read in one call of their stat size: a call that
    returns less must be followed by more, not stored as the whole file."""
    config = load(write_config(tmp_path, [{"name": "files", "paths": [tmp_path / "src"]}]))
    assert config.backup is not None
    init_repository(config.backup, config.host)
    repo = open_repository(config.backup)
    data = os.urandom(3 * 2**20 + 12345)
    assert len(data) <= WHOLE_READ
    source = tmp_path / "small.bin"
    source.write_bytes(data)
    with repo.writer() as writer:
        archiver = Archiver(repo, writer)
        handle = ShortReads(source, 64 * 1024)
        with handle:
            chunks, sizes = archiver.store_file(handle, len(data))
        writer.flush()
    repo = open_repository(config.backup)
    stored = b"".join(repo.load_blob(bytes.fromhex(c)) for c in chunks)
    assert sum(sizes) == len(data)
    assert stored == data


def test_unchanged_files_under_nested_and_repeated_source_paths_are_reused(
    tmp_path: Path,
) -> None:
    """Each source path that nests in or repeats another has a parent cursor of its own:
    the parent's lines cannot say which of them they were stored under."""
    source = tmp_path / "src"
    (source / "inner").mkdir(parents=True)
    (source / "top.txt").write_text("top\n")
    (source / "inner" / "deep.txt").write_text("deep\n")
    paths = [source / "inner", source, source]
    details = backed_up_twice(load(write_config(tmp_path, [{"name": "files", "paths": paths}])))
    assert details["files"] == 5  # deep.txt under each of the three paths, top.txt twice
    assert (details["files_reused"], details["bytes_read"]) == (5, 0), details


def _deep_chain(top: Path, depth: int) -> list[Path]:
    """Directories `top/d/d/...`, `depth` levels, made without recursion."""
    chain, path = [], top
    for _ in range(depth):
        path = path / "d"
        path.mkdir()
        chain.append(path)
    return chain


def _remove_chain(chain: list[Path]) -> None:
    """Removed deepest first, without recursion (shutil.rmtree recurses per level)."""
    for path in reversed(chain):
        for child in path.iterdir():
            if not child.is_dir() or child.is_symlink():
                child.unlink()
        path.rmdir()


def test_a_tree_deeper_than_the_recursion_limit_is_backed_up(tmp_path: Path) -> None:
    """Anyone who can write to a source path can nest directories a few thousand deep
    (PATH_MAX is per call, not per tree): the walk must not need a frame per level."""
    source = tmp_path / "src"
    source.mkdir()
    depth = sys.getrecursionlimit() + 200
    chain = _deep_chain(source, depth)
    try:
        (chain[-1] / "f.txt").write_text("at the bottom\n")
        config = load(write_config(tmp_path, [{"name": "files", "paths": [source]}]))
        assert config.backup is not None
        init_repository(config.backup, config.host)
        results: list = []
        run = run_backup(config, emit=results.append)
        assert run.ok, run.summary
        assert (results[0].details["files"], results[0].details["dirs"]) == (1, depth + 1)
        repo = open_repository(config.backup)
        snapshot = repo.find_snapshot(results[0].details["snapshot"])
        (bottom,) = [e for e in repo.read_tree(snapshot) if e.type == "file"]
        assert bottom.path == str(chain[-1] / "f.txt").lstrip("/")
        data = b"".join(repo.load_blob(bytes.fromhex(c)) for c in bottom.chunks)
        assert data == b"at the bottom\n"
    finally:
        _remove_chain(chain)


def _swap_to_link(path: Path, secret: Path) -> None:
    path.unlink()
    path.symlink_to(secret)


def _swap_to_fifo(path: Path, secret: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _swap_to_dir(path: Path, secret: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "inside.txt").write_bytes(b"made after the walk listed its parent\n")


def _rename_over(path: Path, secret: Path) -> None:
    new = path.with_name(path.name + ".new")
    new.write_bytes(b"saved by a rename over it\n")
    new.chmod(0o640)
    new.rename(path)


SWAPS = {
    "link.txt": _swap_to_link,
    "fifo.txt": _swap_to_fifo,
    "dir.txt": _swap_to_dir,
    "big-fifo.bin": _swap_to_fifo,  # past WHOLE_READ: the streaming path
    "renamed.txt": _rename_over,
}


@pytest.mark.timeout(120)  # a FIFO opened to be read blocks for ever: this fails, not hangs
def test_a_file_swapped_after_the_walk_listed_it_is_never_read_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the walk's lstat and the read, a writer in the source swaps each file:
    for a link to a secret outside the source, a FIFO, a directory, or another file
    renamed over it. The backup must read none of them through the swap (a root backup
    would store the secret), hang on none, and say what happened; the renamed-over file
    is stored with its new content and mode."""
    source = tmp_path / "src"
    source.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"SECRET outside the source\n" * 100)
    for name in SWAPS:
        size = WHOLE_READ + 4096 if name.startswith("big") else 2000
        (source / name).write_bytes(b"o" * size)
        (source / name).chmod(0o644)
    (source / "kept.txt").write_bytes(b"never touched\n")
    real_walk = archiver_module.walk

    def racing_walk(*args: Any, **kwargs: Any) -> Iterator[WalkItem]:
        for item in real_walk(*args, **kwargs):
            swap = SWAPS.get(os.path.basename(item.path))
            if swap is not None and stat.S_ISREG(item.st.st_mode):
                swap(Path(item.path), secret)  # after its lstat, before it is read
            yield item

    monkeypatch.setattr(archiver_module, "walk", racing_walk)
    config = load(write_config(tmp_path, [{"name": "files", "paths": [source]}]))
    assert config.backup is not None
    init_repository(config.backup, config.host)
    results: list = []
    run = run_backup(config, emit=results.append)
    assert run.ok, run.summary
    warnings = results[0].details["warnings"]
    for name in ("link.txt", "fifo.txt", "dir.txt", "big-fifo.bin"):
        assert f"{source / name}: replaced during backup, skipped" in warnings, warnings
    assert f"{source / 'renamed.txt'}: changed during backup" in warnings, warnings
    repo = open_repository(config.backup)
    snapshot = repo.find_snapshot(results[0].details["snapshot"])
    files = {
        os.path.basename(e.path): (e, b"".join(repo.load_blob(bytes.fromhex(c)) for c in e.chunks))
        for e in repo.read_tree(snapshot)
        if e.type == "file"
    }
    assert set(files) == {"renamed.txt", "kept.txt"}, sorted(files)
    renamed, content = files["renamed.txt"]
    assert content == b"saved by a rename over it\n"
    assert renamed.mode == 0o640  # the mode of the file read, not of the one listed
    assert files["kept.txt"][1] == b"never touched\n"


def test_a_whole_read_continues_after_short_reads_and_sees_growth() -> None:
    """`_read_whole` against a pipe, whose reads return what has been written so far:
    a short read is not the end, more than the stat's size is growth (None)."""

    def read_with_writer(parts: list[bytes], size: int) -> bytes | None:
        read_end, write_end = os.pipe()

        def write() -> None:
            with os.fdopen(write_end, "wb", buffering=0) as out:
                for part in parts:
                    out.write(part)
                    time.sleep(0.05)  # the reader has taken what came so far

        writer = threading.Thread(target=write)
        writer.start()
        try:
            return _read_whole(read_end, size)
        finally:
            writer.join()
            os.close(read_end)

    assert read_with_writer([b"a" * 100, b"b" * 100, b"c" * 56], 256) == (
        b"a" * 100 + b"b" * 100 + b"c" * 56
    )
    assert read_with_writer([b"a" * 100, b"b" * 157], 256) is None  # grew by one byte
    assert read_with_writer([b"a" * 100], 256) == b"a" * 100  # shrank: what is there
    assert read_with_writer([], 0) == b""
