"""Hostile cases for the faster backup engine (whole reads of small files, the parent
tree read in step with the walk, reused tree lines), against the real engine and a
local repository: every one must restore what the source held, byte for byte."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
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
from tests.integration.test_files_source import (
    backed_up_once,
    backed_up_twice,
    by_name,
    cli,
    inside,
    load,
    write_config,
)


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


def test_source_paths_nested_in_or_repeating_another_are_walked_once(
    tmp_path: Path,
) -> None:
    """A source path inside another one, or listed twice, was walked each time: its
    files recorded twice in every snapshot and restored twice ("kept existing"). It is
    now walked once, under the outer path, with a warning naming both; the next backup
    still takes every unchanged file from its parent."""
    source = tmp_path / "src"
    (source / "inner").mkdir(parents=True)
    (source / "top.txt").write_text("top\n")
    (source / "inner" / "deep.txt").write_text("deep\n")
    double = f"/{source}/inner"  # a leading // names the same directory
    paths = [double, source, source / "inner" / ".." / ".", f"/{source}"]
    config = load(write_config(tmp_path, [{"name": "files", "paths": paths}]))
    details = backed_up_twice(config)
    assert (details["files"], details["dirs"]) == (2, 2)
    assert (details["files_reused"], details["bytes_read"]) == (2, 0), details
    assert details["warnings"] == [
        f"{double}: inside source path {source}, backed up once",
        f"{source / 'inner' / '..' / '.'}: inside source path {source}, backed up once",
        f"/{source}: inside source path {source}, backed up once",
    ]
    assert config.backup is not None
    repo = open_repository(config.backup)
    paths_stored = [e.path for e in repo.read_tree(repo.find_snapshot("latest"))]
    assert len(paths_stored) == len(set(paths_stored)) == 4


def test_a_source_path_below_a_link_is_walked_on_its_own(tmp_path: Path) -> None:
    """`[D/lnk, D/lnk/sub]` with `lnk` a link to `D/real`: the nesting check compared
    names, dropped `D/lnk/sub` as inside `D/lnk`, and `D/lnk` is recorded as a link,
    not walked: the files were in no snapshot (the third attack). A path is left out
    only when the walk of the other one enters every directory down to it."""
    top = tmp_path / "D"
    (top / "real" / "sub").mkdir(parents=True)
    (top / "real" / "sub" / "file").write_text("under a link\n")
    (top / "lnk").symlink_to(top / "real")
    (top / "excluded" / "deep").mkdir(parents=True)
    (top / "excluded" / "deep" / "kept").write_text("its own path\n")
    # an excluded source path is not walked: what is under it has its own walk
    paths = [top / "lnk", top / "lnk" / "sub", top, top / "excluded" / "deep", top / "excluded"]
    sources = [{"name": "files", "paths": paths, "exclude": ["excluded"]}]
    config = load(write_config(tmp_path, sources))
    assert config.backup is not None
    init_repository(config.backup, config.host)
    results: list = []
    assert run_backup(config, emit=results.append).ok
    assert results[0].details["warnings"] == [
        f"{top / 'lnk'}: inside source path {top}, backed up once"
    ]
    repo = open_repository(config.backup)
    stored = {e.path: e for e in repo.read_tree(repo.find_snapshot("latest"))}
    rel = str(top).lstrip("/")
    assert stored[f"{rel}/lnk"].type == "symlink"
    assert stored[f"{rel}/lnk/sub/file"].size == len("under a link\n")
    assert stored[f"{rel}/real/sub/file"].size == len("under a link\n")
    assert stored[f"{rel}/excluded/deep/kept"].size == len("its own path\n")


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="dropping root's read-any-directory capabilities needs root and setpriv",
)
def test_a_source_path_below_a_directory_the_walk_cannot_list_is_walked(
    tmp_path: Path,
) -> None:
    """`[src, src/locked/in]` with `locked` 0711 and another user's: the walk of `src`
    cannot list `locked`, so `in` is walked on its own (the fourth attack: it was left
    out as covered, and its files were in no snapshot). As root without
    CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, as the service user runs."""
    locked = tmp_path / "src" / "locked"
    (locked / "in").mkdir(parents=True)
    os.chown(locked, 4321, 4321)
    locked.chmod(0o711)
    probe = (
        "from agents.backup.archiver import _covered; import sys;"
        f"print(_covered('{tmp_path / 'src'}', '{locked / 'in'}', [], False),"
        f" _covered('{tmp_path / 'src'}', '{locked}', [], False))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    unprivileged = subprocess.run(
        ["setpriv", "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-c", probe],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert unprivileged.returncode == 0, unprivileged.stderr
    assert unprivileged.stdout.split() == ["False", "True"]  # locked itself is taken


def test_a_source_path_through_dot_dot_is_stored_resolved_and_restores(tmp_path: Path) -> None:
    """`/x/link/../src` was stored with its `..`, and a restore refuses every name that
    climbs: a backup that could never be restored. The part up to the last `..` is
    resolved as the kernel resolves it (through the link), the rest kept as given."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "plain").write_text("plain\n")
    elsewhere = tmp_path / "elsewhere" / "deep"
    elsewhere.mkdir(parents=True)
    (tmp_path / "link").symlink_to(elsewhere)
    (tmp_path / "elsewhere" / "src").mkdir()
    (tmp_path / "elsewhere" / "src" / "there").write_text("through the link\n")
    given = [tmp_path / "nb" / ".." / "src", tmp_path / "link" / ".." / "src"]
    (tmp_path / "nb").mkdir()
    config_path = write_config(tmp_path, [{"name": "files", "paths": given}])
    assert cli("backup", "init", "--config", str(config_path)).returncode == 0
    done = cli("backup", "run", "--config", str(config_path))
    assert done.returncode == 0, done.stdout + done.stderr
    target = tmp_path / "out"
    back = cli("restore", "latest", "--to", str(target), "--json", "--config", str(config_path))
    assert back.returncode == 0, back.stdout + back.stderr
    assert (inside(target, source) / "plain").read_text() == "plain\n"
    beyond = inside(target, tmp_path / "elsewhere" / "src")
    assert (beyond / "there").read_text() == "through the link\n"


def _deep_chain(top: Path, depth: int, chain: list[Path]) -> None:
    """Directories `top/d/d/...`, `depth` levels, made without recursion; `chain` gets
    each as it is made (a failure midway leaves what to remove: pytest's own clean-up
    of old temporary directories recurses, and fails on a chain this deep)."""
    path = top
    for _ in range(depth):
        path = path / "d"
        path.mkdir()
        chain.append(path)


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
    raised = sys.getrecursionlimit()  # an earlier test or library may have raised it,
    sys.setrecursionlimit(1000)  # and a deeper chain of full paths would pass PATH_MAX
    depth = sys.getrecursionlimit() + 200
    chain: list[Path] = []
    try:
        _deep_chain(source, depth, chain)
        (chain[-1] / "f.txt").write_text("at the bottom\n")
        repo, snapshot, details = backed_up_once(tmp_path, source)
        assert (details["files"], details["dirs"]) == (1, depth + 1)
        (bottom,) = [e for e in repo.read_tree(snapshot) if e.type == "file"]
        assert bottom.path == str(chain[-1] / "f.txt").lstrip("/")
        data = b"".join(repo.load_blob(bytes.fromhex(c)) for c in bottom.chunks)
        assert data == b"at the bottom\n"
    finally:
        _remove_chain(chain)
        sys.setrecursionlimit(raised)


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


def _link_to_file(path: Path, secret: Path) -> None:
    path.unlink()
    path.write_bytes(b"a file where the walk saw a link\n")


SWAPS = {
    "was-link": _link_to_file,  # a symbolic link when listed
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
    (source / "was-link").symlink_to("kept.txt")
    for name in SWAPS:
        if name == "was-link":
            continue
        size = WHOLE_READ + 4096 if name.startswith("big") else 2000
        (source / name).write_bytes(b"o" * size)
        (source / name).chmod(0o644)
    (source / "kept.txt").write_bytes(b"never touched\n")
    real_walk = archiver_module.walk

    def racing_walk(*args: Any, **kwargs: Any) -> Iterator[WalkItem]:
        for item in real_walk(*args, **kwargs):
            swap = SWAPS.get(os.path.basename(item.path))
            if swap is not None:
                swap(Path(item.path), secret)  # after its lstat, before it is read
            yield item

    monkeypatch.setattr(archiver_module, "walk", racing_walk)
    repo, snapshot, details = backed_up_once(tmp_path, source)
    warnings = details["warnings"]
    for name in ("link.txt", "fifo.txt", "dir.txt", "big-fifo.bin", "was-link"):
        assert f"{source / name}: replaced during backup, skipped" in warnings, warnings
    assert f"{source / 'renamed.txt'}: changed during backup" in warnings, warnings
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


def _all_blobs(repo: Any) -> Iterator[bytes]:
    for blob_id, _ in repo.load_index().items():
        yield repo.load_blob(blob_id)


@pytest.mark.parametrize(
    "moment", ["after its listing", "before it is opened", "for a file before it is opened"]
)
def test_a_directory_swapped_for_a_link_leads_the_walk_nowhere_else(
    moment: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer in the source renames a directory away and puts a link to a directory
    outside (holding a file of the same name) in its place: after the walk listed it,
    or after its lstat and before the walk opened it. By paths, the walk would stat
    and read the outside file under the listed name; through directory handles it
    reads what it listed, or skips the directory with a warning, and the outside
    file's bytes are nowhere in the repository."""
    source = tmp_path / "src"
    (source / "d").mkdir(parents=True)
    (source / "d" / "f.txt").write_bytes(b"mine\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f.txt").write_bytes(b"SECRET outside the source\n")
    swapped = source / "d"

    def swap() -> None:
        swapped.rename(source / "d.moved")
        if moment.startswith("for a file"):  # the attack helper's: it failed the source
            swapped.write_bytes(b"a file where the walk saw a directory\n")
        else:
            swapped.symlink_to(outside)

    if moment == "after its listing":
        real_listing = archiver_module._listing

        def listing(fd: int, path: str, report: Any) -> Any:
            entries = real_listing(fd, path, report)
            if path == str(swapped):
                swap()
            return entries

        monkeypatch.setattr(archiver_module, "_listing", listing)
    else:
        real_open = archiver_module._open_dir

        def open_dir(dir_fd: Any, name: str, path: str, st: Any, report: Any) -> Any:
            if path == str(swapped):
                swap()
            return real_open(dir_fd, name, path, st, report)

        monkeypatch.setattr(archiver_module, "_open_dir", open_dir)
    repo, snapshot, details = backed_up_once(tmp_path, source)
    assert not any(b"SECRET" in blob for blob in _all_blobs(repo))
    files = {e.path: e for e in repo.read_tree(snapshot) if e.type == "file"}
    listed = str(swapped / "f.txt").lstrip("/")
    if moment == "after its listing":  # read through the handle of the directory listed
        entry = files[listed]
        assert b"".join(repo.load_blob(bytes.fromhex(c)) for c in entry.chunks) == b"mine\n"
    else:
        assert listed not in files
        warning = f"{swapped}: replaced during backup, skipped"
        assert warning in details["warnings"]


def test_paths_longer_than_path_max_are_backed_up_and_restored(tmp_path: Path) -> None:
    """PATH_MAX (4096) bounds one call's path, not a tree: anyone who can write to the
    source can nest long names deeper than that. By paths, the walk could stat nothing
    down there and the source failed; through directory handles it is a tree like any
    other, and the restore (through handles too) brings it back."""
    source = tmp_path / "src"
    source.mkdir()
    names = [f"level{n:02d}-" + "x" * 200 for n in range(25)]  # 5,200 bytes of path
    fd = os.open(source, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in names:
            os.mkdir(name, dir_fd=fd)
            below = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = below
        out = os.open("deep.txt", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd)
        os.write(out, b"below PATH_MAX\n")
        os.fchmod(out, 0o640)
        os.close(out)
        os.symlink("deep.txt", "link", dir_fd=fd)
    finally:
        os.close(fd)
    config_path = write_config(tmp_path, [{"name": "files", "paths": [source]}])
    config = load(config_path)
    assert config.backup is not None
    init_repository(config.backup, config.host)
    results: list = []
    run = run_backup(config, emit=results.append)
    assert run.ok, run.summary
    assert (results[0].details["files"], results[0].details["dirs"]) == (1, 26)
    target = tmp_path / "restored"
    proc = cli("restore", "latest", "--to", str(target), "--config", str(config_path))
    assert proc.returncode == 0, proc.stderr
    fd = os.open(inside(target, source), os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in names:
            below = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = below
        handle = os.open("deep.txt", os.O_RDONLY, dir_fd=fd)
        try:
            assert os.read(handle, 100) == b"below PATH_MAX\n"
            assert stat.S_IMODE(os.fstat(handle).st_mode) == 0o640
        finally:
            os.close(handle)
        assert os.readlink("link", dir_fd=fd) == "deep.txt"
    finally:
        os.close(fd)
    _remove_long(source, names)  # through handles: rmtree would need the long paths


def _remove_long(top: Path, names: list[str]) -> None:
    fds = [os.open(top, os.O_RDONLY | os.O_DIRECTORY)]
    for name in names:
        fds.append(os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
    os.unlink("deep.txt", dir_fd=fds[-1])
    os.unlink("link", dir_fd=fds[-1])
    for parent, name in reversed(list(zip(fds[:-1], names, strict=True))):
        os.rmdir(name, dir_fd=parent)
    for fd in fds:
        os.close(fd)


def test_a_hard_link_changed_after_its_first_link_was_stored_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hard links are found by inode: a later link of an inode already stored reuses
    the first link's chunks. If the file changed between the walk's two visits (or a
    deleted file's inode number was reused by a new one, which an attacker can arrange),
    those chunks are not its content: it must be read, so the restore gives what the
    source held at its visit, not the first link's bytes. The walk runs one item ahead
    of the reads here, so that it visits the second link after the first is stored
    (with the read-ahead window, it stats both before it reads either, and the second
    is then a link to the content both names held at their visits)."""
    monkeypatch.setattr(archiver_module, "READ_AHEAD", 1)
    source = tmp_path / "src"
    source.mkdir()
    (source / "1-first").write_bytes(b"before\n")
    os.link(source / "1-first", source / "2-second")
    real_walk = archiver_module.walk

    def changing_walk(*args: Any, **kwargs: Any) -> Iterator[WalkItem]:
        for item in real_walk(*args, **kwargs):
            yield item  # handled (stored) by the backup before the walk goes on
            if item.path == str(source / "1-first"):
                (source / "2-second").write_bytes(b"after, and longer\n")

    monkeypatch.setattr(archiver_module, "walk", changing_walk)
    repo, snapshot, _ = backed_up_once(tmp_path, source)
    content = {
        os.path.basename(e.path): b"".join(repo.load_blob(bytes.fromhex(c)) for c in e.chunks)
        for e in repo.read_tree(snapshot)
        if e.type == "file"
    }
    assert content == {"1-first": b"before\n", "2-second": b"after, and longer\n"}


def test_a_file_changed_within_a_timestamp_tick_of_its_read_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change right after the walk read a file can leave its ctime as it was (within
    a timestamp tick; a whole second where the file system keeps seconds): such a file
    is recorded with ctime 0 and read again by the next backup, where taking it from
    the parent would keep the stale data for good. One read well before is reused."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "settled").write_text("written long before the backup\n")
    time.sleep(0.2)
    (source / "fresh").write_text("written as the backup began\n")
    fresh_ctime = os.stat(source / "fresh").st_ctime_ns
    config = load(write_config(tmp_path, [{"name": "files", "paths": [source]}]))
    assert config.backup is not None
    init_repository(config.backup, config.host)
    # "now", as the walk finishes reading it: 10 ms after the fresh file's change
    monkeypatch.setattr(archiver_module, "_now_ns", lambda: fresh_ctime + 10_000_000)
    results: list = []
    assert run_backup(config, emit=results.append).ok
    repo = open_repository(config.backup)
    entries = by_name(repo)
    assert entries["fresh"].ctime_ns == 0
    assert entries["settled"].ctime_ns == os.stat(source / "settled").st_ctime_ns
    monkeypatch.undo()
    results = []
    assert run_backup(config, emit=results.append).ok
    details = results[0].details
    fresh_size = len("written as the backup began\n")
    assert (details["files_reused"], details["bytes_read"]) == (1, fresh_size)
    again = by_name(open_repository(config.backup))
    assert again["fresh"].ctime_ns == fresh_ctime  # settled now: the next one reuses it


def test_every_name_of_a_fresh_hard_link_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second name of a hard link kept the real ctime (and its parent line's
    attributes) while the first was marked for reading again: a change in the same
    second stayed out of every later snapshot under that name (the third attack).
    Every name of the inode gets the mark, and the first name's attributes."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "hl1").write_text("linked\n")
    os.link(source / "hl1", source / "hl2")
    try:
        os.setxattr(source / "hl1", "user.v", b"2")
    except OSError as exc:
        pytest.skip(f"{tmp_path} takes no user.* extended attributes: {exc.strerror}")
    ctime = os.stat(source / "hl1").st_ctime_ns
    config = load(write_config(tmp_path, [{"name": "files", "paths": [source]}]))
    assert config.backup is not None
    init_repository(config.backup, config.host)
    monkeypatch.setattr(archiver_module, "_now_ns", lambda: ctime + 10_000_000)
    assert run_backup(config).ok
    repo = open_repository(config.backup)
    entries = by_name(repo)
    assert entries["hl2"].link_to == entries["hl1"].path
    assert (entries["hl1"].ctime_ns, entries["hl2"].ctime_ns) == (0, 0)
    assert entries["hl1"].xattrs == entries["hl2"].xattrs == (("user.v", b"2"),)


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mkfs.ext4") is None,
    reason="a loop-mounted ext4 with whole-second times needs root and e2fsprogs",
)
def test_an_attribute_set_in_the_second_the_walk_read_it_is_backed_up(tmp_path: Path) -> None:
    """The second attack, on ext4 with 128-byte inodes (whole-second times): an
    attribute set just after the walk read it, in the same second, left size, times
    and inode as they were, and every later backup kept the old value."""
    image, mount = tmp_path / "ext4.img", tmp_path / "mnt"
    mount.mkdir()
    with open(image, "wb") as handle:
        handle.truncate(24 << 20)
    made = subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-I", "128", str(image)], capture_output=True, timeout=60
    )
    assert made.returncode == 0, made.stderr
    mounted = subprocess.run(
        ["mount", "-o", "loop", str(image), str(mount)], capture_output=True, timeout=60
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot loop-mount here: {mounted.stderr.decode().strip()}")
    try:
        target = mount / "f"
        target.write_text("data\n")
        config = load(write_config(tmp_path, [{"name": "files", "paths": [mount]}]))
        assert config.backup is not None
        init_repository(config.backup, config.host)
        repo = open_repository(config.backup)  # the key derived before the race
        for _ in range(10):
            time.sleep(1.01 - time.time() % 1)  # just after a second begins
            os.setxattr(target, "user.v", b"old")
            first = os.stat(target).st_ctime_ns
            assert first % 1_000_000_000 == 0  # whole seconds here
            assert run_backup(config, repo=repo).ok
            os.setxattr(target, "user.v", b"new")
            if os.stat(target).st_ctime_ns == first:  # the race: set, ctime as it was
                break
        else:
            pytest.skip("never backed up within one second here (a loaded machine)")
        assert run_backup(config, repo=repo).ok
        entries = by_name(open_repository(config.backup))
        assert dict(entries["f"].xattrs)["user.v"] == b"new"
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True, timeout=60)
