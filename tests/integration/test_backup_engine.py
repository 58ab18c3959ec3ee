"""The backup engine against real files, a local repository and S3 over HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents.backup.checker import check
from agents.backup.errors import IntegrityError
from agents.backup.repository import Repository
from agents.backup.restorer import restore
from agents.backup.runner import init_repository, open_repository, run_backup
from agents.backup.snapshot import Snapshot, TreeEntry
from agents.backup.storage import open_storage
from agents.config import Config, parse_config
from tests.support import services
from tests.support.faultproxy import FaultPlan, FaultProxy
from tests.support.trees import fingerprint, make_tree


def write_config(
    tmp_path: Path, repository: str, paths: list[Path], s3: str = "", name: str = "c.yml"
) -> Path:
    key = tmp_path / "repo.key"
    if not key.exists():
        key.write_text("correct horse battery staple\n")
        key.chmod(0o600)
    path_list = ", ".join(f'"{p}"' for p in paths)
    config = tmp_path / name
    config.write_text(
        f"""
host: test-host
state_dir: {tmp_path / "state"}
backup:
  repository: "{repository}"
  password_file: {key}
  {s3}
  sources:
    - {{name: files, kind: files, paths: [{path_list}]}}
"""
    )
    return config


def load(path: Path) -> Config:
    return parse_config(path.read_text(), str(path))


def s3_block(endpoint: str, **extra: str) -> str:
    items = ", ".join(f"{k}: {v}" for k, v in extra.items())
    sep = ", " if items else ""
    return (
        f"s3: {{endpoint_url: '{endpoint}', path_style: true, "
        "access_key_id: '${OPSAGENT_T_AK}', "
        f"secret_access_key: '${{OPSAGENT_T_SK}}'{sep}{items}}}"
    )


@pytest.fixture(autouse=True)
def _s3_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSAGENT_T_AK", "testing")
    monkeypatch.setenv("OPSAGENT_T_SK", "testing")


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tree") / "source"
    make_tree(root)
    return root


def restored(target: Path, source: Path) -> Path:
    return target / str(source).lstrip("/")


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_round_trip_dedup_and_small_change(
    backend: str, tree: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    source = tmp_path / "src"
    subprocess.run(["cp", "-a", str(tree), str(source)], check=True)
    if backend == "s3":
        server = request.getfixturevalue("s3_server")
        bucket = request.getfixturevalue("s3_bucket")
        config = load(
            write_config(tmp_path, f"s3://{bucket}/app", [source], s3_block(server.endpoint_url))
        )
    else:
        config = load(write_config(tmp_path, str(tmp_path / "repo"), [source]))
    assert config.backup is not None
    init_repository(config.backup, config.host)

    first = run_backup(config)
    assert first.ok, first.summary
    repo = open_repository(config.backup)
    packs_after_first = {i.key for i in repo.storage.list("data/")}
    target = tmp_path / "restore1"
    snap = repo.find_snapshot("latest")
    result = restore(repo, snap, target)
    assert result.refused == [] and result.errors == []
    assert fingerprint(restored(target, source)) == fingerprint(source)
    assert snap.facts == {
        "kind": "files",
        "files": snap.stats["files"],
        "bytes": snap.stats["bytes"],
    }

    second = run_backup(config)
    assert second.ok
    assert second.details["bytes_added"] == 0
    assert {i.key for i in repo.storage.list("data/")} == packs_after_first

    big = source / "media" / "random.bin"
    data = bytearray(big.read_bytes())
    data[len(data) // 2] ^= 0xFF
    big.write_bytes(bytes(data))
    third = run_backup(config)
    assert third.ok
    repo = open_repository(config.backup)
    latest = repo.find_snapshot("latest")
    assert latest.stats["blobs_new"] <= 3  # one data chunk, plus the changed tree chunk(s)
    assert latest.stats["bytes_read"] == big.stat().st_size  # only the changed file was read
    assert 0 < third.details["bytes_added"] < 6 * 2**20
    target3 = tmp_path / "restore3"
    restore(repo, latest, target3)
    assert fingerprint(restored(target3, source)) == fingerprint(source)
    report = check(repo, read_data=True)
    assert report.ok, report.errors
    assert report.snapshots == 3 and report.packs_read == report.packs


def test_flipped_byte_found_by_check_and_restore(tmp_path: Path) -> None:
    source = tmp_path / "src"
    make_tree(source, small_files=50, large_mib=2)
    config_path = write_config(tmp_path, str(tmp_path / "repo"), [source])
    config = load(config_path)
    assert config.backup is not None
    init_repository(config.backup, config.host)
    assert run_backup(config).ok
    repo = open_repository(config.backup)
    snap = repo.find_snapshot("latest")
    packs = sorted((tmp_path / "repo" / "data").rglob("*"))
    pack = max((p for p in packs if p.is_file()), key=lambda p: p.stat().st_size)
    raw = bytearray(pack.read_bytes())
    raw[100] ^= 0x01
    pack.write_bytes(bytes(raw))

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "agents",
            "backup",
            "check",
            "--read-data",
            "--config",
            str(config_path),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"error: pack {pack.name[:12]} does not match its hash (corrupted)" in proc.stdout
    assert f"error: pack {pack.name[:12]} is used by snapshot(s) {snap.short_id}" in proc.stdout
    structure_only = subprocess.run(
        [sys.executable, "-m", "agents", "backup", "check", "--config", str(config_path)],
        capture_output=True,
        text=True,
    )
    assert structure_only.returncode == 0  # the damage is inside the data

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "agents",
            "restore",
            "latest",
            "--to",
            str(tmp_path / "out"),
            "--config",
            str(config_path),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1  # the damaged files are named; the others restored
    lines = proc.stderr.splitlines()
    assert lines and "Traceback" not in proc.stderr
    assert all(line.startswith("damaged (") for line in lines)
    assert "fails authentication" in proc.stderr and pack.name[:12] in proc.stderr


def test_wrong_key_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "a").write_text("a")
    config_path = write_config(tmp_path, str(tmp_path / "repo"), [source])
    config = load(config_path)
    assert config.backup is not None
    init_repository(config.backup, config.host)
    before = sorted(p for p in (tmp_path / "repo").rglob("*"))
    (tmp_path / "repo.key").write_text("wrong password\n")
    proc = subprocess.run(
        [sys.executable, "-m", "agents", "backup", "run", "--config", str(config_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 3
    assert proc.stderr == (
        f"opsagent: {tmp_path / 'repo'}: wrong password: no repository key opens with it\n"
    )
    assert sorted(p for p in (tmp_path / "repo").rglob("*")) == before


def test_init_refuses_existing_repository(tmp_path: Path) -> None:
    config_path = write_config(tmp_path, str(tmp_path / "repo"), [tmp_path])
    proc = [sys.executable, "-m", "agents", "backup", "init", "--config", str(config_path)]
    first = subprocess.run(proc, capture_output=True, text=True)
    assert first.returncode == 0 and "Losing it loses every backup" in first.stdout
    config_before = (tmp_path / "repo" / "config").read_bytes()
    # the same password: a rerun (after a kill past the last write) has nothing to do
    second = subprocess.run(proc, capture_output=True, text=True)
    assert second.returncode == 0 and "nothing to do" in second.stdout, second.stderr
    assert (tmp_path / "repo" / "config").read_bytes() == config_before
    # another password: refused, untouched
    (tmp_path / "repo.key").write_text("another password\n")
    third = subprocess.run(proc, capture_output=True, text=True)
    assert third.returncode == 3
    assert "refusing to overwrite" in third.stderr
    assert (tmp_path / "repo" / "config").read_bytes() == config_before


def test_malicious_manifest_restores_nothing_outside(tmp_path: Path) -> None:
    config = load(write_config(tmp_path, str(tmp_path / "repo"), [tmp_path]))
    assert config.backup is not None
    repo = init_repository(config.backup, config.host)
    outside = tmp_path / "outside"
    outside.mkdir()
    with repo.writer() as writer:
        from agents.backup.pack import BlobType

        payload = b"pwned\n"
        chunk = writer.add(BlobType.DATA, payload).hex()
        common = {
            "mode": 0o644,
            "mtime_ns": 0,
            "size": len(payload),
            "chunks": (chunk,),
            "chunk_sizes": (len(payload),),
        }
        entries = [
            TreeEntry(path="../outside/escape1", type="file", **common),
            TreeEntry(path=str(outside / "escape2"), type="file", **common),
            TreeEntry(path="ok/../../outside/escape3", type="file", **common),
            TreeEntry(path="lnk", type="symlink", mode=0o777, mtime_ns=0, target=str(outside)),
            TreeEntry(path="lnk/escape4", type="file", **common),
            TreeEntry(path="pre/escape5", type="file", **common),
            TreeEntry(path="inside/fine.txt", type="file", **common),
        ]
        lines = "\n".join(e.to_json() for e in entries) + "\n"
        tree = [writer.add(BlobType.TREE, lines.encode()).hex()]
        writer.flush()
    from datetime import UTC, datetime

    snap = repo.save_snapshot(
        Snapshot(
            id="",
            time=datetime.now(UTC),
            host="evil",
            source="files",
            source_kind="files",
            paths=("/",),
            tree=tuple(tree),
        )
    )
    target = tmp_path / "target"
    target.mkdir()
    os.symlink(outside, target / "pre")  # a link already in the target points outside
    result = restore(repo, repo.load_snapshot(snap.id), target)
    assert list(outside.iterdir()) == []
    assert (target / "inside" / "fine.txt").read_bytes() == b"pwned\n"
    assert len(result.refused) == 4  # escape1-3 by name, escape5 through the existing link
    # links are made last: lnk/escape4 went into a real directory, and the link that
    # would have replaced it was not made over it
    assert (target / "lnk" / "escape4").is_file() and not (target / "lnk").is_symlink()
    assert result.skipped_existing == ["lnk"]
    assert result.files == 2


def test_kill_9_mid_backup_leaves_no_snapshot_and_rerun_reuses(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for i in range(12):
        (source / f"blob-{i:02d}.bin").write_bytes(os.urandom(16 * 2**20))
    config_path = write_config(tmp_path, str(tmp_path / "repo"), [source])
    config = load(config_path)
    assert config.backup is not None
    init_repository(config.backup, config.host)
    proc = subprocess.Popen(
        [sys.executable, "-m", "agents", "backup", "run", "--config", str(config_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    index_dir = tmp_path / "repo" / "index"
    services.wait_for(
        "a first index checkpoint",
        lambda: index_dir.exists() and any(not p.name.startswith(".") for p in index_dir.iterdir()),
        timeout=60,
        proc=proc,
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    repo = open_repository(config.backup)
    assert repo.snapshot_ids() == []
    uploaded = len(list((tmp_path / "repo" / "data").rglob("*")))
    assert uploaded > 0

    result = run_backup(config)
    assert result.ok, result.summary
    total = sum(p.stat().st_size for p in source.iterdir())
    # what the killed run uploaded and indexed (8 packs of ~16 MiB at least) was reused;
    # a pack holds whole chunks only, so allow one pack of slack
    assert result.details["bytes_added"] <= total - 7 * 16 * 2**20
    repo = open_repository(config.backup)
    assert len(repo.snapshot_ids()) == 1
    report = check(repo, read_data=True)
    assert report.ok, report.errors
    target = tmp_path / "out"
    restore(repo, repo.find_snapshot("latest"), target)
    assert fingerprint(restored(target, source)) == fingerprint(source)


def test_backup_through_faulty_s3(
    s3_server: services.S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    source = tmp_path / "src"
    make_tree(source, small_files=300, large_mib=20, seed=3)
    plan = FaultPlan(rate=0.2, seed=11, forced=["503", "drop", "reset", "503"])
    proxy = FaultProxy(s3_server.port, plan).start()
    try:
        config = load(
            write_config(
                tmp_path,
                f"s3://{s3_bucket}/faulty",
                [source],
                s3_block(proxy.endpoint_url, max_attempts="12"),
            )
        )
        assert config.backup is not None
        init_repository(config.backup, config.host)
        result = run_backup(config)
        assert result.ok, result.summary
        repo = open_repository(config.backup)
        target = tmp_path / "out"
        restore(repo, repo.find_snapshot("latest"), target)
        assert fingerprint(restored(target, source)) == fingerprint(source)
        report = check(repo, read_data=True)
        assert report.ok, report.errors
        assert proxy.faults() >= 6
        assert {r.fault for r in proxy.requests if r.fault} == {"503", "drop", "reset"}
    finally:
        proxy.stop()


def test_missing_bucket_fails_backup_in_one_line(
    s3_server: services.S3Server, tmp_path: Path
) -> None:
    config_path = write_config(
        tmp_path, "s3://no-such-bucket-y/app", [tmp_path], s3_block(s3_server.endpoint_url)
    )
    proc = subprocess.run(
        [sys.executable, "-m", "agents", "backup", "init", "--config", str(config_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "OPSAGENT_T_AK": "x", "OPSAGENT_T_SK": "y"},
    )
    assert proc.returncode == 3
    assert proc.stderr == (
        f"opsagent: bucket no-such-bucket-y at {s3_server.endpoint_url}: bucket does not exist\n"
    )


def test_snapshots_json_and_show(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "f.txt").write_text("hello")
    config_path = write_config(tmp_path, str(tmp_path / "repo"), [source])
    config = load(config_path)
    assert config.backup is not None
    init_repository(config.backup, config.host)
    assert run_backup(config, tags=["nightly"]).ok
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "agents",
            "backup",
            "snapshots",
            "--json",
            "--config",
            str(config_path),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    listing = json.loads(proc.stdout)
    assert len(listing) == 1
    assert listing[0]["source"] == "files" and listing[0]["tags"] == ["nightly"]
    assert listing[0]["stats"]["files"] == 1 and listing[0]["host"] == "test-host"
    show = subprocess.run(
        [
            sys.executable,
            "-m",
            "agents",
            "backup",
            "show",
            listing[0]["short_id"],
            "--ls",
            "--json",
            "--config",
            str(config_path),
        ],
        capture_output=True,
        text=True,
    )
    assert show.returncode == 0, show.stderr
    entries = json.loads(show.stdout)["entries"]
    assert any(e["path"].endswith("src/f.txt") and e["size"] == 5 for e in entries)


def test_integrity_error_on_swapped_blob(tmp_path: Path) -> None:
    config = load(write_config(tmp_path, str(tmp_path / "repo"), [tmp_path]))
    assert config.backup is not None
    repo = init_repository(config.backup, config.host)
    with repo.writer() as writer:
        from agents.backup.pack import BlobType

        a = writer.add(BlobType.DATA, b"a" * 1000)
        b = writer.add(BlobType.DATA, b"b" * 1000)
        writer.flush()
    loc_b = repo.location(b)
    assert loc_b is not None
    sealed_b = repo.storage.get(f"data/{loc_b.pack[:2]}/{loc_b.pack}", loc_b.offset, loc_b.length)
    with pytest.raises(IntegrityError, match="fails authentication"):
        repo.open_blob(a, sealed_b, loc_b.pack)
    reopened = Repository.open(open_storage(str(tmp_path / "repo")), "correct horse battery staple")
    assert reopened.load_blob(a) == b"a" * 1000


def test_a_backup_whose_lock_was_taken_for_stale_commits_nothing(tmp_path: Path) -> None:
    """Another process removed this backup's lock (a pause or a wrong clock made it look
    stale) and may have pruned its packs: the snapshot must not be written on them."""
    from agents.backup import locks

    source = tmp_path / "src"
    make_tree(source, small_files=5, large_mib=1)
    config = load(write_config(tmp_path, str(tmp_path / "repo"), [source]))
    assert config.backup is not None
    repo = init_repository(config.backup, config.host)
    real_enter = locks.RepositoryLock.__enter__

    def enter_then_lose(self: locks.RepositoryLock) -> locks.RepositoryLock:
        held = real_enter(self)
        self.storage.delete([self.key])  # what the other process did
        return held

    locks.RepositoryLock.__enter__ = enter_then_lose  # type: ignore[method-assign]
    try:
        results: list = []
        run = run_backup(config, emit=results.append, repo=repo)
    finally:
        locks.RepositoryLock.__enter__ = real_enter  # type: ignore[method-assign]
    assert not run.ok
    source_result = next(r for r in results if r.kind == "backup_source")
    assert "lock was removed by another process" in source_result.summary
    assert repo.snapshot_ids() == []


def test_locks_exclusive_blocks_and_stale_expire(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from agents.backup.locks import LockError, RepositoryLock

    storage = open_storage(str(tmp_path / "repo"))
    with (
        RepositoryLock(storage, exclusive=False),
        RepositoryLock(storage, exclusive=False),
        pytest.raises(LockError, match="locked by a shared lock"),
    ):
        RepositoryLock(storage, exclusive=True).__enter__()
    with (
        RepositoryLock(storage, exclusive=True),
        pytest.raises(LockError, match="locked exclusively"),
    ):
        RepositoryLock(storage, exclusive=False).__enter__()
    assert list(storage.list("locks/")) == []
    old_time = datetime.now(UTC) - timedelta(minutes=31)
    old = old_time.isoformat()
    stale = {"host": "dead-host", "pid": 1, "time": old, "exclusive": True}
    storage.put("locks/stale", json.dumps(stale).encode())
    # a lock dated 31 minutes back by a host whose clock is wrong is not stale: the
    # storage wrote it just now
    with pytest.raises(LockError, match="locked exclusively by dead-host"):
        RepositoryLock(storage, exclusive=False).__enter__()
    os.utime(tmp_path / "repo" / "locks" / "stale", (old_time.timestamp(),) * 2)
    with RepositoryLock(storage, exclusive=True):
        assert [i.key for i in storage.list("locks/")] != ["locks/stale"]
    assert list(storage.list("locks/")) == []
    dead = subprocess.Popen(["true"])
    dead.wait()
    now = datetime.now(UTC).isoformat()
    killed = {"host": socket.gethostname(), "pid": dead.pid, "time": now, "exclusive": True}
    storage.put("locks/killed", json.dumps(killed).encode())
    with RepositoryLock(storage, exclusive=False):  # a lock of a dead local process is stale
        pass
    assert list(storage.list("locks/")) == []
    # a pid no process of this host can be proven gone by (a forged or hand-edited lock:
    # true, which Python counts as the int 1) holds until it ages out
    for pid in (True, "1", None, 0):
        forged = {"host": socket.gethostname(), "pid": pid, "time": now, "exclusive": True}
        storage.put("locks/forged", json.dumps(forged).encode())
        with pytest.raises(LockError, match="locked exclusively"):
            RepositoryLock(storage, exclusive=False).__enter__()
        assert [i.key for i in storage.list("locks/")] == ["locks/forged"]
    storage.delete(["locks/forged"])


def test_two_processes_back_up_into_one_repository(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    make_tree(first, small_files=200, large_mib=8, seed=5)
    make_tree(second, small_files=200, large_mib=8, seed=6)
    config_a = write_config(tmp_path, str(tmp_path / "repo"), [first], name="a.yml")
    config_b = write_config(tmp_path, str(tmp_path / "repo"), [second], name="b.yml")
    config = load(config_a)
    assert config.backup is not None
    init_repository(config.backup, config.host)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "agents", "backup", "run", "--config", str(c)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for c in (config_a, config_b)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    repo = open_repository(config.backup)
    assert len(repo.snapshot_ids()) == 2
    report = check(repo, read_data=True)
    assert report.ok, report.errors
    assert sorted(s.paths[0] for s in repo.snapshots()) == [str(first), str(second)]
    for snap in repo.snapshots():
        target = tmp_path / f"out-{snap.short_id}"
        restore(repo, snap, target)
        restored_root = restored(target, Path(snap.paths[0]))
        assert fingerprint(restored_root) == fingerprint(Path(snap.paths[0]))


def test_large_file_streams_in_bounded_memory(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    big = source / "sparse.img"
    with open(big, "wb") as handle:
        handle.truncate(5 * 2**30)  # 5 GiB, read in full, stored once (every chunk is the same)
        handle.seek(2**30)
        handle.write(os.urandom(64 * 2**20))
    config_path = write_config(tmp_path, str(tmp_path / "repo"), [source])
    config = load(config_path)
    assert config.backup is not None
    init_repository(config.backup, config.host)
    proc = subprocess.Popen(
        [sys.executable, "-m", "agents", "backup", "run", "--json", "--config", str(config_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    out = proc.stdout.read() if proc.stdout else b""
    assert os.waitstatus_to_exitcode(status) == 0, proc.stderr.read() if proc.stderr else ""
    peak_mib = usage.ru_maxrss / 1024
    assert peak_mib < 500, f"peak RSS {peak_mib:.0f} MiB"
    run = json.loads(out)["sources"][0]["details"]
    assert run["bytes_read"] == 5 * 2**30
    assert run["bytes_added"] < 80 * 2**20


def test_sockets_are_skipped_with_a_note(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "file").write_text("data")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(source / "sock"))
        config = load(write_config(tmp_path, str(tmp_path / "repo"), [source]))
        assert config.backup is not None
        init_repository(config.backup, config.host)
        results: list = []
        run = run_backup(config, emit=results.append)
    assert run.ok
    assert results[0].details["warnings"] == [f"{source / 'sock'}: special file skipped"]
    repo = open_repository(config.backup)
    snap = repo.find_snapshot("latest")
    assert snap.warnings == (f"{source / 'sock'}: special file skipped",)
    assert {e.path.rsplit("/", 1)[-1] for e in repo.read_tree(snap)} == {"src", "file"}


def test_a_lock_waits_for_a_conflicting_one_up_to_lock_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prune that starts while a backup holds its shared lock waits for it (up to
    backup.lock_wait) instead of failing and opening a case."""
    import threading

    from agents.backup import locks
    from agents.backup.locks import LockError, RepositoryLock

    monkeypatch.setattr(locks, "LOCK_POLL", 0.1)
    storage = open_storage(str(tmp_path / "repo"))
    held = RepositoryLock(storage, exclusive=False).__enter__()
    with pytest.raises(LockError, match="locked by a shared lock"):
        RepositoryLock(storage, exclusive=True, wait=0.3).__enter__()
    release = threading.Timer(0.8, held.__exit__, args=(None, None, None))
    release.start()
    started = time.monotonic()
    with RepositoryLock(storage, exclusive=True, wait=30):
        waited = time.monotonic() - started
    release.join()
    assert 0.5 < waited < 10
    assert list(storage.list("locks/")) == []


def test_an_older_agent_refuses_a_newer_repository_format(tmp_path: Path) -> None:
    """The repository carries its format version; a newer one is refused with one line
    and nothing written, never half-understood."""
    from agents.backup.errors import BackupError

    storage = open_storage(str(tmp_path / "repo"))
    Repository.init(storage, "pw", "h", "u")
    info = json.loads(storage.get("config"))
    info["version"] += 1
    storage.put("config", json.dumps(info).encode())
    before = sorted(i.key for i in storage.list(""))
    with pytest.raises(BackupError, match=r"repository format \d+ is newer than this agent"):
        Repository.open(storage, "pw")
    assert sorted(i.key for i in storage.list("")) == before
