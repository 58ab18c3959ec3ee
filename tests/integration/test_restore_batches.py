"""A restore works through the tree in batches, so that its memory holds one batch's
plan and not an object per file of the snapshot. Each test makes the batches a few
files long and restores a real snapshot of a local repository, where a batch boundary
falls between a hard link and its first link, between a damaged file and the real
entry whose name its `.damaged` copy could take, and before a storage failure."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agents.backup import restorer
from agents.backup.errors import BackupError, RestoreRefused
from agents.backup.repository import Repository
from agents.backup.runner import init_repository, open_repository, run_backup
from agents.config import parse_config

BATCH = 3


def _contents(root: Path) -> dict[str, tuple[object, ...]]:
    """path -> (mode, mtime, bytes) of the files, the targets of the links, the types of
    the rest (a FIFO is not opened)."""
    out: dict[str, tuple[object, ...]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        rel = path.relative_to(root).as_posix()
        if stat.S_ISREG(st.st_mode):
            out[rel] = (st.st_mode, st.st_mtime_ns, path.read_bytes())
        elif stat.S_ISLNK(st.st_mode):
            out[rel] = ("link", os.readlink(path))
        else:
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode))
    return out


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Batches of BATCH files; the sizes of those written, and at each the number of
    temporaries already pending (only damaged files of earlier batches may be)."""
    monkeypatch.setattr(restorer, "BATCH_FILES", BATCH)
    seen: list[int] = []
    write = restorer._write_files

    def recording(*args: Any) -> None:
        files, pending = args[2], args[7]
        assert all(job.problem for job in pending), "a whole file was left unnamed"
        seen.append(len(files))
        write(*args)

    monkeypatch.setattr(restorer, "_write_files", recording)
    return seen


def _backup(tmp_path: Path, source: Path) -> Repository:
    key = tmp_path / "repo.key"
    key.write_text("correct horse battery staple\n")
    key.chmod(0o600)
    config_path = tmp_path / "c.yml"
    config_path.write_text(
        f"host: test-host\nstate_dir: {tmp_path / 'state'}\n"
        f"backup:\n  repository: {tmp_path / 'repo'}\n  password_file: {key}\n"
        f"  pack_size: 64KiB\n"
        f"  sources:\n    - {{name: files, kind: files, paths: ['{source}']}}\n"
    )
    config = parse_config(config_path.read_text(), str(config_path))
    assert config.backup is not None
    init_repository(config.backup, config.host)
    assert run_backup(config, emit=lambda r: None).ok
    return open_repository(config.backup)


def _source(tmp_path: Path) -> Path:
    """Five directories of files, a hard link whose first link is many files earlier,
    a symbolic link and a FIFO."""
    source = tmp_path / "source"
    for d in range(5):
        (source / f"d{d}").mkdir(parents=True)
        for f in range(7):
            (source / f"d{d}" / f"f{f}.bin").write_bytes(os.urandom(2_000 + 997 * f * d))
    os.link(source / "d0" / "f0.bin", source / "d4" / "z-link.bin")
    (source / "d2" / "to-f1").symlink_to("f1.bin")
    os.mkfifo(source / "d3" / "pipe")
    return source


def _flip_blob(tmp_path: Path, repo: Repository, blob_hex: str) -> None:
    """Flip one byte in the middle of a stored blob (its pack stays in place)."""
    location = repo.location(bytes.fromhex(blob_hex))
    assert location is not None
    pack = tmp_path / "repo" / "data" / location.pack[:2] / location.pack
    with pack.open("r+b") as handle:
        handle.seek(location.offset + location.length // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))


def _entry_of(repo: Repository, suffix: str) -> Any:
    (entry,) = [e for e in repo.read_tree(repo.find_snapshot("latest")) if e.path.endswith(suffix)]
    return entry


def test_a_batched_restore_is_the_source_byte_for_byte(tmp_path: Path, batches: list[int]) -> None:
    source = _source(tmp_path)
    repo = _backup(tmp_path, source)
    target = tmp_path / "out"
    result = restorer.restore(repo, repo.find_snapshot("latest"), target)
    assert (result.errors, result.damaged, result.refused) == ([], [], [])
    assert len(batches) >= 35 // BATCH and max(batches) <= BATCH
    out = target / str(source).lstrip("/")
    assert _contents(out) == _contents(source)
    first, link = out / "d0" / "f0.bin", out / "d4" / "z-link.bin"
    assert first.stat().st_ino == link.stat().st_ino and first.stat().st_nlink == 2
    assert stat.S_ISFIFO((out / "d3" / "pipe").lstat().st_mode)
    assert (result.files, result.symlinks, result.specials) == (36, 1, 1)
    assert not list(target.rglob(".opsagent-restore-*"))


def test_an_include_matching_only_the_last_entry_is_accepted_and_a_typo_refused(
    tmp_path: Path, batches: list[int]
) -> None:
    source = _source(tmp_path)
    repo = _backup(tmp_path, source)
    snapshot = repo.find_snapshot("latest")
    last = str(source / "d4" / "z-link.bin")
    target = tmp_path / "out"
    with pytest.raises(RestoreRefused, match="'/nope' matches nothing"):
        restorer.restore(repo, snapshot, target, include=[last, "/nope"])
    assert not target.exists()  # refused before anything was made
    result = restorer.restore(repo, snapshot, target, include=[last])
    out = target / str(source).lstrip("/")
    # its first link is not restored: the link comes back as a file of its own
    assert result.files == 1 and result.errors == []
    assert [p.name for p in out.rglob("*") if p.is_file()] == ["z-link.bin"]
    assert (out / "d4" / "z-link.bin").read_bytes() == (source / "d0" / "f0.bin").read_bytes()


def test_a_damaged_copy_waits_for_a_later_batch_to_take_its_own_name(
    tmp_path: Path, batches: list[int]
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "a").write_bytes(os.urandom(30_000))
    for n in range(2 * BATCH):  # the real "a.damaged" falls in a later batch
        (source / f"a.{n}").write_bytes(b"filler %d" % n)
    (source / "a.damaged").write_bytes(b"a real file with that name")
    repo = _backup(tmp_path, source)
    snapshot = repo.find_snapshot("latest")
    _flip_blob(tmp_path, repo, _entry_of(repo, "/a").chunks[0])
    target = tmp_path / "out"
    result = restorer.restore(repo, snapshot, target)
    out = target / str(source).lstrip("/")
    assert (out / "a.damaged").read_bytes() == b"a real file with that name"
    (damaged,) = result.damaged
    assert damaged.written_as == str(out / "a.damaged.1")
    assert len((out / "a.damaged.1").read_bytes()) == 30_000
    assert result.skipped_existing == [] and result.files == 2 * BATCH + 1
    assert len(batches) >= 3 and not list(target.rglob(".opsagent-restore-*"))


def test_a_storage_failure_in_a_later_batch_leaves_no_temporary(
    tmp_path: Path, batches: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _source(tmp_path)
    repo = _backup(tmp_path, source)
    snapshot = repo.find_snapshot("latest")
    stream = repo.storage.stream
    calls = 0

    def failing(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if len(batches) >= 4:  # the storage goes away midway through the restore
            raise BackupError("storage unreachable: connection reset")
        return stream(*args, **kwargs)

    monkeypatch.setattr(repo.storage, "stream", failing)
    target = tmp_path / "out"
    with pytest.raises(BackupError, match="unreachable"):
        restorer.restore(repo, snapshot, target, workers=2)
    assert not list(target.rglob(".opsagent-restore-*"))
    out = target / str(source).lstrip("/")
    written = [p for p in out.rglob("*.bin") if p.is_file()]
    assert len(written) >= BATCH * 3  # the earlier batches were named, whole
    for path in written:
        assert path.read_bytes() == (source / path.relative_to(out)).read_bytes()


def test_a_hard_link_to_a_damaged_file_is_a_damaged_copy_too(
    tmp_path: Path, batches: list[int]
) -> None:
    """Found by the attack: the link was dropped with an error, not listed as damaged."""
    source = _source(tmp_path)
    repo = _backup(tmp_path, source)
    _flip_blob(tmp_path, repo, _entry_of(repo, "/d0/f0.bin").chunks[0])
    target = tmp_path / "out"
    result = restorer.restore(repo, repo.find_snapshot("latest"), target)
    out = target / str(source).lstrip("/")
    assert result.errors == []
    assert sorted(Path(d.written_as).name for d in result.damaged) == [
        "f0.bin.damaged",
        "z-link.bin.damaged",
    ]
    assert not (out / "d0" / "f0.bin").exists() and not (out / "d4" / "z-link.bin").exists()
    assert (out / "d4" / "z-link.bin.damaged").stat().st_size == 2_000


def test_a_hard_link_whose_first_link_is_kept_existing_is_its_own_file(
    tmp_path: Path, batches: list[int]
) -> None:
    """Found by the attack: after a killed restore, a rerun lost the link. It must never
    be linked to what already had the first link's name (a stranger's file)."""
    source = _source(tmp_path)
    repo = _backup(tmp_path, source)
    target = tmp_path / "out"
    out = target / str(source).lstrip("/")
    (out / "d0").mkdir(parents=True)
    (out / "d0" / "f0.bin").write_bytes(b"a stranger's file")
    result = restorer.restore(repo, repo.find_snapshot("latest"), target)
    assert result.errors == [] and result.damaged == []
    assert result.skipped_existing == [str(source / "d0" / "f0.bin").lstrip("/")]
    link = out / "d4" / "z-link.bin"
    assert link.read_bytes() == (source / "d0" / "f0.bin").read_bytes()
    assert link.stat().st_ino != (out / "d0" / "f0.bin").stat().st_ino
    assert (out / "d0" / "f0.bin").read_bytes() == b"a stranger's file"


def test_an_include_is_matched_however_it_is_spelled(tmp_path: Path) -> None:
    """Doubled slashes, `.`, `..` and a trailing slash name the same path; `/` is
    everything. The plan (dry run) and the restore agree."""
    source = _source(tmp_path)
    repo = _backup(tmp_path, source)
    snapshot = repo.find_snapshot("latest")
    d1 = str(source / "d1")
    for spelled in (d1.replace("/", "//") + "/", d1 + "/./", d1 + "/../d1", "/" + d1):
        target = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        planned = restorer.plan(repo, snapshot, [spelled])
        result = restorer.restore(repo, snapshot, target, include=[spelled])
        assert result.files == 7 == sum(e.type == "file" for e in planned), spelled
    everything = restorer.restore(repo, snapshot, tmp_path / "all", include=["/"])
    assert everything.files == 36 and everything.refused == []


def test_an_included_damaged_file_leaves_the_excluded_names_free(
    tmp_path: Path, batches: list[int]
) -> None:
    """Found by the attack: `--include X` wrote `X.damaged` over the name of a real,
    excluded entry, which a later full restore then kept as "existing"."""
    source = tmp_path / "source"
    source.mkdir()
    (source / "X").write_bytes(os.urandom(30_000))
    (source / "X.damaged").write_bytes(b"a real file with that name")
    repo = _backup(tmp_path, source)
    _flip_blob(tmp_path, repo, _entry_of(repo, "/X").chunks[0])
    target = tmp_path / "out"
    snapshot = repo.find_snapshot("latest")
    result = restorer.restore(repo, snapshot, target, include=[str(source / "X")])
    out = target / str(source).lstrip("/")
    (damaged,) = result.damaged
    assert damaged.written_as == str(out / "X.damaged.1")
    again = restorer.restore(repo, snapshot, target)
    assert (out / "X.damaged").read_bytes() == b"a real file with that name"
    assert again.skipped_existing == []


def test_an_include_in_a_damaged_file_list_says_so_not_typo(
    tmp_path: Path, batches: list[int]
) -> None:
    """Found by the attack: it was refused as "matches nothing", as for a typo."""
    source = _source(tmp_path)
    repo = _backup(tmp_path, source)
    snapshot = repo.find_snapshot("latest")
    _flip_blob(tmp_path, repo, snapshot.tree[-1])
    with pytest.raises(RestoreRefused, match=r"readable part .* damaged or missing"):
        restorer.restore(repo, snapshot, tmp_path / "out", include=[str(source / "d4")])
    assert not (tmp_path / "out").exists()


def test_a_damaged_copy_is_named_after_its_directory_handle_was_closed(
    tmp_path: Path, batches: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a low open-file limit few directory handles stay open: a damaged file of the
    first batch, named at the end, gets its directory's handle again (the one its batch
    used is closed by then, its number perhaps another directory's)."""
    monkeypatch.setattr(restorer, "_open_file_limit", lambda: 72)  # 4 handles kept
    source = _source(tmp_path)
    repo = _backup(tmp_path, source)
    _flip_blob(tmp_path, repo, _entry_of(repo, "/d0/f3.bin").chunks[0])
    target = tmp_path / "out"
    result = restorer.restore(repo, repo.find_snapshot("latest"), target)
    out = target / str(source).lstrip("/")
    (damaged,) = result.damaged
    assert damaged.written_as == str(out / "d0" / "f3.bin.damaged")
    assert (out / "d0" / "f3.bin.damaged").stat().st_size == (source / "d0/f3.bin").stat().st_size
    assert (out / "d4" / "f6.bin").read_bytes() == (source / "d4" / "f6.bin").read_bytes()
    assert len(batches) >= 5 and not list(target.rglob(".opsagent-restore-*"))


@pytest.mark.parametrize("delay", [0.05, 0.3])
def test_a_restore_killed_midway_leaves_no_temporary_and_no_partial_file(
    tmp_path: Path, delay: float
) -> None:
    """SIGKILL while files are being written: files are written unnamed (O_TMPFILE), so
    nothing of the killed run is left but whole files under their names (named
    temporaries used to stay behind); a rerun restores the rest."""
    source = tmp_path / "source"
    for d in range(30):
        (source / f"d{d}").mkdir(parents=True)
        for n in range(200):
            (source / f"d{d}" / f"f{n}").write_bytes(os.urandom(1000 + 37 * n))
    (source / "big.bin").write_bytes(os.urandom(8 << 20))
    _backup(tmp_path, source)
    target = tmp_path / "target"
    command = [sys.executable, "-m", "agents", "restore", "latest", "--to", str(target)]
    command += ["--config", str(tmp_path / "c.yml")]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not target.exists() and proc.poll() is None:
        time.sleep(0.01)
    time.sleep(delay)
    assert proc.poll() is None, "the restore finished before it could be killed"
    proc.kill()
    proc.wait(timeout=60)
    assert list(target.rglob(".opsagent-restore-*")) == []
    restored = target / source.relative_to("/")
    for path in restored.rglob("*"):
        if path.is_file():
            original = source / path.relative_to(restored)
            assert path.read_bytes() == original.read_bytes(), path
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert _contents(restored) == _contents(source)
