"""File restores from a damaged repository, and every bad target, through the real CLI.

Damage is real: one byte flipped inside one blob of a pack (found through the index),
or a whole pack deleted. Every good file must come back byte for byte with its
metadata; every damaged one is named and only ever written as `<name>.damaged`.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

from agents.backup.pack import BlobType, pack_key
from agents.backup.repository import Repository
from agents.backup.runner import init_repository, open_repository, run_backup
from agents.backup.snapshot import Snapshot, TreeEntry
from agents.config import Config, parse_config
from agents.restore_test.runner import run_restore_test
from agents.state import StateDB


def make_source(root: Path) -> None:
    """14 small notes, one 300 kB blob shared by three files, a 4.5 MiB file (two chunks
    or more: a chunk is at most 4 MiB) and a symbolic link, each with its mode and time."""
    rng = random.Random(7)
    (root / "notes").mkdir(parents=True)
    for i in range(14):
        (root / "notes" / f"n{i:02d}.txt").write_text(f"note {i}\n" * (i + 1))
    shared = rng.randbytes(300_000)
    (root / "dup").mkdir()
    for name in ("a.bin", "dup/copy.bin", "dup/again.bin"):
        (root / name).write_bytes(shared)
    (root / "big.bin").write_bytes(rng.randbytes(9 * 2**19))
    os.symlink("a.bin", root / "link")
    for n, path in enumerate(sorted(root.rglob("*"))):
        if not path.is_symlink():
            if path.is_file():
                path.chmod(0o640 if n % 2 else 0o604)
            os.utime(path, ns=(1_600_000_000_000_000_000 + n * 10**9,) * 2)


def setup_repo(tmp_path: Path) -> tuple[Path, Path, Config]:
    source = tmp_path / "src"
    make_source(source)
    key = tmp_path / "repo.key"
    key.write_text("pw\n")
    path = tmp_path / "config.yml"
    path.write_text(
        f"""
host: dmg-host
state_dir: {tmp_path / "state"}
backup:
  repository: {tmp_path / "repo"}
  password_file: {key}
  pack_size: 1MiB
  sources: [{{name: docs, kind: files, paths: ["{source}"]}}]
restore_test:
  sandbox: {{kind: local, root: {tmp_path / "sandbox"}}}
"""
    )
    config = parse_config(path.read_text(), str(path))
    assert config.backup is not None
    init_repository(config.backup, config.host)
    assert run_backup(config).ok
    return source, path, config


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agents", *args, "--config", str(config)],
        capture_output=True,
        text=True,
    )


def files_by_blob(repo: Repository, snap: Snapshot) -> dict[str, list[TreeEntry]]:
    found: dict[str, list[TreeEntry]] = {}
    for entry in repo.read_tree(snap):
        for chunk in entry.chunks:
            found.setdefault(chunk, []).append(entry)
    return found


def source_files(source: Path) -> dict[str, Path]:
    """Snapshot path -> source file, for every regular file."""
    return {
        str(p).lstrip("/"): p
        for p in sorted(source.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def assert_restore(
    source: Path, target: Path, proc: subprocess.CompletedProcess[str], damaged: set[str]
) -> None:
    """Exact outcome: exit 1, the damaged list, good files whole, damaged ones renamed."""
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    data = json.loads(proc.stdout)
    assert sorted(d["path"] for d in data["damaged"]) == sorted(damaged)
    assert all(set(d) == {"path", "reason", "written_as"} for d in data["damaged"])
    assert data["errors"] == [] and data["refused"] == []
    files = source_files(source)
    assert data["files"] == len(files) - len(damaged)
    for rel, original in files.items():
        restored = target / rel
        if rel in damaged:
            assert not restored.exists() and not restored.is_symlink(), rel
            written = Path(next(d["written_as"] for d in data["damaged"] if d["path"] == rel))
            assert written == restored.with_name(restored.name + ".damaged")
            assert written.stat().st_size == original.stat().st_size
            assert written.stat().st_mode & 0o777 == 0o600
            continue
        assert restored.read_bytes() == original.read_bytes(), rel
        st, want = restored.stat(), original.stat()
        assert (st.st_mode, st.st_mtime_ns) == (want.st_mode, want.st_mtime_ns), rel
    link = target / str(source / "link").lstrip("/")
    assert os.readlink(link) == "a.bin"
    leftovers = [p for p in target.rglob(".opsagent-restore-*")]
    assert leftovers == []


def test_flipped_byte_in_a_shared_blob_names_every_file_that_needs_it(tmp_path: Path) -> None:
    source, config_path, config = setup_repo(tmp_path)
    assert config.backup is not None
    repo = open_repository(config.backup)
    snap = repo.find_snapshot("latest")
    by_blob = files_by_blob(repo, snap)
    shared = next(c for c, users in by_blob.items() if len(users) == 3)
    big = next(e for e in repo.read_tree(snap) if e.path.endswith("big.bin"))
    assert len(big.chunks) >= 2
    victims = {shared: {e.path for e in by_blob[shared]}, big.chunks[0]: {big.path}}
    for chunk in victims:
        loc = repo.location(bytes.fromhex(chunk))
        assert loc is not None
        pack = tmp_path / "repo" / pack_key(loc.pack)
        raw = bytearray(pack.read_bytes())
        raw[loc.offset + loc.length // 2] ^= 0x20
        pack.write_bytes(bytes(raw))

    target = tmp_path / "out"
    proc = cli(config_path, "restore", "latest", "--to", str(target), "--json")
    damaged = {p for paths in victims.values() for p in paths}
    assert len(damaged) == 4
    assert_restore(source, target, proc, damaged)
    reasons = {d["path"]: d["reason"] for d in json.loads(proc.stdout)["damaged"]}
    assert "fails authentication" in reasons[big.path]
    # the readable chunks of the big file are in place, the damaged range is zeros
    written = (target / big.path).with_name("big.bin.damaged").read_bytes()
    original = (source / "big.bin").read_bytes()
    end = big.chunk_sizes[0]
    assert written[:end] == bytes(end) and written[end:] == original[end:]

    again = cli(config_path, "restore", "latest", "--to", str(target), "--overwrite")
    assert again.returncode == 1 and "Traceback" not in again.stderr
    lines = again.stderr.splitlines()
    assert len([line for line in lines if line.startswith("damaged (")]) == 4
    assert f"damaged ({target / big.path}.damaged.1): {big.path}: " in again.stderr
    assert (target / big.path).with_name("big.bin.damaged").read_bytes() == written  # kept

    config = parse_config(config_path.read_text(), str(config_path))
    result = run_restore_test(config, StateDB(config.state_db))
    assert not result.ok
    step = result.details["steps"][0]
    assert step["name"] == "restore" and not step["ok"]
    assert sorted(d["path"] for d in step["details"]["damaged"]) == sorted(damaged)
    assert result.summary.startswith(f"step restore failed: docs snapshot {snap.short_id}:")
    assert "4 damaged file(s): " in result.summary and big.path in result.summary


def test_missing_pack_damages_only_the_files_it_holds(tmp_path: Path) -> None:
    source, config_path, config = setup_repo(tmp_path)
    assert config.backup is not None
    repo = open_repository(config.backup)
    snap = repo.find_snapshot("latest")
    by_blob = files_by_blob(repo, snap)
    packs: dict[str, set[str]] = {}
    tree_packs = set()
    for blob_id, loc in repo.load_index().items():
        if loc.type is BlobType.TREE:
            tree_packs.add(loc.pack)
        for entry in by_blob.get(blob_id.hex(), []):
            packs.setdefault(loc.pack, set()).add(entry.path)
    pack_id, damaged = max(
        ((p, paths) for p, paths in packs.items() if p not in tree_packs),
        key=lambda item: (len(item[1]), item[0]),
    )
    assert damaged and len(damaged) < len(source_files(source))
    (tmp_path / "repo" / pack_key(pack_id)).unlink()

    target = tmp_path / "out"
    proc = cli(config_path, "restore", "latest", "--to", str(target), "--json")
    assert_restore(source, target, proc, damaged)
    reasons = {d["reason"] for d in json.loads(proc.stdout)["damaged"]}
    # the index only ever points into packs that exist: the lost pack's blobs are in none
    assert reasons and all(r.endswith("is in no stored pack") for r in reasons), reasons


def test_a_blob_missing_from_the_index_damages_its_file(tmp_path: Path) -> None:
    from dataclasses import replace

    source, config_path, config = setup_repo(tmp_path)
    assert config.backup is not None
    repo = open_repository(config.backup)
    snap = repo.find_snapshot("latest")
    note = next(e for e in repo.read_tree(snap) if e.path.endswith("notes/n03.txt"))
    entries = [
        replace(e, chunks=("ab" * 32,)) if e.path == note.path else e for e in repo.read_tree(snap)
    ]
    with repo.writer() as writer:
        lines = "".join(e.to_json() + "\n" for e in entries).encode()
        tree = writer.add(BlobType.TREE, lines).hex()
        writer.flush()
    repo.save_snapshot(replace(snap, id="", tree=(tree,), time=snap.time.replace(year=2099)))
    target = tmp_path / "out"
    proc = cli(config_path, "restore", "latest", "--to", str(target), "--json")
    assert_restore(source, target, proc, {note.path})
    (reason,) = [d["reason"] for d in json.loads(proc.stdout)["damaged"]]
    assert reason == f"blob {'ab' * 6} is in no stored pack"


def snapshot_of(tree: Path, root: Path) -> dict[str, tuple[bool, bytes]]:
    """Every path under `root` with whether it is a link and its content or target."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            out[str(p)] = (True, os.readlink(p).encode())
        elif p.is_file():
            out[str(p)] = (False, p.read_bytes())
        else:
            out[str(p)] = (False, b"dir")
    return out


def test_every_bad_target_is_one_line_and_a_documented_exit_code(tmp_path: Path) -> None:
    source, config_path, config = setup_repo(tmp_path)
    assert config.backup is not None
    note = str(source / "notes" / "n01.txt").lstrip("/")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("not yours\n")
    before = snapshot_of(tmp_path, outside)

    def refused(proc: subprocess.CompletedProcess[str], code: int, text: str) -> None:
        assert proc.returncode == code, proc.stderr
        assert "Traceback" not in proc.stderr
        assert proc.stderr.splitlines() == [text], proc.stderr
        assert snapshot_of(tmp_path, outside) == before

    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    proc = cli(config_path, "restore", "latest", "--to", str(a_file))
    refused(proc, 1, f"opsagent: --to {a_file} is not a directory")
    assert a_file.read_text() == "x"

    # root ignores permission bits, and the shared interpreter is not readable by an
    # unprivileged user here: a read-only mount makes the directory unwritable for real
    readonly = tmp_path / "ro"
    readonly.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(readonly)], check=True)
    try:
        proc = cli(config_path, "restore", "latest", "--to", str(readonly / "t"))
        refused(
            proc, 1, f"opsagent: cannot create the target {readonly / 't'}: Read-only file system"
        )
        proc = cli(config_path, "restore", "latest", "--to", str(readonly))
        refused(proc, 1, f"opsagent: --to {readonly} is not writable")
    finally:
        subprocess.run(["umount", str(readonly)], check=False)

    short = open_repository(config.backup).find_snapshot("latest").short_id
    proc = cli(
        config_path, "restore", "latest", "--to", str(tmp_path / "out"), "--include", "nope/x"
    )
    refused(
        proc,
        1,
        f"opsagent: --include 'nope/x' matches nothing in snapshot {short};"
        f" see its paths with `opsagent backup show {short} --ls`",
    )
    assert not (tmp_path / "out").exists()

    deep = tmp_path / "missing" / "parents" / "t"
    proc = cli(config_path, "restore", "latest", "--to", str(deep), "--include", note)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert (deep / note).read_bytes() == (source / "notes" / "n01.txt").read_bytes()

    linked = tmp_path / "linked"
    (linked / note).parent.mkdir(parents=True)
    os.symlink(outside / "victim.txt", linked / note)
    proc = cli(config_path, "restore", "latest", "--to", str(linked), "--include", note)
    assert proc.returncode == 0
    assert proc.stderr.splitlines() == [f"kept existing (use --overwrite): {note}"]
    assert (linked / note).is_symlink() and snapshot_of(tmp_path, outside) == before
    proc = cli(
        config_path, "restore", "latest", "--to", str(linked), "--include", note, "--overwrite"
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert not (linked / note).is_symlink()
    assert (linked / note).read_bytes() == (source / "notes" / "n01.txt").read_bytes()
    assert snapshot_of(tmp_path, outside) == before
