"""Damage is contained and repairable: a damaged snapshot, index file or pack never
blocks a backup, is reported (and opens a case), and the documented repair commands
bring the repository back to a clean `check --read-data` with every file that still
exists somewhere restored byte for byte. And a killed backup resumes on S3 without
uploading again what it had stored."""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from agents.backup.index import Location
from agents.backup.repository import Repository
from agents.backup.runner import open_repository
from agents.backup.snapshot import Snapshot
from agents.config import Config, parse_config
from tests.support import crashpoints
from tests.support.services import S3Server
from tests.support.trees import fingerprint


def _config(tmp_path: Path, repository: str, s3: str = "", pack_size: str = "64KiB") -> Path:
    key = tmp_path / "repo.key"
    key.write_text("damage password\n")
    key.chmod(0o600)
    path = tmp_path / "config.yml"
    path.write_text(
        f"""
host: damage-host
state_dir: {tmp_path / "state"}
backup:
  repository: "{repository}"
  password_file: {key}
  pack_size: {pack_size}
  {s3}
  sources: [{{name: files, kind: files, paths: ["{tmp_path / "source"}"]}}]
  retention: {{keep_last: 10}}
cases: {{store: "sqlite:///{tmp_path / "cases.db"}"}}
"""
    )
    return path


def _source(root: Path, seed: int = 1) -> None:
    rng = random.Random(seed)
    (root / "docs").mkdir(parents=True, exist_ok=True)
    for n in range(8):
        (root / "docs" / f"f{n}.bin").write_bytes(rng.randbytes(20_000 + n * 3_000))


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agents", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _ok(proc: subprocess.CompletedProcess[str], code: int = 0) -> None:
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def _load(path: Path) -> Config:
    return parse_config(path.read_text(), str(path))


def _repo(config: Path) -> Repository:
    cfg = _load(config).backup
    assert cfg is not None
    return open_repository(cfg)


def _first_chunk(repo: Repository, snapshot: Snapshot, suffix: str) -> Location:
    """Where the first chunk of the snapshot's file ending in `suffix` is stored."""
    entry = next(e for e in repo.read_tree(snapshot) if e.path.endswith(suffix))
    location = repo.location(bytes.fromhex(entry.chunks[0]))
    assert location is not None
    return location


def _flip(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if offset is None else offset] ^= 0x40
    path.write_bytes(bytes(data))


def _restored(tmp_path: Path, config: Path, snapshot: str, name: str) -> dict:  # type: ignore[type-arg]
    target = tmp_path / name
    _ok(_cli(config, "restore", snapshot, "--to", str(target)))
    return fingerprint(target / str(tmp_path / "source").lstrip("/"))


@pytest.fixture
def repo_with_two(tmp_path: Path) -> tuple[Path, list[str], dict]:  # type: ignore[type-arg]
    config = _config(tmp_path, str(tmp_path / "repo"))
    _source(tmp_path / "source")
    _ok(_cli(config, "backup", "init"))
    _ok(_cli(config, "backup", "run"))
    first = fingerprint(tmp_path / "source")
    (tmp_path / "source" / "docs" / "new.txt").write_text("second\n")
    _ok(_cli(config, "backup", "run"))
    ids = [s.id for s in _repo(config).snapshots()]
    return config, ids, first


def test_a_damaged_snapshot_is_skipped_reported_and_forgettable(
    tmp_path: Path,
    repo_with_two: tuple[Path, list[str], dict],  # type: ignore[type-arg]
) -> None:
    config, (older, newer), _ = repo_with_two
    _flip(tmp_path / "repo" / "snapshots" / older)

    listing = _cli(config, "backup", "snapshots", "--json")
    _ok(listing)
    assert [s["id"] for s in json.loads(listing.stdout)] == [newer]
    assert f"damaged: snapshot {older[:8]} does not match its hash" in listing.stderr

    run = _cli(config, "backup", "run", "--json")
    _ok(run)  # never blocks a backup
    out = json.loads(run.stdout)
    assert out["sources"][0]["status"] == "ok"
    assert out["repository"]["status"] == "failed"
    assert older[:8] in out["repository"]["summary"]
    cases = _cli(config, "cases", "list", "--json")
    _ok(cases)
    open_cases = [c for c in json.loads(cases.stdout) if c["status"] != "resolved"]
    assert any("backup/repository" in c["title"] for c in open_cases), open_cases

    forget = _cli(config, "backup", "forget")
    _ok(forget)
    assert f"snapshot {older[:8]} is damaged and was left alone" in forget.stderr
    # prune refuses: deleting what only the damaged snapshot uses would make a good copy
    # of it (a replica, an old object version) useless; removing it is the operator's call
    packs = sorted((tmp_path / "repo" / "data").rglob("*"))
    prune = _cli(config, "backup", "prune")
    _ok(prune, 3)
    assert f"`opsagent backup forget {older[:8]}`" in prune.stderr
    assert sorted((tmp_path / "repo" / "data").rglob("*")) == packs
    assert (tmp_path / "repo" / "snapshots" / older).exists()

    restore = _cli(config, "restore", "latest", "--to", str(tmp_path / "latest"))
    _ok(restore)
    assert f"snapshot {older[:8]} is damaged and was not considered for `latest`" in (
        restore.stderr
    )

    _ok(_cli(config, "backup", "forget", older[:10]))
    _ok(_cli(config, "backup", "prune"))
    assert not (tmp_path / "repo" / "snapshots" / older).exists()
    again = _cli(config, "backup", "run", "--json")
    _ok(again)
    assert json.loads(again.stdout)["repository"]["status"] == "ok"
    cases = json.loads(_cli(config, "cases", "list", "--json").stdout)
    assert all(c["status"] == "resolved" for c in cases if "backup/repository" in c["title"])
    check = _cli(config, "backup", "check", "--read-data")
    _ok(check)


def test_a_damaged_index_never_blocks_and_repair_rebuilds_it(
    tmp_path: Path,
    repo_with_two: tuple[Path, list[str], dict],  # type: ignore[type-arg]
) -> None:
    config, (older, _newer), first = repo_with_two
    for index_file in (tmp_path / "repo" / "index").iterdir():
        _flip(index_file)
    check = _cli(config, "backup", "check")
    _ok(check, 1)
    assert check.stdout.count("(run `opsagent backup repair index`)") >= 2
    assert "2 snapshot(s)" in check.stdout  # it went on past the damaged index

    run = _cli(config, "backup", "run", "--json")
    _ok(run)  # the packs no readable index names are indexed from their own headers
    details = json.loads(run.stdout)["sources"][0]["details"]
    assert details["bytes_added"] < 1000, details  # nothing stored again

    repair = _cli(config, "backup", "repair", "index")
    _ok(repair)
    assert "index rebuilt" in repair.stdout
    _ok(_cli(config, "backup", "check", "--read-data"))
    assert _restored(tmp_path, config, older, "r1") == first


def test_a_damaged_blob_is_named_then_healed_by_repair_and_a_backup(
    tmp_path: Path,
    repo_with_two: tuple[Path, list[str], dict],  # type: ignore[type-arg]
) -> None:
    config, (older, newer), first = repo_with_two
    repo = _repo(config)
    location = _first_chunk(repo, repo.load_snapshot(older), "docs/f3.bin")
    pack = tmp_path / "repo" / "data" / location.pack[:2] / location.pack
    _flip(pack, location.offset + location.length // 2)

    check = _cli(config, "backup", "check", "--read-data")
    _ok(check, 1)
    assert f"pack {location.pack[:12]}" in check.stdout
    assert f"snapshot(s) {', '.join(sorted([older[:8], newer[:8]]))}" in check.stdout
    assert "docs/f3.bin" in check.stdout

    repair = _cli(config, "backup", "repair", "index", "--read-data")
    _ok(repair)
    assert "1 damaged blob(s) left out of the index" in repair.stderr
    _ok(_cli(config, "backup", "run"))  # the file is still in the source: stored again
    _ok(_cli(config, "backup", "check", "--read-data"))
    assert _restored(tmp_path, config, older, "healed") == first


def test_lost_data_is_cut_out_by_repair_snapshots_and_named(
    tmp_path: Path,
    repo_with_two: tuple[Path, list[str], dict],  # type: ignore[type-arg]
) -> None:
    config, (older, newer), first = repo_with_two
    repo = _repo(config)
    location = _first_chunk(repo, repo.load_snapshot(older), "docs/f5.bin")
    (tmp_path / "repo" / "data" / location.pack[:2] / location.pack).unlink()
    (tmp_path / "source" / "docs" / "f5.bin").unlink()  # gone from the source too

    prune = _cli(config, "backup", "prune")
    _ok(prune, 3)  # refuses: snapshots need data that is in no pack
    assert "repair snapshots" in prune.stderr
    _ok(_cli(config, "backup", "repair", "index"))
    dry = _cli(config, "backup", "repair", "snapshots", "--dry-run")
    _ok(dry, 1)
    # one line a snapshot (the names of what each lost are checked in the JSON below)
    assert {line.split(":")[0] for line in dry.stdout.splitlines()} == {
        f"would rewrite {older[:8]}",
        f"would rewrite {newer[:8]}",
    }
    assert {s.id for s in _repo(config).snapshots()} == {older, newer}
    repair = _cli(config, "backup", "repair", "snapshots", "--json")
    _ok(repair, 1)
    rewritten = json.loads(repair.stdout)["repaired"]
    assert {r["snapshot"] for r in rewritten} == {older, newer}
    assert all(any(p.endswith("docs/f5.bin") for p in r["lost"]) for r in rewritten)
    _ok(_cli(config, "backup", "check", "--read-data"))
    replacement = next(r["replacement"] for r in rewritten if r["snapshot"] == older)
    restored = _restored(tmp_path, config, replacement, "repaired")
    named = next(r["lost"] for r in rewritten if r["snapshot"] == older)
    prefix = str(tmp_path / "source").lstrip("/") + "/"
    lost = {p.removeprefix(prefix) for p in named}
    assert "docs/f5.bin" in lost  # with whatever else shared its pack
    assert restored == {k: v for k, v in first.items() if k not in lost}
    show = json.loads(_cli(config, "backup", "show", replacement[:8], "--json").stdout)
    assert show["repaired_from"] == older and "repaired" in show["tags"]
    assert any(w.startswith("lost in repair:") and "f5.bin" in w for w in show["warnings"])
    _ok(_cli(config, "backup", "prune"))
    _ok(_cli(config, "backup", "repair", "snapshots"))  # nothing left to repair: exit 0


def test_a_killed_backup_resumes_without_uploading_again(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAMAGE_AK", "testing")
    monkeypatch.setenv("DAMAGE_SK", "testing")
    s3 = (
        f"s3: {{endpoint_url: '{s3_server.endpoint_url}', path_style: true,"
        " access_key_id: '${DAMAGE_AK}', secret_access_key: '${DAMAGE_SK}'}"
    )
    config = _config(tmp_path, f"s3://{s3_bucket}/resume", s3, pack_size="256KiB")
    source = tmp_path / "source"
    source.mkdir()
    rng = random.Random(7)
    for n in range(24):
        (source / f"media-{n}.bin").write_bytes(rng.randbytes(400_000))
    env = {"DAMAGE_AK": "testing", "DAMAGE_SK": "testing"}
    argv = ["backup", "run", "--config", str(config)]
    assert crashpoints.run(["backup", "init", "--config", str(config)], 0, env).exit_code == 0
    killed = crashpoints.run(argv, 20, env)  # the lock, then 19 packs
    assert killed.killed
    repo = _repo(config)
    before = repo.stored_packs()
    assert len(before) >= 15 and repo.snapshot_ids() == []
    done = crashpoints.run(argv, 0, env)
    assert done.exit_code == 0, done.output
    repo = _repo(config)
    after = repo.stored_packs()
    old_blobs = {e.id for p, size in before.items() for e in repo.read_pack_header(p, size)}
    new_packs = {p: size for p, size in after.items() if p not in before}
    again = sum(
        e.length
        for p, size in new_packs.items()
        for e in repo.read_pack_header(p, size)
        if e.id in old_blobs
    )
    uploaded_before = sum(before.values())
    assert again < 0.10 * uploaded_before, (again, uploaded_before)
    (snapshot,) = repo.snapshots()
    target = tmp_path / "restored"
    from agents.backup.restorer import restore

    restore(repo, snapshot, target)
    assert fingerprint(target / str(source).lstrip("/")) == fingerprint(source)


def test_junk_objects_never_block_and_are_cleaned_or_named(
    tmp_path: Path,
    repo_with_two: tuple[Path, list[str], dict],  # type: ignore[type-arg]
) -> None:
    config, (older, _newer), first = repo_with_two
    repo_dir = tmp_path / "repo"
    rng = random.Random(3)
    (repo_dir / "keys" / "junk-list").write_text("[]")
    (repo_dir / "keys" / "junk-dict").write_text('{"kdf": 1}')
    (repo_dir / "keys" / "junk-bytes").write_bytes(rng.randbytes(64))
    fake_pack = "ab" * 32
    (repo_dir / "data" / "ab").mkdir(exist_ok=True)
    (repo_dir / "data" / "ab" / fake_pack).write_bytes(rng.randbytes(1000))
    (repo_dir / "data" / "zz").mkdir()
    (repo_dir / "data" / "zz" / "not-a-pack").write_bytes(rng.randbytes(100))
    junk_index = "ef" * 32
    (repo_dir / "index" / junk_index).write_bytes(rng.randbytes(100))
    (repo_dir / "index" / "README.txt").write_text("not ours\n")
    junk_snapshot = "cd" * 32
    (repo_dir / "snapshots" / junk_snapshot).write_bytes(rng.randbytes(100))
    (repo_dir / "snapshots" / "folder-marker").write_bytes(b"")

    keys = _cli(config, "backup", "key", "list", "--json")
    _ok(keys)
    assert len(json.loads(keys.stdout)) == 1
    run = _cli(config, "backup", "run", "--json")
    _ok(run)
    health = json.loads(run.stdout)["repository"]
    assert health["status"] == "failed"
    assert {d.split(":")[0] for d in health["details"]["damaged"]} == {
        f"snapshot {junk_snapshot[:8]}",
        f"index {junk_index[:12]}",
        f"pack {fake_pack[:12]}",
    }
    check = _cli(config, "backup", "check")
    _ok(check, 1)
    assert "data/zz/not-a-pack is not a pack" in check.stdout
    assert "snapshots/folder-marker is not" in check.stdout
    assert "index/README.txt is not an index file" in check.stdout
    _ok(_cli(config, "backup", "forget", junk_snapshot[:8]))
    _ok(_cli(config, "backup", "repair", "index"))
    _ok(_cli(config, "backup", "prune"))
    assert not (repo_dir / "data" / "ab" / fake_pack).exists()
    assert (repo_dir / "data" / "zz" / "not-a-pack").exists()  # not ours: left alone
    assert (repo_dir / "index" / "README.txt").exists()
    assert not (repo_dir / "index" / junk_index).exists()
    _ok(_cli(config, "backup", "check", "--read-data"))
    assert _restored(tmp_path, config, older, "after-junk") == first


def test_an_unreadable_snapshot_stops_prune_and_check_as_the_service_user() -> None:
    """Permission denied is no damage and no absence: prune must not take the snapshot for
    gone and delete its data (as root this cannot be seen: root reads everything)."""
    from tests.support import unprivileged
    from tests.support.unprivileged import NOBODY

    runner = unprivileged.runner_or_skip()
    base = Path(tempfile.mkdtemp(prefix="opsagent-unpriv-", dir="/tmp"))
    try:
        base.chmod(0o755)
        config = _config(base, str(base / "repo"))
        _source(base / "source")
        _ok(_cli(config, "backup", "init"))
        _ok(_cli(config, "backup", "run"))
        (base / "source" / "docs" / "only-in-newer.bin").write_bytes(os.urandom(50_000))
        _ok(_cli(config, "backup", "run"))
        newer = _repo(config).find_snapshot("latest").id
        subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(base)], check=True)
        (base / "repo" / "snapshots" / newer).chmod(0)
        packs = sorted((base / "repo" / "data").rglob("*"))

        def as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
            argv = ["-m", "agents", *args, "--config", str(config)]
            return unprivileged.run(runner, argv, timeout=120)

        for args in (("backup", "prune"), ("backup", "snapshots")):
            proc = as_nobody(*args)
            assert proc.returncode == 3, (args, proc.stdout, proc.stderr)
            assert f"cannot read snapshots/{newer}: Permission denied" in proc.stderr
            assert "Traceback" not in proc.stderr
        check = as_nobody("backup", "check")  # goes on, and counts it as an error
        assert check.returncode == 1, check.stdout + check.stderr
        assert f"cannot read snapshots/{newer}: Permission denied" in check.stdout
        assert sorted((base / "repo" / "data").rglob("*")) == packs  # nothing deleted
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_damaged_pack_header_is_rewritten_by_repair_packs(
    tmp_path: Path,
    repo_with_two: tuple[Path, list[str], dict],  # type: ignore[type-arg]
) -> None:
    config, (older, _newer), first = repo_with_two
    pack = max((tmp_path / "repo" / "data").rglob("*/*"), key=lambda p: p.stat().st_size)
    _flip(pack, pack.stat().st_size - 10)  # inside the sealed header: every blob is intact
    check = _cli(config, "backup", "check", "--read-data")
    _ok(check, 1)
    assert f"`opsagent backup repair packs {pack.name[:12]}`" in check.stdout
    assert _restored(tmp_path, config, older, "before") == first  # the data reads fine

    _ok(_cli(config, "backup", "repair", "packs", pack.name[:12]))
    assert not pack.exists()
    _ok(_cli(config, "backup", "check", "--read-data"))
    assert _restored(tmp_path, config, older, "after") == first


def test_a_lost_pack_stored_again_is_read_from_its_new_pack(
    tmp_path: Path,
    repo_with_two: tuple[Path, list[str], dict],  # type: ignore[type-arg]
) -> None:
    config, (_older, _newer), _ = repo_with_two
    for pack in (tmp_path / "repo" / "data").rglob("*/*"):
        pack.unlink()  # every pack: all data must come from the next backup
    run = _cli(config, "backup", "run", "--json")
    _ok(run)
    assert json.loads(run.stdout)["sources"][0]["details"]["bytes_added"] > 100_000
    for attempt in range(3):  # the index order once decided which copy was read
        target = tmp_path / f"latest-{attempt}"
        _ok(_cli(config, "restore", "latest", "--to", str(target)))
        restored = fingerprint(target / str(tmp_path / "source").lstrip("/"))
        assert restored == fingerprint(tmp_path / "source")


def test_dry_runs_write_nothing_and_future_times_are_refused(
    tmp_path: Path,
    repo_with_two: tuple[Path, list[str], dict],  # type: ignore[type-arg]
) -> None:
    config, _, _ = repo_with_two
    repo_dir = tmp_path / "repo"
    orphan = _repo(config)
    # a pack no index knows (as a killed backup leaves one): reconciling would index it
    index_files = sorted(repo_dir.joinpath("index").iterdir())
    index_files[-1].unlink()
    before = sorted(p for p in repo_dir.rglob("*") if p.is_file())
    _ok(_cli(config, "backup", "prune", "--dry-run"))
    _ok(_cli(config, "backup", "repair", "snapshots", "--dry-run"))
    assert sorted(p for p in repo_dir.rglob("*") if p.is_file()) == before
    assert orphan is not None

    future = _cli(config, "backup", "run", "--time", "9999-12-31T23:59:59-14:00")
    _ok(future, 2)
    assert "is in the future" in future.stderr


def test_a_damaged_tree_part_loses_only_its_entries(tmp_path: Path) -> None:
    from dataclasses import replace

    from agents.backup.pack import BlobType
    from agents.backup.snapshot import encode_tree

    config = _config(tmp_path, str(tmp_path / "repo"))
    source = tmp_path / "source"
    for n in range(90):
        (source / f"d{n % 3}").mkdir(parents=True, exist_ok=True)
        (source / f"d{n % 3}" / f"file-{n:05d}.txt").write_text(f"{n}\n")
    _ok(_cli(config, "backup", "init"))
    _ok(_cli(config, "backup", "run"))
    repo = _repo(config)
    whole = repo.find_snapshot("latest")
    entries = list(repo.read_tree(whole))
    # the same tree in three blobs (a large tree is cut like this), cut mid-line
    data = encode_tree(entries)
    cuts = [0, len(data) // 3 + 7, 2 * len(data) // 3 + 5, len(data)]
    with repo.writer() as writer:
        tree = [writer.add(BlobType.TREE, data[a:b]).hex() for a, b in itertools.pairwise(cuts)]
        writer.flush()
    snapshot = repo.save_snapshot(replace(whole, id="", tree=tuple(tree)))
    location = repo.location(bytes.fromhex(tree[1]))
    assert location is not None
    pack = tmp_path / "repo" / "data" / location.pack[:2] / location.pack
    _flip(pack, location.offset + location.length // 2)

    target = tmp_path / "out"
    proc = _cli(config, "restore", snapshot.id[:10], "--to", str(target), "--json")
    _ok(proc, 1)
    out = json.loads(proc.stdout)
    assert [d["path"] for d in out["damaged"]] == ["(tree part 2 of 3: entries unknown)"]
    restored = {p.name for p in target.rglob("*.txt")}
    assert 30 < len(restored) < 90 and out["files"] == len(restored)
    for path in target.rglob("*.txt"):
        assert path.read_text() == f"{int(path.name[5:10])}\n"


def test_following_checks_hints_recovers_everything_the_source_still_has(
    tmp_path: Path,
    repo_with_two: tuple[Path, list[str], dict],  # type: ignore[type-arg]
) -> None:
    """Each `check` message names the next command; following them in order must converge
    to a clean check without losing a file the source still has."""
    config, (older, _newer), first = repo_with_two
    repo = _repo(config)
    location = _first_chunk(repo, repo.load_snapshot(older), "docs/f2.bin")
    _flip(
        tmp_path / "repo" / "data" / location.pack[:2] / location.pack,
        location.offset + location.length // 2,
    )
    commands = []
    for _ in range(6):
        check = _cli(config, "backup", "check", "--read-data")
        if check.returncode == 0:
            break
        first_hint = next(
            line for line in check.stdout.splitlines() if "(run `opsagent backup" in line
        )
        hint = first_hint.split("(run ", 1)[1]
        for command in [c.split("`")[0] for c in hint.split("`opsagent ")[1:]]:
            words = command.split()
            if words[-1] == "packs":  # "repair packs" given without its ID: use check's
                words.append(location.pack[:12])
            commands.append(" ".join(words))
            proc = _cli(config, *words)
            assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    else:
        pytest.fail(f"check never came back clean after {commands}")
    assert commands[:3] == [
        f"backup repair packs {location.pack[:12]}",
        "backup run",
        "backup repair snapshots",
    ], commands
    assert _restored(tmp_path, config, older, "followed") == first


def test_a_damaged_copy_never_takes_the_name_of_a_real_entry(tmp_path: Path) -> None:
    config = _config(tmp_path, str(tmp_path / "repo"))
    source = tmp_path / "source"
    source.mkdir()
    (source / "f2").write_bytes(os.urandom(30_000))
    (source / "f2.damaged").symlink_to("elsewhere")  # a real entry with that name
    _ok(_cli(config, "backup", "init"))
    _ok(_cli(config, "backup", "run"))
    repo = _repo(config)
    location = _first_chunk(repo, repo.find_snapshot("latest"), "/f2")
    _flip(
        tmp_path / "repo" / "data" / location.pack[:2] / location.pack,
        location.offset + location.length // 2,
    )
    target = tmp_path / "out"
    proc = _cli(config, "restore", "latest", "--to", str(target), "--json")
    _ok(proc, 1)
    restored = target / str(source).lstrip("/")
    assert os.readlink(restored / "f2.damaged") == "elsewhere"
    (damaged,) = json.loads(proc.stdout)["damaged"]
    assert damaged["written_as"].endswith("f2.damaged.1")


def test_forget_by_id_dry_run_agrees_with_the_real_run(
    tmp_path: Path,
    repo_with_two: tuple[Path, list[str], dict],  # type: ignore[type-arg]
) -> None:
    config, (older, newer), _ = repo_with_two
    common = next(older[:n] for n in range(1, 64) if older[:n] != newer[:n])[:-1]
    for ref in (common, "nosuch"):
        dry = _cli(config, "backup", "forget", ref, "--dry-run")
        real = _cli(config, "backup", "forget", ref)
        assert dry.returncode == real.returncode == 3, (dry.stderr, real.stderr)
        assert dry.stderr == real.stderr
    _ok(_cli(config, "backup", "forget", older))
    again = _cli(config, "backup", "forget", older)  # a rerun: nothing left to do
    _ok(again)
    assert f"no snapshot {older} (removed already)" in again.stderr
