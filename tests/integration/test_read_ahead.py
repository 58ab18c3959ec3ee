"""The archiver's read-ahead: files to read are opened and asked of the kernel in
batches while the walk runs ahead (`Archiver._tree_lines`). Running ahead must change
nothing of what is stored or said, hold no handle past its use, and ask the kernel for
the files that will be read only."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.backup import archiver as archiver_module
from agents.backup.archiver import Archiver, ArchiveResult, WalkItem
from agents.backup.repository import Repository
from agents.backup.runner import init_repository, open_repository, run_backup
from agents.config import Config
from tests.integration.test_files_source import load, write_config


def open_handles() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def make_tree(source: Path) -> None:
    """Directories of a few files each (batches cross them), empty files, links, a
    hard-linked pair, a FIFO and nested directories."""
    for d in range(12):
        folder = source / f"d{d:02}" / ("deep" if d % 3 == 0 else "")
        folder.mkdir(parents=True, exist_ok=True)
        for f in range(d % 5 + 1):
            (folder / f"f{f}").write_bytes(os.urandom(100 + 997 * f * d))
        (folder / "empty").touch()
    (source / "d01" / "link").symlink_to("f0")
    os.link(source / "d02" / "f0", source / "d02" / "hard")
    os.mkfifo(source / "d03" / "fifo")


def change_tree(source: Path) -> None:
    """A third of the files rewritten, some added, one directory removed; and, for each
    directory, a `victim` the walk's hook removes before the walk reaches it."""
    for n, path in enumerate(sorted(source.rglob("f*"))):
        if n % 3 == 0 and path.is_file():
            path.write_bytes(os.urandom(300 + n))
    for d in (4, 7):
        (source / f"d{d:02}" / "new").write_bytes(os.urandom(5000))
    for path in sorted((source / "d10").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (source / "d10").rmdir()


def make_victims(source: Path) -> None:
    """A `victim` in each directory where the walk's hook removes it (see `backed_up`)."""
    for folder in ("d01", "d02", "d03", "d04", "d07"):
        if (source / folder).is_dir():
            (source / folder / "victim").write_bytes(b"removed before the walk gets here")


def archive(repo: Repository, source: Path, **limits: Any) -> ArchiveResult:
    """One backup of `source` with the latest snapshot as parent, nothing stored as a
    snapshot; `limits` set the read-ahead's module settings for it."""
    saved = {name: getattr(archiver_module, name) for name in limits}
    for name, value in limits.items():
        setattr(archiver_module, name, value)
    make_victims(source)
    try:
        with repo.writer() as writer:
            result = Archiver(repo, writer).archive(
                [source], [], False, repo.find_snapshot("latest")
            )
            writer.flush()
            return result
    finally:
        for name, value in saved.items():
            setattr(archiver_module, name, value)


def first_backup(work: Path, source: Path) -> Config:
    """A repository under `work` with one backup of `source`; the config."""
    config = load(write_config(work, [{"name": "files", "paths": [source]}]))
    assert config.backup is not None
    init_repository(config.backup, config.host)
    assert run_backup(config).ok
    return config


@pytest.fixture
def backed_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Config, Path]:
    """A tree backed up once, then changed; times taken as settled (`_settled` would
    mark the files written just now, which is not what is compared here); a walk that
    removes a directory's `victim`, when there is one, as it yields a name before it;
    and a warning said as some items are handled, between those the walk says."""
    source = tmp_path / "src"
    make_tree(source)
    config = first_backup(tmp_path, source)
    change_tree(source)
    monkeypatch.setattr(archiver_module, "_now_ns", lambda: 2**62)
    real_walk = archiver_module.walk

    def removing_walk(*args: Any, **kwargs: Any) -> Iterator[WalkItem]:
        for item in real_walk(*args, **kwargs):
            yield item  # the walk has not stat'ed the next names yet
            if item.path.rsplit("/", 1)[1] in ("new", "link", "hard", "fifo"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(os.path.dirname(item.path), "victim"))

    monkeypatch.setattr(archiver_module, "walk", removing_walk)
    real_entry = Archiver._entry

    def saying_entry(
        self: Archiver, item: WalkItem, old: Any, links: Any, result: Any, *rest: Any
    ) -> Any:
        if item.path.rsplit("/", 1)[1] in ("new", "f0"):  # said as the item is handled
            result.warnings.append(f"{item.path}: handled")
        return real_entry(self, item, old, links, result, *rest)

    monkeypatch.setattr(Archiver, "_entry", saying_entry)
    return config, source


def repository(config: Config) -> Repository:
    assert config.backup is not None
    return open_repository(config.backup)


def summary(config: Config, result: ArchiveResult) -> dict[str, Any]:
    """What a backup stored and said. The directories' times are left out: making and
    removing the victims changes them between two backups."""
    repo = repository(config)  # opened again: it reads the index the backup wrote
    lines = b"".join(repo.load_blob(bytes.fromhex(blob)) for blob in result.tree)
    entries = [json.loads(line) for line in lines.splitlines()]
    for entry in entries:
        if entry["type"] == "dir":
            del entry["mtime_ns"], entry["ctime_ns"]
    return {
        "tree": entries,
        "warnings": result.warnings,
        "unreadable": result.unreadable,
        "missing": result.missing,
        "counts": (result.files, result.dirs, result.bytes, result.bytes_read),
        "reused": result.files_reused,
    }


@pytest.mark.parametrize(
    "limits",
    [
        {"READ_AHEAD_FILES": 1, "READ_AHEAD": 1024},
        {"READ_AHEAD_FILES": 2, "READ_AHEAD": 5},
        {"READ_AHEAD_FILES": 16, "READ_AHEAD_BYTES": 2000},
        {"READ_AHEAD_FILES": 1000, "READ_AHEAD": 10_000},
    ],
)
def test_reading_ahead_stores_and_says_what_reading_in_turn_does(
    backed_up: tuple[Config, Path], limits: dict[str, int]
) -> None:
    """The same tree, the same parent: without read-ahead and with batches of every
    size (one file, a few items across directories, a byte limit, the whole tree), the
    tree lines are the same, the warnings the same lines in the same order
    (vanished files said where the walk met them), the counts the same; and no handle
    is left open."""
    config, source = backed_up
    repo = repository(config)
    before = open_handles()
    plain = summary(config, archive(repo, source, _FADVISE=False))
    assert open_handles() == before
    assert any(w.endswith("victim: vanished during backup") for w in plain["warnings"])
    assert any(w.endswith("/new: handled") for w in plain["warnings"])
    assert plain["reused"] > 0 and plain["counts"][3] > 0  # some read again, some not
    ahead = summary(config, archive(repo, source, **limits))
    assert open_handles() == before
    assert ahead == plain


def test_only_the_files_that_will_be_read_are_asked_of_the_kernel(
    backed_up: tuple[Config, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asking for an unchanged file would read it from disk for nothing: only the new
    and changed files are, each once, as much of it as is read in one call, and an
    unchanged file with extended attributes (its parent line is decoded, not taken
    as it is) is not among them."""
    config, source = backed_up
    tagged = source / "d08" / "f1"
    try:
        os.setxattr(tagged, "user.label", b"kept")
    except OSError:
        pytest.skip("no user.* extended attributes on this file system")
    assert run_backup(config).ok  # the attribute is in the parent from here
    asked: list[tuple[str, int, int]] = []
    real = os.posix_fadvise

    def spy(fd: int, offset: int, length: int, advice: int) -> None:
        if advice == os.POSIX_FADV_WILLNEED:
            asked.append((os.readlink(f"/proc/self/fd/{fd}"), offset, length))
        real(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", spy)
    (source / "d08" / "f2").write_bytes(b"changed again")
    result = archive(repository(config), source)
    read = {path for path, _, _ in asked}
    assert str(source / "d08" / "f2") in read
    assert str(tagged) not in read
    assert {os.path.relpath(path, source) for path in read} == {"d08/f2"}
    assert all(offset == 0 and length == os.path.getsize(p) for p, offset, length in asked)
    assert len(asked) == len(read)
    assert result.bytes_read == sum(length for _, _, length in asked)  # each one was read


def test_a_backup_interrupted_within_a_batch_closes_what_it_opened(
    backed_up: tuple[Config, Path],
) -> None:
    """Stopped at each point of a backup that reads ahead: the interruption is raised,
    and every file and directory handle the batch and the walk held is closed."""
    config, source = backed_up
    repo = repository(config)
    before = open_handles()
    for stop_at in (1, 3, 7, 15, 40):
        calls = 0

        def should_stop() -> bool:
            nonlocal calls
            calls += 1
            return calls >= stop_at  # noqa: B023 - read within this iteration

        make_victims(source)
        with pytest.raises(InterruptedError), repo.writer() as writer:
            Archiver(repo, writer, should_stop=should_stop).archive(
                [source], [], False, repo.find_snapshot("latest")
            )
        assert open_handles() == before, stop_at


def test_a_parent_line_that_cannot_be_read_is_said_before_what_its_file_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parent's line for a changed file cannot be decoded, and the file grows as it
    is read: the parent's warning comes first, then the file's, as without read-ahead
    (the failure is said as the item is handled, not when the batch is done)."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("a", "b", "c"):
        (source / name).write_bytes(name.encode() * 100)
    config = first_backup(tmp_path, source)
    monkeypatch.setattr(archiver_module, "_now_ns", lambda: 2**62)
    real_line = archiver_module._file_line

    def bad_for_b(line: str) -> dict[str, Any]:
        if json.loads(line)["path"].endswith("/b"):
            raise ValueError("a damaged line")
        return real_line(line)

    monkeypatch.setattr(archiver_module, "_file_line", bad_for_b)
    real_store = Archiver._store_fd

    def growing(self: Archiver, fd: int, size: int) -> Any:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if path.endswith("/b"):
            with open(path, "ab") as handle:
                handle.write(b"+")
        return real_store(self, fd, size)

    monkeypatch.setattr(Archiver, "_store_fd", growing)
    said = []
    for limits in ({"_FADVISE": False}, {}):
        (source / "b").write_bytes(b"b changed " * 10)
        said.append(archive(repository(config), source, **limits).warnings)
    plain, ahead = said
    assert len(plain) == 2, plain
    assert plain[0].startswith("parent snapshot ") and plain[1].endswith("b: changed during backup")
    assert ahead == plain


def run_limited(limit: int, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a process whose open-file limit (soft and hard) is `limit`."""

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return subprocess.run(
        [sys.executable, "-m", "agents", *args],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limited,  # only sets a limit: nothing else runs in the child yet
    )


def tree_of_many_directories(source: Path) -> None:
    """A file first, then 600 directories of one file each and 500 empty ones, and a
    chain of 50 nested directories each with a file before its subdirectory."""
    source.mkdir()
    (source / "0-first").write_bytes(b"v1")
    for i in range(600):
        (source / f"d{i:03}").mkdir()
        (source / f"d{i:03}" / "f").write_bytes(f"data {i}".encode())
    for i in range(500):
        (source / f"e{i:03}").mkdir()
    deep = source / "z"
    for _ in range(50):
        deep.mkdir()
        (deep / "a").write_bytes(os.urandom(100))
        deep = deep / "d"


@pytest.mark.parametrize("limit", [64, 256, 1024])
def test_a_low_open_file_limit_backs_up_what_it_did_without_read_ahead(
    tmp_path: Path, limit: int
) -> None:
    """A batch holds the directories its items are in and the files opened ahead: under
    a low open-file limit that must never cost a readable directory (reported as
    "Too many open files" and left out) or the repository's own files. Below 1,024 no
    batch is made; at 1,024 a batch holds at most a 64th of it."""
    source = tmp_path / "src"
    tree_of_many_directories(source)
    config_path = write_config(
        tmp_path, [{"name": "files", "paths": [source], "tolerate_unreadable": True}]
    )
    init = run_limited(limit, "backup", "init", "--config", str(config_path))
    assert init.returncode == 0, init.stderr
    first = run_limited(limit, "backup", "run", "--json", "--config", str(config_path))
    assert first.returncode == 0, first.stdout + first.stderr
    (source / "0-first").write_bytes(b"v2, read again")  # starts a batch
    for deep in (source / "z").rglob("a"):
        deep.write_bytes(os.urandom(200))
    second = run_limited(limit, "backup", "run", "--json", "--config", str(config_path))
    assert second.returncode == 0, second.stdout + second.stderr
    details = json.loads(second.stdout)["sources"][0]["details"]
    assert details["files"] == 1 + 600 + 50, details
    assert details["warnings"] == [] and details.get("unreadable", []) == [], details
    assert "Too many open files" not in second.stdout + second.stderr


def test_a_batch_holds_a_bounded_number_of_handles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One file to read, then a thousand directories: the directories the batch keeps
    open and the files it opened ahead stay within `READ_AHEAD_HANDLES` (before the
    bound, every directory pulled stayed open: 1,030 handles)."""
    source = tmp_path / "src"
    tree_of_many_directories(source)
    config = first_backup(tmp_path, source)
    (source / "0-first").write_bytes(b"v2, read again")
    real_walk = archiver_module.walk
    counts: list[int] = []

    def counting_walk(*args: Any, **kwargs: Any) -> Iterator[WalkItem]:
        for item in real_walk(*args, **kwargs):
            counts.append(len(open_handles()))
            yield item

    monkeypatch.setattr(archiver_module, "walk", counting_walk)
    before = len(open_handles())
    with repository(config).writer() as writer:
        repo = repository(config)
        Archiver(repo, writer).archive([source], [], False, repo.find_snapshot("latest"))
    deepest = 50 + len(source.parts) + 2  # the walk's handle a level, and the writer's
    assert max(counts) - before <= archiver_module.READ_AHEAD_HANDLES + deepest, max(counts)
    assert max(counts) - before > 8  # the batch did hold some: the bound is what is tested


LEVELS = 1010


def remove_deep(top: Path) -> None:
    """A chain of `d` directories each holding `a`, removed from the bottom up."""
    depth = 0
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    with contextlib.suppress(FileNotFoundError):
        while True:
            deeper = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd, depth = deeper, depth + 1
    os.close(fd)
    for level in range(depth, -1, -1):
        path = os.path.join(str(top), *["d"] * level)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(path, "a"))
        if level:
            os.rmdir(path)


def test_a_tree_as_deep_as_the_open_file_limit_allows_is_backed_up_whole(tmp_path: Path) -> None:
    """The walk holds a handle a directory level: 1,010 levels under a limit of 1,024,
    each with a new file walked before the next level, backed up whole before the
    read-ahead, must still be. A batch holds fewer handles as the walk goes deeper, and
    none where the walk needs them all (a second attack found the deepest levels
    reported "Too many open files" and left out, at limits 1,024 to 4,096)."""
    source = tmp_path / "src"
    source.mkdir()
    fd = os.open(source, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(LEVELS):
            file = os.open("a", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
            os.write(file, os.urandom(100))
            os.close(file)
            os.mkdir("d", dir_fd=fd)
            deeper = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = deeper
    finally:
        os.close(fd)
    config_path = write_config(
        tmp_path, [{"name": "files", "paths": [source], "tolerate_unreadable": True}]
    )
    try:
        assert run_limited(1024, "backup", "init", "--config", str(config_path)).returncode == 0
        run = run_limited(1024, "backup", "run", "--json", "--config", str(config_path))
    finally:
        remove_deep(source)  # pytest's clean-up recurses a level a call: too deep for it
    assert run.returncode == 0, run.stdout + run.stderr
    details = json.loads(run.stdout)["sources"][0]["details"]
    assert details["files"] == LEVELS and details["warnings"] == [], details
    assert details.get("unreadable", []) == [], details
