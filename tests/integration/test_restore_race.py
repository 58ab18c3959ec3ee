"""A process that can write into the restore's target races it: once a directory is
made (or found) and checked, it swaps the directory for a symbolic link to a place
outside the target. Every write of the restore goes through a handle on its directory,
so nothing outside changes, whichever step the swap comes before: the file data, the
hard links, the FIFOs, the symbolic links, or the directories' metadata at the end.
A link already in the target where the snapshot has a directory is refused once, with
all under it. The restore also runs as the unprivileged service user."""

from __future__ import annotations

import os
import resource
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.backup import restorer
from agents.backup.errors import RestoreRefused
from tests.integration.test_restore_batches import _backup, _contents
from tests.support import unprivileged

STAGES = ["_fetch", "_make_hard_links", "_make_nodes", "_make_symlinks", "metadata"]


def _source(tmp_path: Path) -> Path:
    """`d` holds a file whose name also exists outside, a hard-linked pair, a FIFO, a
    symbolic link and a subdirectory; `d` and `d/sub` have modes of their own."""
    source = tmp_path / "source"
    sub = source / "d" / "sub"
    sub.mkdir(parents=True)
    (source / "d" / "victim").write_bytes(b"from the snapshot\n")
    (source / "d" / "h1").write_bytes(os.urandom(3000))
    os.link(source / "d" / "h1", source / "d" / "h2")
    os.mkfifo(source / "d" / "fifo")
    (source / "d" / "lnk").symlink_to("victim")
    (sub / "deep.bin").write_bytes(os.urandom(5000))
    (source / "d" / "victim").chmod(0o640)
    sub.chmod(0o750)
    (source / "d").chmod(0o751)
    return source


def _outside(tmp_path: Path) -> tuple[Path, dict[str, tuple[object, ...]], tuple[int, int]]:
    """A directory the restore must never touch, what it holds, and its own mode and
    time."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"secret\n")
    (outside / "victim").chmod(0o600)
    (outside / "sub").mkdir(mode=0o700)
    os.utime(outside, ns=(10**18, 10**18))
    st = outside.stat()
    return outside, _contents(outside), (st.st_mode, st.st_mtime_ns)


def _swap_before(
    monkeypatch: pytest.MonkeyPatch, stage: str, directory: Path, outside: Path
) -> list[str]:
    """At the first call of `stage`, move `directory` aside (inside the target) and put
    a symbolic link to `outside` in its place; returns where the swap happened."""
    swapped: list[str] = []

    def swap() -> None:
        if not swapped:
            directory.rename(directory.with_name("moved-away"))
            directory.symlink_to(outside)
            swapped.append(stage)

    name = "_apply_at" if stage == "metadata" else stage
    real: Callable[..., Any] = getattr(restorer, name)

    def hooked(*args: Any, **kwargs: Any) -> Any:
        if stage != "metadata" or args[1] is None:  # a directory's metadata: the last step
            swap()
        return real(*args, **kwargs)

    monkeypatch.setattr(restorer, name, hooked)
    return swapped


@pytest.mark.parametrize("overwrite", [False, True], ids=["keep", "overwrite"])
@pytest.mark.parametrize("stage", STAGES)
def test_a_directory_swapped_for_a_link_mid_restore_changes_nothing_outside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stage: str, overwrite: bool
) -> None:
    source = _source(tmp_path)
    repo = _backup(tmp_path, source)
    outside, before, own = _outside(tmp_path)
    target = tmp_path / "target"
    inner = target / source.relative_to("/") / "d"
    swapped = _swap_before(monkeypatch, stage, inner, outside)
    restorer.restore(repo, repo.find_snapshot("latest"), target, overwrite=overwrite)
    assert swapped == [stage], "the race was not run"
    assert _contents(outside) == before
    st = outside.stat()
    assert (st.st_mode, st.st_mtime_ns) == own
    # what the restore wrote went into the directory it had opened, now moved aside
    moved = inner.with_name("moved-away")
    assert (moved / "sub").is_dir()
    if stage == "metadata":  # everything was in place before the swap: all of it whole
        assert _contents(moved) == _contents(source / "d")
        assert stat.S_IMODE(moved.stat().st_mode) == 0o751


def test_the_swap_between_batches_changes_nothing_outside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of one file: the swap comes after the first batch was named, when the
    next batch's directory handle is taken again from the cache or the target."""
    monkeypatch.setattr(restorer, "BATCH_FILES", 1)
    monkeypatch.setattr(restorer, "DIRS_HELD", 1)
    source = _source(tmp_path)
    repo = _backup(tmp_path, source)
    outside, before, _ = _outside(tmp_path)
    target = tmp_path / "target"
    inner = target / source.relative_to("/") / "d"
    name_batch = restorer._name_batch
    calls: list[int] = []

    def hooked(*args: Any) -> None:
        name_batch(*args)
        calls.append(1)
        if len(calls) == 1:
            inner.rename(inner.with_name("moved-away"))
            inner.symlink_to(outside)

    monkeypatch.setattr(restorer, "_name_batch", hooked)
    restorer.restore(repo, repo.find_snapshot("latest"), target, overwrite=True)
    assert len(calls) > 2
    assert _contents(outside) == before


def test_a_link_in_the_target_where_the_snapshot_has_a_directory_is_refused_once(
    tmp_path: Path,
) -> None:
    """Whether it points out of the target or into it, it is refused, listed once (not
    once per file under it), and the rest of the snapshot is restored."""
    source = _source(tmp_path)
    (source / "e").mkdir()
    (source / "e" / "fine.txt").write_text("fine\n")
    repo = _backup(tmp_path, source)
    outside, before, _ = _outside(tmp_path)
    for pointing in (outside, Path("e")):
        target = tmp_path / f"target-{pointing.name}"
        base = target / source.relative_to("/")
        base.mkdir(parents=True)
        (base / "d").symlink_to(pointing)
        result = restorer.restore(repo, repo.find_snapshot("latest"), target, overwrite=True)
        assert result.refused == [str(source.relative_to("/") / "d")]
        assert (base / "e" / "fine.txt").read_text() == "fine\n"
        assert (base / "d").is_symlink() and _contents(outside) == before
        assert not (base / "e" / "victim").exists()


def test_an_unprivileged_restore_brings_back_modes_links_and_fifos(
    repo_for_nobody: tuple[Path, Path, Path],
) -> None:
    """As the service user, through the CLI: directory handles without read permission
    on the directories (O_PATH), modes set through /proc, a read-only directory set
    last."""
    runner = unprivileged.runner_or_skip()
    config, source, target = repo_for_nobody
    argv = ["-m", "agents", "restore", "latest", "--to", str(target), "--config", str(config)]
    proc = unprivileged.run(runner, argv, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    restored = target / source.relative_to("/")
    assert _contents(restored) == _contents(source)
    assert stat.S_IMODE((restored / "ro").stat().st_mode) == 0o555
    assert os.stat(restored / "d" / "h1").st_ino == os.stat(restored / "d" / "h2").st_ino


@pytest.fixture
def repo_for_nobody() -> Iterator[tuple[Path, Path, Path]]:
    """A repository, its config and key, a source and a target, all the service user's,
    in a directory it can reach (pytest's own temporary root is root's alone)."""
    base = Path(tempfile.mkdtemp(prefix="opsagent-race-", dir="/tmp"))
    base.chmod(0o755)
    source = _source(base)
    ro = source / "ro"
    ro.mkdir()
    (ro / "inside.txt").write_text("in a read-only directory\n")
    ro.chmod(0o555)
    _backup(base, source)
    target = base / "target"
    target.mkdir()
    for path in [base, *base.rglob("*")]:
        os.chown(path, unprivileged.NOBODY, unprivileged.NOBODY, follow_symlinks=False)
    yield base / "c.yml", source, target
    for path in [base, *base.rglob("*")]:  # the read-only directories, to remove them
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    shutil.rmtree(base)


def _replace(path: Path, how: str, outside_file: Path) -> None:
    """Put something else under `path`'s name: a hard link to a file outside, a
    symbolic link to it, or a FIFO."""
    swap = path.with_name(path.name + ".swap")
    if how == "hardlink":
        os.link(outside_file, swap)
    elif how == "symlink":
        swap.symlink_to(outside_file)
    else:
        os.mkfifo(swap)
    swap.rename(path)


@pytest.mark.timeout(120)  # a FIFO opened for writing would hang the restore
@pytest.mark.parametrize("how", ["hardlink", "symlink", "fifo"])
@pytest.mark.parametrize("when", ["before-data", "before-naming"])
@pytest.mark.parametrize("unnamed", [False, True], ids=["named", "unnamed"])
def test_a_temporary_replaced_mid_restore_fails_that_file_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str, when: str, unnamed: bool
) -> None:
    """The restore's `.opsagent-restore-*` temporary of `d/victim` is replaced after it
    was made: before its data is written, or once it is whole and before it gets its
    name and metadata. Nothing is written, chmod'ed or linked through the replacement:
    the outside file keeps its bytes and mode, no restored name leads to it, the
    restore goes on and lists that one file as an error. A file written unnamed
    (O_TMPFILE) has no temporary to replace: what is put under the name it would have
    had is left alone, and the file is restored."""
    monkeypatch.setattr(restorer, "ANONYMOUS_TEMPORARIES", unnamed)
    source = _source(tmp_path)
    repo = _backup(tmp_path, source)
    outside, before, _ = _outside(tmp_path)
    target = tmp_path / "target"
    done: list[str] = []

    def swap(dir_fd: int, temp: str) -> None:
        _replace(Path(f"/proc/self/fd/{dir_fd}").resolve() / temp, how, outside / "victim")
        done.append(temp)

    if when == "before-data":
        create = restorer._create

        def hooked_create(job: Any, pending: list[Any]) -> bool:
            made = create(job, pending)
            if made and job.item.rel.name == "victim" and not done:
                swap(job.dir_fd, job.temp)
            return made

        monkeypatch.setattr(restorer, "_create", hooked_create)
    else:
        name_batch = restorer._name_batch

        def hooked_name(dirs: Any, pending: list[Any], *rest: Any) -> None:
            for job in pending:
                if job.item.rel.name == "victim" and not done:
                    swap(job.dir_fd, job.temp)
            name_batch(dirs, pending, *rest)

        monkeypatch.setattr(restorer, "_name_batch", hooked_name)
    result = restorer.restore(repo, repo.find_snapshot("latest"), target, overwrite=True)
    assert done, "the temporary was not replaced"
    assert _contents(outside) == before
    assert oct((outside / "victim").stat().st_mode) == oct(0o100600)
    restored = target / source.relative_to("/") / "d"
    if unnamed:
        assert result.errors == []
        assert (restored / "victim").read_bytes() == (source / "d" / "victim").read_bytes()
    else:
        assert [e for e in result.errors if "replaced" in e] == [
            f"{source.relative_to('/')}/d/victim: its temporary file was replaced while the"
            " restore ran (another process writes here)"
        ]
        assert not (restored / "victim").exists()
    assert (restored / "h1").read_bytes() == (source / "d" / "h1").read_bytes()
    assert (restored / "sub" / "deep.bin").read_bytes() == (source / "d/sub/deep.bin").read_bytes()
    outside_inode = (outside / "victim").stat().st_ino
    planted = {restored / done[0]} if unnamed else set()  # the process's own, left alone
    assert all(p.lstat().st_ino != outside_inode for p in target.rglob("*") if p not in planted)


def test_a_first_link_replaced_before_its_hard_links_is_never_linked_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`d/h1` is restored, then replaced by a hard link to a file outside before `d/h2`
    is linked to it: `d/h2` is written from its own data instead, never linked to the
    stranger."""
    source = _source(tmp_path)
    repo = _backup(tmp_path, source)
    outside, before, _ = _outside(tmp_path)
    target = tmp_path / "target"
    restored = target / source.relative_to("/") / "d"
    make_hard_links = restorer._make_hard_links
    firsts = {"h1", "h2"}

    def hooked(dirs: Any, linked: list[Any], *rest: Any) -> Any:
        (first,) = [p for p in ("h1", "h2") if (restored / p).exists()]
        firsts.discard(first)
        _replace(restored / first, "hardlink", outside / "victim")
        return make_hard_links(dirs, linked, *rest)

    monkeypatch.setattr(restorer, "_make_hard_links", hooked)
    result = restorer.restore(repo, repo.find_snapshot("latest"), target)
    (second,) = firsts
    assert result.errors == []
    assert (restored / second).read_bytes() == (source / "d" / "h1").read_bytes()
    assert (restored / second).stat().st_ino != (outside / "victim").stat().st_ino
    assert _contents(outside) == before


@pytest.mark.parametrize("limit", [32, 64, 1024])
def test_a_low_open_file_limit_still_restores_everything(tmp_path: Path, limit: int) -> None:
    """400 directories, one 150 levels deep, restored by the CLI under a hard open-file
    limit of 32 or 64 (files written under temporary names) or 1024 (some unnamed, held
    open, the rest named): handles are kept within it, nothing is lost."""
    source = tmp_path / "source"
    for n in range(400):
        (source / f"d{n:03}").mkdir(parents=True)
        (source / f"d{n:03}" / "f").write_text(f"{n}\n")
    deep = source.joinpath(*[f"l{n}" for n in range(150)])
    deep.mkdir(parents=True)
    (deep / "bottom").write_text("bottom\n")
    _backup(tmp_path, source)
    target = tmp_path / "target"

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    config = str(tmp_path / "c.yml")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "agents",
            "restore",
            "latest",
            "--to",
            str(target),
            "--config",
            config,
        ],
        preexec_fn=limited,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _contents(target / source.relative_to("/")) == _contents(source)


def test_an_include_climbing_above_the_root_is_refused(tmp_path: Path) -> None:
    source = _source(tmp_path)
    repo = _backup(tmp_path, source)
    snapshot = repo.find_snapshot("latest")
    for include in ("..", "../..", "a/../..", "../" + str(source).lstrip("/")):
        with pytest.raises(RestoreRefused, match="matches nothing"):
            restorer.restore(repo, snapshot, tmp_path / "out", include=[include])
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the swapped-in file belongs to another user")
@pytest.mark.parametrize("overwrite", [False, True])
def test_a_node_swapped_after_it_is_made_never_gets_its_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overwrite: bool
) -> None:
    """An attack on the restore as root found this: right after the FIFO `d/fifo` is
    made, another user's executable is swapped in under its name (a rename exchange);
    root then chowned and chmod'ed that file. The metadata now goes only to a node of
    the type made, owned by the restoring user; the swap is that entry's error."""
    source = _source(tmp_path)
    repo = _backup(tmp_path, source)
    target = tmp_path / "target"
    planted = tmp_path / "planted"
    planted.write_text("echo attacker code\n")
    os.chown(planted, 65534, 65534)
    planted.chmod(0o4755)  # after the chown, which clears the setuid bit
    real_mknod = os.mknod

    def mknod_then_swap(name: Any, *args: Any, **kwargs: Any) -> None:
        real_mknod(name, *args, **kwargs)
        if name == "fifo":
            dir_fd = kwargs["dir_fd"]
            os.unlink(name, dir_fd=dir_fd)
            os.rename(planted, f"/proc/self/fd/{dir_fd}/{name}")

    monkeypatch.setattr(restorer.os, "mknod", mknod_then_swap)
    result = restorer.restore(repo, repo.find_snapshot("latest"), target, overwrite=overwrite)
    swapped = target / source.relative_to("/") / "d" / "fifo"
    st = swapped.lstat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (65534, 65534, 0o4755)
    assert [e for e in result.errors if "fifo" in e] == [
        f"{source.relative_to('/')}/d/fifo: replaced while the restore ran (another"
        " process writes here); not restored"
    ]
    assert result.specials == 0


def test_a_rerun_says_which_hard_links_it_could_not_restore_as_links(tmp_path: Path) -> None:
    """A rerun after a killed restore (first links whole, their other links not yet
    made) keeps the first link and writes the other as a file of its own: the attack
    found this silent. It is a warning now, and a rerun with --overwrite links it."""
    source = _source(tmp_path)
    repo = _backup(tmp_path, source)
    snapshot = repo.find_snapshot("latest")
    (second,) = [e for e in repo.read_tree(snapshot) if e.link_to]
    target = tmp_path / "target"
    assert restorer.restore(repo, snapshot, target).warnings == []
    # a rerun into the whole target keeps both links as they are: nothing is written as
    # a file of its own, so nothing is said to be (a helper's attack found it said)
    rerun = restorer.restore(repo, snapshot, target)
    assert rerun.warnings == []
    assert second.path in rerun.skipped_existing
    (target / second.path).unlink()  # where a kill between naming and linking leaves it
    again = restorer.restore(repo, snapshot, target)
    assert [w for w in again.warnings if "hard link" in w] == [
        f"{second.path}: written as a file of its own, not as a hard link to"
        f" {second.link_to}, which this restore did not write (not included, kept"
        " existing, damaged or failed); restore it too, with --overwrite into this"
        " target or into a fresh one, for the links"
    ]
    assert (target / second.path).stat().st_ino != (target / second.link_to).stat().st_ino
    fixed = restorer.restore(repo, snapshot, target, overwrite=True)
    assert fixed.warnings == []
    assert (target / second.path).stat().st_ino == (target / second.link_to).stat().st_ino
