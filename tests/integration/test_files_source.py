"""What a files source can meet, against the real engine and a local repository:
missing paths, empty trees, names that are not UTF-8, unreadable directories (as an
unprivileged user), hard links, FIFOs, device nodes and extended attributes. Nothing a
source produces may poison the repository for the next backup, restore, check or prune.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from agents.backup.archiver import Archiver, _parent_xattrs, xattr_lister
from agents.backup.checker import check
from agents.backup.pack import BlobType
from agents.backup.repository import Repository
from agents.backup.restorer import restore
from agents.backup.runner import init_repository, open_repository, run_backup, run_prune
from agents.backup.snapshot import Snapshot, TreeEntry
from agents.config import Config, parse_config
from tests.support import unprivileged

PASSWORD = "correct horse battery staple"


def write_config(work: Path, sources: list[dict[str, Any]], name: str = "c.yml") -> Path:
    """A config with a local repository under `work` and these sources."""
    key = work / "repo.key"
    if not key.exists():
        key.write_text(PASSWORD + "\n")
        key.chmod(0o600)
    data = {
        "host": "test-host",
        "state_dir": str(work / "state"),
        "backup": {
            "repository": str(work / "repo"),
            "password_file": str(key),
            "sources": [
                {"kind": "files", **s, "paths": [str(p) for p in s["paths"]]} for s in sources
            ],
        },
    }
    path = work / name
    path.write_text(yaml.safe_dump(data))
    return path


def load(path: Path) -> Config:
    return parse_config(path.read_text(), str(path))


def cli(*args: str, user: tuple[str, dict[str, str]] | None = None) -> subprocess.CompletedProcess:
    """The CLI in a subprocess; as root with this interpreter, or as nobody with `user`."""
    if user is None:
        return subprocess.run(
            [sys.executable, "-m", "agents", *args], capture_output=True, timeout=120
        )
    python, env = user
    return subprocess.run(
        [python, "-m", "agents", *args],
        capture_output=True,
        timeout=120,
        env=env,
        cwd="/",
        user=unprivileged.NOBODY,
        group=unprivileged.NOBODY,
        extra_groups=[],
    )


def backed_up_once(work: Path, source: Path) -> tuple[Repository, Snapshot, dict[str, Any]]:
    """Init a repository under `work` and back up `source` once: the repository, the
    snapshot and the source's details."""
    config = load(write_config(work, [{"name": "files", "paths": [source]}]))
    assert config.backup is not None
    init_repository(config.backup, config.host)
    results: list = []
    run = run_backup(config, emit=results.append)
    assert run.ok, run.summary
    repo = open_repository(config.backup)
    return repo, repo.find_snapshot(results[0].details["snapshot"]), results[0].details


def backed_up_twice(config: Config) -> dict[str, Any]:
    """Init the repository and back up twice; the second run's source details (the run
    that had the first as its parent)."""
    assert config.backup is not None
    init_repository(config.backup, config.host)
    for _ in range(2):
        results: list = []
        assert run_backup(config, emit=results.append).ok
    return results[0].details


def by_name(repo: Repository, snapshot: Snapshot | None = None) -> dict[str, TreeEntry]:
    """A snapshot's entries (the latest when None) by their last name."""
    tree = repo.read_tree(snapshot or repo.find_snapshot("latest"))
    return {e.path.rsplit("/", 1)[-1]: e for e in tree}


def inside(target: Path, source: Path) -> Path:
    """Where a source path lands in a restore target (paths are stored from the root)."""
    return target / str(source).lstrip("/")


def test_no_existing_path_fails_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "gone"
    config_path = write_config(tmp_path, [{"name": "files", "paths": [missing]}])
    config = load(config_path)
    assert config.backup is not None
    repo = init_repository(config.backup, config.host)
    before = sorted(i.key for i in repo.storage.list(""))
    proc = cli("backup", "run", "--json", "--config", str(config_path))
    assert proc.returncode == 1, proc.stderr
    (source,) = json.loads(proc.stdout)["sources"]
    assert source["status"] == "error"
    assert source["summary"] == f"no source path exists: {missing}"
    assert sorted(i.key for i in repo.storage.list("") if not i.key.startswith("locks/")) == before


def test_a_missing_path_among_others_fails_the_source_but_keeps_the_snapshot(
    tmp_path: Path,
) -> None:
    present, missing = tmp_path / "here", tmp_path / "gone"
    present.mkdir()
    (present / "f.txt").write_text("kept")
    config = load(write_config(tmp_path, [{"name": "files", "paths": [present, missing]}]))
    assert config.backup is not None
    init_repository(config.backup, config.host)
    results: list = []
    run = run_backup(config, emit=results.append)
    assert not run.ok
    assert results[0].status.value == "failed"
    assert f"missing source path(s): {missing}" in results[0].summary
    repo = open_repository(config.backup)
    snap = repo.find_snapshot("latest")
    assert f"missing: {missing}" in snap.warnings
    target = tmp_path / "out"
    assert restore(repo, snap, target).files == 1
    assert (inside(target, present) / "f.txt").read_text() == "kept"


def test_empty_trees_are_stored_so_they_read_back(tmp_path: Path) -> None:
    """A source whose every object is excluded has no entries at all; an empty directory
    has one. Both give snapshots that read, restore, check and serve as parents."""
    empty_dir, excluded = tmp_path / "empty", tmp_path / "excluded"
    empty_dir.mkdir()
    excluded.mkdir()
    (excluded / "f").write_text("x")
    config = load(
        write_config(
            tmp_path,
            [
                {"name": "empty", "paths": [empty_dir]},
                {"name": "nothing", "paths": [excluded], "exclude": ["excluded"]},
            ],
        )
    )
    assert config.backup is not None
    init_repository(config.backup, config.host)
    for _ in range(2):  # the second run reads the first as its parent
        run = run_backup(config)
        assert run.ok, run.summary
    repo = open_repository(config.backup)
    nothing = repo.find_snapshot("latest", source="nothing")
    assert nothing.tree == () and list(repo.read_tree(nothing)) == []
    assert restore(repo, nothing, tmp_path / "out1").files == 0
    empty = repo.find_snapshot("latest", source="empty")
    assert [e.type for e in repo.read_tree(empty)] == ["dir"]
    restore(repo, empty, tmp_path / "out2")
    assert list(inside(tmp_path / "out2", empty_dir).iterdir()) == []
    report = check(repo, read_data=True)
    assert report.ok, report.errors


def test_a_snapshot_with_an_old_newline_tree_reads_restores_and_is_a_parent(
    tmp_path: Path,
) -> None:
    """Versions before this one stored an empty tree as one newline, which `check`,
    restore, prune and every later backup of the source then choked on."""
    source = tmp_path / "src"
    config_path = write_config(tmp_path, [{"name": "files", "paths": [source]}])
    config = load(config_path)
    assert config.backup is not None
    repo = init_repository(config.backup, config.host)
    with repo.writer() as writer:  # what the old archiver wrote for a missing path
        tree_id = writer.add(BlobType.TREE, b"\n").hex()
        writer.flush()
    old = repo.save_snapshot(
        Snapshot(
            id="",
            time=datetime.now(UTC) - timedelta(hours=1),
            host="test-host",
            source="files",
            source_kind="files",
            paths=(str(source),),
            tree=(tree_id,),
            warnings=(f"{source}: No such file or directory",),
        )
    )
    repo = open_repository(config.backup)
    assert list(repo.read_tree(old)) == []
    result = restore(repo, old, tmp_path / "out")
    assert (result.files, result.dirs, result.errors) == (0, 0, [])
    show = cli("backup", "show", old.id, "--ls", "--json", "--config", str(config_path))
    assert show.returncode == 0, show.stderr
    assert json.loads(show.stdout)["entries"] == []
    assert check(repo).ok

    source.mkdir()
    (source / "f.txt").write_text("now here")
    run = run_backup(config)
    assert run.ok, run.summary
    repo = open_repository(config.backup)
    new = repo.find_snapshot("latest")
    assert new.parent == old.id and new.stats["files"] == 1
    assert run_prune(config).ok
    report = check(repo, read_data=True)
    assert report.ok, report.errors


def test_a_parent_whose_tree_cannot_be_read_costs_a_warning_not_the_backup(
    tmp_path: Path,
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "f.txt").write_text("data")
    config = load(write_config(tmp_path, [{"name": "files", "paths": [source]}]))
    assert config.backup is not None
    repo = init_repository(config.backup, config.host)
    broken = repo.save_snapshot(
        Snapshot(
            id="",
            time=datetime.now(UTC) - timedelta(hours=1),
            host="test-host",
            source="files",
            source_kind="files",
            paths=(str(source),),
            tree=("ab" * 32,),  # a blob no index knows
        )
    )
    results: list = []
    run = run_backup(config, emit=results.append)
    assert run.ok, run.summary
    assert any(
        w.startswith(f"parent snapshot {broken.short_id} cannot be read")
        for w in results[0].details["warnings"]
    )
    repo = open_repository(config.backup)
    new = repo.find_snapshot(results[0].details["snapshot"])
    assert new.parent is None and new.stats["bytes_read"] == 4


# every byte but `/` and NUL, with the troublesome ones often
NAME_BYTE = st.one_of(
    st.integers(1, 255).filter(lambda b: b != 0x2F),
    st.sampled_from(b'\n\r\t "\\\x1b\x7f\x80\xc3\xed\xfe\xff'),
)
NAME = (
    st.lists(NAME_BYTE, min_size=1, max_size=24).map(bytes).filter(lambda n: n not in (b".", b".."))
)


@pytest.fixture(scope="module")
def byte_names_repo(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Config, Repository, Path]]:
    work = tmp_path_factory.mktemp("names")
    config = load(write_config(work, [{"name": "files", "paths": [work / "src"]}]))
    assert config.backup is not None
    yield config, init_repository(config.backup, config.host), work


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(names=st.sets(NAME, min_size=1, max_size=4), folder=NAME)
def test_any_name_round_trips_byte_for_byte(
    byte_names_repo: tuple[Config, Repository, Path], names: set[bytes], folder: bytes
) -> None:
    """Files, a directory and symbolic links (named and pointing anywhere by such names)
    come back with the same bytes as names, targets and contents."""
    assume(folder not in names)
    config, repo, work = byte_names_repo
    source = os.fsencode(work / "src")
    shutil.rmtree(source, ignore_errors=True)
    os.makedirs(source + b"/files/" + folder)
    os.makedirs(source + b"/links")
    for n, name in enumerate(sorted(names)):
        where = source + b"/files" + (b"/" + folder if n % 2 else b"")
        with open(where + b"/" + name, "wb") as handle:
            handle.write(name * 3)
        os.symlink(name, source + b"/links/" + name)
    run = run_backup(config, repo=repo)
    assert run.ok, run.summary
    with tempfile.TemporaryDirectory(dir=work) as target:
        result = restore(repo, repo.find_snapshot("latest"), Path(target))
        assert result.errors == [] and result.refused == []
        assert as_bytes(os.fsencode(target) + source) == as_bytes(source)


def as_bytes(top: bytes) -> dict[bytes, tuple[str, bytes]]:
    """relative name -> (kind, content or link target), every name as bytes."""
    out: dict[bytes, tuple[str, bytes]] = {}
    for folder, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, top)
            if os.path.islink(path):
                out[rel] = ("link", os.readlink(path))
            elif os.path.isdir(path):
                out[rel] = ("dir", b"")
            else:
                with open(path, "rb") as handle:
                    out[rel] = ("file", handle.read())
    return out


def test_undecodable_names_through_the_cli(tmp_path: Path) -> None:
    """`show --ls` and `restore` print such names escaped, and `--json` keeps them exact."""
    source = tmp_path / "src"
    source.mkdir()
    raw = b"caf\xe9 \xff\nline"
    with open(os.fsencode(source) + b"/" + raw, "wb") as handle:
        handle.write(b"latin-1 name")
    config_path = write_config(tmp_path, [{"name": "files", "paths": [source]}])
    assert cli("backup", "init", "--config", str(config_path)).returncode == 0
    proc = cli("backup", "run", "--json", "--config", str(config_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    listing = cli("backup", "show", "latest", "--ls", "--json", "--config", str(config_path))
    assert listing.returncode == 0, listing.stderr
    paths = {os.fsencode(e["path"]) for e in json.loads(listing.stdout)["entries"]}
    assert os.fsencode(source).lstrip(b"/") + b"/" + raw in paths
    text = cli("backup", "show", "latest", "--ls", "--config", str(config_path))
    assert text.returncode == 0, text.stderr
    shown = {e["path"] for e in yaml.safe_load(text.stdout)["entries"]}
    assert f"{str(source).lstrip('/')}/caf\\xe9 \\xff\nline" in shown
    dry = cli(
        "restore", "latest", "--to", str(tmp_path / "t"), "--dry-run", "--config", str(config_path)
    )  # fmt: skip
    assert dry.returncode == 0 and b"caf\\xe9 \\xff" in dry.stdout, dry.stderr
    target = tmp_path / "out"
    done = cli("restore", "latest", "--to", str(target), "--config", str(config_path))
    assert done.returncode == 0, done.stderr
    with open(os.fsencode(inside(target, source)) + b"/" + raw, "rb") as handle:
        assert handle.read() == b"latin-1 name"


def test_links_fifos_devices_and_xattrs_are_restored(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    first = source / "a.txt"
    first.write_bytes(os.urandom(300_000))
    os.link(first, source / "b.txt")
    os.link(first, source / "sub" / "c.txt")
    os.mkfifo(source / "pipe")
    os.mknod(source / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    (source / "pipe").chmod(0o640)  # not left to the umask
    try:
        os.setxattr(first, "user.origin", b"\x00binary\xff")
        os.setxattr(source / "sub", "user.note", b"a directory")
    except OSError as exc:
        if exc.errno != errno.ENOTSUP:
            raise
        pytest.skip(f"{tmp_path} takes no user.* extended attributes")
    config_path = write_config(tmp_path, [{"name": "files", "paths": [source]}])
    config = load(config_path)
    assert config.backup is not None
    init_repository(config.backup, config.host)
    for _ in range(2):  # the second run takes the first as parent: links still recorded
        results: list = []
        run = run_backup(config, emit=results.append)
        assert run.ok and results[0].details["warnings"] == [], results[0].details
    repo = open_repository(config.backup)
    names = by_name(repo)
    assert names["b.txt"].link_to == names["c.txt"].link_to == names["a.txt"].path
    assert repo.snapshots()[0].stats["bytes_read"] == 300_000  # the data read once

    target = tmp_path / "out"
    proc = cli("restore", "latest", "--to", str(target), "--json", "--config", str(config_path))
    assert proc.returncode == 0, proc.stderr
    done = json.loads(proc.stdout)
    assert (done["files"], done["specials"], done["warnings"]) == (3, 2, [])
    out = inside(target, source)
    inodes = {(out / p).stat().st_ino for p in ("a.txt", "b.txt", "sub/c.txt")}
    assert len(inodes) == 1 and (out / "a.txt").stat().st_nlink == 3
    assert (out / "b.txt").read_bytes() == first.read_bytes()
    pipe = (out / "pipe").lstat()
    assert stat.S_ISFIFO(pipe.st_mode) and stat.S_IMODE(pipe.st_mode) == 0o640
    null = (out / "null").lstat()
    assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
    assert os.getxattr(out / "a.txt", "user.origin") == b"\x00binary\xff"
    assert os.getxattr(out / "sub", "user.note") == b"a directory"
    again = cli("restore", "latest", "--to", str(target), "--json", "--config", str(config_path))
    assert again.returncode == 0, again.stderr
    assert len(json.loads(again.stdout)["skipped_existing"]) == 5  # nothing replaced unasked
    report = check(repo, read_data=True)
    assert report.ok, report.errors


@pytest.mark.skipif(os.geteuid() != 0, reason="owners and file capabilities need root")
def test_owner_set_id_bits_and_file_capabilities_survive_a_restore(tmp_path: Path) -> None:
    """chown clears the set-id bits and security.capability: the restore sets the owner
    first, then the attributes and the mode, so a setuid, capability-carrying program
    owned by someone else comes back exactly as it was backed up."""
    source = tmp_path / "src"
    source.mkdir()
    program = source / "ping"
    program.write_bytes(b"\x7fELF not really")
    os.chown(program, 4321, 4322)
    program.chmod(0o4751)
    capability = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)  # cap_net_raw+ep
    try:
        os.setxattr(program, "security.capability", capability)
        os.setxattr(program, "trusted.origin", b"root only")
    except OSError as exc:
        pytest.skip(f"{tmp_path} takes no file capabilities: {exc.strerror}")
    wanted = {n: os.getxattr(program, n) for n in ("security.capability", "trusted.origin")}
    config_path = write_config(tmp_path, [{"name": "files", "paths": [source]}])
    assert cli("backup", "init", "--config", str(config_path)).returncode == 0
    done = cli("backup", "run", "--config", str(config_path))
    assert done.returncode == 0, done.stdout + done.stderr
    target = tmp_path / "out"
    proc = cli("restore", "latest", "--to", str(target), "--json", "--config", str(config_path))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["warnings"] == []
    back = inside(target, source) / "ping"
    st_back = back.stat()
    assert (st_back.st_uid, st_back.st_gid) == (4321, 4322)
    assert stat.S_IMODE(st_back.st_mode) == 0o4751
    assert {n: os.getxattr(back, n) for n in wanted} == wanted


@pytest.mark.skipif(shutil.which("setfacl") is None, reason="setfacl (acl) is needed")
def test_a_directory_restored_over_an_existing_one_keeps_none_of_its_attributes(
    tmp_path: Path,
) -> None:
    """Restoring onto an existing directory set the snapshot's attributes and kept the
    directory's own: an ACL giving a stranger write access (and a default ACL that
    every new file inherits) survived a restore with --overwrite (the second attack)."""
    source = tmp_path / "src"
    (source / "d").mkdir(parents=True)
    (source / "d" / "f").write_text("data\n")
    try:
        os.setxattr(source / "d", "user.dirattr", b"kept")
    except OSError as exc:
        pytest.skip(f"{tmp_path} takes no user.* extended attributes: {exc.strerror}")
    config_path = write_config(tmp_path, [{"name": "files", "paths": [source]}])
    assert cli("backup", "init", "--config", str(config_path)).returncode == 0
    done = cli("backup", "run", "--config", str(config_path))
    assert done.returncode == 0, done.stdout + done.stderr
    target = tmp_path / "out"
    existing = inside(target, source) / "d"
    existing.mkdir(parents=True)
    os.setxattr(existing, "user.old", b"stale")
    os.setxattr(existing, "trusted.old", b"stale")
    acl = subprocess.run(
        ["setfacl", "-m", "u:999:rwx,d:u:999:rwx", str(existing)], capture_output=True
    )
    assert acl.returncode == 0, acl.stderr
    back = cli(
        "restore", "latest", "--to", str(target), "--overwrite", "--json",
        "--config", str(config_path),
    )  # fmt: skip
    assert back.returncode == 0, back.stdout + back.stderr
    assert json.loads(back.stdout)["warnings"] == []
    assert sorted(os.listxattr(existing)) == ["user.dirattr"]
    assert os.getxattr(existing, "user.dirattr") == b"kept"
    assert stat.S_IMODE(existing.stat().st_mode) == stat.S_IMODE((source / "d").stat().st_mode)
    # the default ACL went before the files were made in it: none inherited it
    assert os.listxattr(existing / "f") == []

    # a default ACL of another value: the snapshot's is set before files are made
    other = source / "d2"
    other.mkdir()
    (other / "plain").write_text("made before the default ACL\n")
    made = subprocess.run(["setfacl", "-d", "-m", "g:adm:rx", str(other)], capture_output=True)
    assert made.returncode == 0, made.stderr
    again = cli("backup", "run", "--config", str(config_path))
    assert again.returncode == 0, again.stdout + again.stderr
    stale = inside(target, source) / "d2"
    stale.mkdir()
    made = subprocess.run(["setfacl", "-d", "-m", "u:999:rwx", str(stale)], capture_output=True)
    assert made.returncode == 0, made.stderr
    back = cli("restore", "latest", "--to", str(target), "--config", str(config_path))
    assert back.returncode == 0, back.stdout + back.stderr
    assert os.listxattr(stale / "plain") == []  # no ACL in the source, none here
    default = "system.posix_acl_default"
    assert os.getxattr(stale, default) == os.getxattr(other, default)

    # a snapshot whose lister could not see trusted.* (a service user's) says nothing
    # of them: a root restore leaves them (an overlay's opaque mark), drops the rest
    os.setxattr(existing, "trusted.old", b"unseen")
    os.setxattr(existing, "user.old", b"stale")
    config = load(config_path)
    assert config.backup is not None
    repo = open_repository(config.backup)
    snapshot = repo.find_snapshot("latest")
    lister = snapshot.stats["xattrs_listed_as"].replace("cap_sys_admin=yes", "cap_sys_admin=no")
    as_service_user = dataclasses.replace(
        snapshot, stats={**snapshot.stats, "xattrs_listed_as": lister}
    )
    done = restore(repo, as_service_user, target, overwrite=True)
    assert done.warnings == [] and done.errors == []
    assert sorted(os.listxattr(existing)) == ["trusted.old", "user.dirattr"]


def test_unchanged_files_take_their_xattrs_from_the_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file unchanged since the parent (size, times, inode) takes its extended
    attributes from the parent's line, unlisted; one whose attribute changed (which
    changes its ctime) is listed again, and a parent that did not list every object's
    (an older agent's, or one that met an error) is no source for them."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("kept", "changed", "added", "plain"):
        (source / name).write_bytes(name.encode() * 1000)
    try:
        os.setxattr(source / "kept", "user.k", b"\x00kept\xff")
        os.setxattr(source / "changed", "user.c", b"before")
    except OSError as exc:
        if exc.errno != errno.ENOTSUP:
            raise
        pytest.skip(f"{tmp_path} takes no user.* extended attributes")
    config = load(write_config(tmp_path, [{"name": "files", "paths": [source]}]))
    assert config.backup is not None
    init_repository(config.backup, config.host)
    listed: list[str] = []
    real_listxattr = os.listxattr

    def counting(path: Any, *args: Any, **kwargs: Any) -> list[str]:
        listed.append(os.path.basename(path))
        return real_listxattr(path, *args, **kwargs)

    monkeypatch.setattr(os, "listxattr", counting)

    def backup() -> dict[str, TreeEntry]:
        listed.clear()
        results: list = []
        assert run_backup(config, emit=results.append).ok, results
        return by_name(open_repository(config.backup))

    first = backup()
    assert set(listed) == {"src", "kept", "changed", "added", "plain"}
    assert first["kept"].xattrs == (("user.k", b"\x00kept\xff"),)
    time.sleep(0.05)  # past the file system's timestamp granularity
    os.setxattr(source / "changed", "user.c", b"after")
    os.setxattr(source / "added", "user.a", b"new")
    second = backup()
    assert set(listed) == {"src", "changed", "added"}  # the directory is always listed
    assert second["kept"].xattrs == (("user.k", b"\x00kept\xff"),)
    assert second["changed"].xattrs == (("user.c", b"after"),)
    assert second["added"].xattrs == (("user.a", b"new"),)
    assert second["plain"].xattrs == ()

    # a parent listed by someone else (or without the mark): every object listed again
    repo = open_repository(config.backup)
    latest = repo.find_snapshot("latest")
    assert latest.stats["xattrs_listed_as"] == xattr_lister()
    other = xattr_lister().replace(f"uid={os.geteuid()} ", "uid=65534 ")
    monkeypatch.setitem(latest.stats, "xattrs_listed_as", other)
    listed.clear()
    with repo.writer() as writer:
        archived = Archiver(repo, writer).archive([source], [], False, latest)
    assert archived.files_reused == 4
    assert set(listed) == {"src", "kept", "changed", "added", "plain"}


def test_parent_lines_taken_whole_are_the_lines_the_comparison_makes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Most of an incremental walk takes the parent's line as it is, undecoded, when it
    is exactly what this file would get (`Archiver._reused_as_is`). Over names that JSON
    escapes, names that are not UTF-8, links, attributes and files changed in each way,
    the tree is byte for byte the one the decoding comparison makes, and the files it
    takes whole are the unchanged plain ones."""
    source = tmp_path / "src"
    (source / "sub dir").mkdir(parents=True)
    names = ['quote"d', "back\\slash", "tab\there", "ünïcødé", "new\nline", "plain", "empty"]
    for i, name in enumerate(names):
        (source / name).write_bytes(b"x" * (i * 40_000))
    odd = os.fsencode(source) + b"/latin-\xe9"
    with open(odd, "wb") as handle:
        handle.write(b"not utf-8 name")
    (source / "sub dir" / "deep").write_bytes(os.urandom(70_000))
    os.link(source / "plain", source / "sub dir" / "hard")
    os.symlink("plain", source / "link")
    for name in ("chmod", "content", "touched", "xattr"):
        (source / name).write_bytes(name.encode() * 5000)
    try:
        os.setxattr(source / "xattr", "user.a", b"1")
        plain = {"xattr"}  # a line with attributes is decoded
    except OSError:
        plain = set()  # no user.* attributes here: a plain file like the others
    config = load(write_config(tmp_path, [{"name": "files", "paths": [source]}]))
    assert config.backup is not None
    init_repository(config.backup, config.host)
    assert run_backup(config).ok
    time.sleep(0.05)
    (source / "chmod").chmod(0o600)
    (source / "content").write_bytes(b"changed" * 5000)
    os.utime(source / "touched", ns=(1, 1))

    repo = open_repository(config.backup)
    parent = repo.find_snapshot("latest")
    taken: list[str] = []
    real = Archiver._reused_as_is

    def counting(self: Archiver, item: Any, old: Any) -> Any:
        made = real(self, item, old)
        if made is not None:
            taken.append(os.path.basename(item.path))
        return made

    monkeypatch.setattr(Archiver, "_reused_as_is", counting)
    with repo.writer() as writer:
        whole = Archiver(repo, writer).archive([source], [], False, parent)
    monkeypatch.setattr(Archiver, "_reused_as_is", lambda *_: None)
    with repo.writer() as writer:
        decoded = Archiver(repo, writer).archive([source], [], False, parent)
    assert whole.tree == decoded.tree
    assert whole.files_reused == decoded.files_reused == whole.files - 4  # see below
    assert whole.warnings == decoded.warnings == []
    # not taken whole: the hard links ("plain", "sub dir/hard"), the link, the file
    # with an attribute, and the three changed (chmod and content read again)
    unchanged = {*names, "latin-\udce9", "deep", "xattr"} - {"plain"} - plain
    assert set(taken) == unchanged and len(taken) == len(unchanged)


def test_a_parent_line_with_malformed_xattrs_is_listed_again() -> None:
    assert _parent_xattrs({"path": "a"}) == ()
    assert _parent_xattrs({"xattrs": {"user.a": "AAE="}}) == (("user.a", b"\x00\x01"),)
    assert _parent_xattrs({"xattrs": {"user.a": "not base64!"}}) is None
    assert _parent_xattrs({"xattrs": {"user.a": 1}}) is None
    assert _parent_xattrs({"xattrs": [["user.a", "AAE="]]}) is None


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user can reach (pytest's own temp root is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="opsagent-unpriv-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def as_nobody(shared_dir: Path) -> tuple[tuple[str, dict[str, str]], Path, Path]:
    """(the interpreter nobody runs the CLI with, a work directory, a source directory,
    both in `shared_dir`); the test is skipped where nobody can run no interpreter."""
    user = unprivileged.interpreter()
    if user is None:
        pytest.skip("no Python interpreter that the nobody user can run")
    work, source = shared_dir / "work", shared_dir / "src"
    work.mkdir()
    source.mkdir()
    return user, work, source


def test_what_an_unprivileged_agent_cannot_read_fails_the_source(
    as_nobody: tuple[tuple[str, dict[str, str]], Path, Path], shared_dir: Path
) -> None:
    """As nobody: a 0700 directory and a 0600 file of root's fail a strict source (the
    error names them) and are warnings for a tolerant one; a source root nobody can
    stat fails its source too. The readable rest is saved and restores, FIFO included;
    a device node is a restore warning (only root may make one)."""
    user, work, source = as_nobody
    (source / "ok.txt").write_text("readable")
    os.mkfifo(source / "pipe")
    os.mknod(source / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    (source / "secret").mkdir(mode=0o700)
    (source / "secret" / "inner.txt").write_text("root only")
    locked = source / "locked.txt"
    locked.write_text("root only")
    locked.chmod(0o600)
    hidden = shared_dir / "hidden"
    hidden.mkdir(mode=0o700)
    (hidden / "deep").mkdir()
    for path in (work, source, source / "ok.txt", source / "pipe"):
        os.chown(path, unprivileged.NOBODY, unprivileged.NOBODY)
    config_path = write_config(
        work,
        [
            {"name": "strict", "paths": [source]},
            {"name": "tolerant", "paths": [source], "tolerate_unreadable": True},
            {"name": "hidden", "paths": [hidden / "deep"]},
        ],
    )
    for path in (config_path, work / "repo.key"):
        os.chown(path, unprivileged.NOBODY, unprivileged.NOBODY)

    init = cli("backup", "init", "--config", str(config_path), user=user)
    assert init.returncode == 0, init.stderr
    proc = cli("backup", "run", "--json", "--config", str(config_path), user=user)
    assert proc.returncode == 1, proc.stderr
    results = {r["details"]["source"]: r for r in json.loads(proc.stdout)["sources"]}
    strict = results["strict"]
    assert strict["status"] == "failed"
    assert f"2 unreadable path(s), first {locked}: Permission denied" in strict["summary"]
    assert strict["details"]["warnings"] == [
        f"unreadable: {locked}: Permission denied",
        f"unreadable: {source / 'secret'}: cannot list directory: Permission denied",
    ]
    assert results["tolerant"]["status"] == "ok"
    assert len(results["tolerant"]["details"]["warnings"]) == 2
    assert results["hidden"]["status"] == "failed"
    assert f"{hidden / 'deep'}: Permission denied" in results["hidden"]["summary"]

    target = work / "out"
    back = cli(
        "restore", "latest", "--source", "strict", "--to", str(target), "--json",
        "--config", str(config_path), user=user,
    )  # fmt: skip
    assert back.returncode == 0, back.stderr
    done = json.loads(back.stdout)
    null = str(source / "null").lstrip("/")
    assert done["warnings"] == [f"{null}: device node not restored: needs root"]
    out = inside(target, source)
    assert (out / "ok.txt").read_text() == "readable"
    assert stat.S_ISFIFO((out / "pipe").lstat().st_mode)
    assert sorted(p.name for p in out.iterdir()) == ["ok.txt", "pipe", "secret"]
    assert list((out / "secret").iterdir()) == []


@pytest.mark.skipif(
    shutil.which("unshare") is None or shutil.which("nsenter") is None,
    reason="util-linux's unshare and nsenter are needed",
)
def test_user_namespaces_are_told_apart_by_their_id_maps() -> None:
    """The lister named a user namespace by its inode number, which the kernel gives
    again to a new namespace once the old one ended: a backup in `unshare -U -r` (only
    root mapped, an ACL's other IDs read as -1) and a later one in a namespace mapping
    0-65535 had the same name, and the second took the first's broken ACL."""
    lister = [
        sys.executable,
        "-c",
        "from agents.backup.archiver import xattr_lister as x; print(x())",
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    only_root = subprocess.run(
        ["unshare", "-U", "-r", *lister], capture_output=True, text=True, env=env, timeout=60
    )
    if only_root.returncode != 0:
        pytest.skip(f"no user namespaces here: {only_root.stderr.strip()}")
    holder = subprocess.Popen(["unshare", "-U", "sleep", "60"])
    try:
        for _ in range(100):  # until unshare has made the namespace
            if os.readlink(f"/proc/{holder.pid}/ns/user") != os.readlink("/proc/self/ns/user"):
                break
            time.sleep(0.05)
        Path(f"/proc/{holder.pid}/uid_map").write_text("0 0 65536\n")
        Path(f"/proc/{holder.pid}/gid_map").write_text("0 0 65536\n")
        identity = subprocess.run(
            ["nsenter", "-U", "-t", str(holder.pid), *lister],
            capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip
    finally:
        holder.kill()
        holder.wait()
    assert identity.returncode == 0, identity.stderr
    names = {only_root.stdout.strip(), identity.stdout.strip(), xattr_lister()}
    assert len(names) == 3, names
    assert all(name.startswith("uid=0 cap_sys_admin=yes userns_maps=") for name in names)


def test_a_root_backup_lists_what_a_service_users_parent_could_not_see(
    as_nobody: tuple[tuple[str, dict[str, str]], Path, Path], shared_dir: Path
) -> None:
    """`trusted.*` attributes are not even listed without CAP_SYS_ADMIN: a snapshot the
    service user made has none, and a later backup as root must list them again rather
    than take the parent's (which would drop them from every backup from then on)."""
    user, work, source = as_nobody
    tagged = source / "tagged"
    tagged.write_bytes(b"data" * 1000)
    try:
        os.setxattr(tagged, "user.seen", b"by all")
        os.setxattr(tagged, "trusted.hidden", b"from nobody")
    except OSError as exc:
        pytest.skip(f"{shared_dir} takes no user.* and trusted.* attributes: {exc.strerror}")
    config_path = write_config(work, [{"name": "files", "paths": [source]}])
    for path in (work, source, tagged, config_path, work / "repo.key"):
        os.chown(path, unprivileged.NOBODY, unprivileged.NOBODY)
    assert cli("backup", "init", "--config", str(config_path), user=user).returncode == 0
    as_nobody = cli("backup", "run", "--config", str(config_path), user=user)
    assert as_nobody.returncode == 0, as_nobody.stdout + as_nobody.stderr
    as_root = cli("backup", "run", "--config", str(config_path))
    assert as_root.returncode == 0, as_root.stdout + as_root.stderr

    config = load(config_path)
    assert config.backup is not None
    repo = open_repository(config.backup)
    first, second = sorted(repo.snapshots(), key=lambda s: s.time)
    assert first.stats["xattrs_listed_as"].startswith("uid=65534 cap_sys_admin=no ")
    assert second.stats["xattrs_listed_as"] == xattr_lister()
    assert second.stats["files_reused"] == 1  # the data was taken from the parent...
    entries = by_name(repo, second)
    assert dict(entries["tagged"].xattrs) == {  # ...but not its attributes
        "trusted.hidden": b"from nobody",
        "user.seen": b"by all",
    }
    seen_by_nobody = by_name(repo, first)
    assert dict(seen_by_nobody["tagged"].xattrs) == {"user.seen": b"by all"}


def _make_tricky_tree(top: Path) -> None:
    """Names whose plain string order differs from the walk's order ('a-c' < 'a/b' as
    strings, but a directory's contents come before its next sibling), and bytes that
    are not UTF-8."""
    for rel in ("a/b", "a/z/deep", "a-c", "a.b", "a0", "B", "é", "ab/c"):
        path = top / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"content of {rel}\n")
    odd = os.fsencode(top) + b"/\xff\xfename"
    with open(odd, "wb") as handle:
        handle.write(b"undecodable name\n")


def test_the_parent_is_read_in_step_with_the_walk(tmp_path: Path) -> None:
    """Every unchanged file is found in the parent although the parent is read forward
    only; with the roots listed out of order, and after they are swapped, nothing is
    lost: at worst a file is read again."""
    one, two = tmp_path / "z-root", tmp_path / "a-root"
    _make_tricky_tree(one)
    _make_tricky_tree(two)
    config = load(write_config(tmp_path, [{"name": "files", "paths": [one, two]}]))
    details = backed_up_twice(config)
    assert details["files"] == 18 and details["files_reused"] == 18, details
    assert details["bytes_read"] == 0 and details["warnings"] == []
    swapped = load(write_config(tmp_path, [{"name": "files", "paths": [two, one]}], "s.yml"))
    results = []
    assert run_backup(swapped, emit=results.append).ok
    assert results[0].details["files"] == 18
    repo = open_repository(config.backup)
    latest = repo.find_snapshot(results[0].details["snapshot"])
    target = tmp_path / "restored"
    restore(repo, latest, target)
    for root in (one, two):
        assert as_bytes(os.fsencode(inside(target, root))) == as_bytes(os.fsencode(root))
    assert check(repo, read_data=True).ok


def test_a_parent_tree_malformed_midway_costs_a_warning_and_rereads_the_rest(
    tmp_path: Path,
) -> None:
    """The parent is read as the walk goes: a bad line after good ones stops its use
    there, with a warning; the files after it are read again, the snapshot is whole."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("a.txt", "b.txt", "c.txt"):
        (source / name).write_text(name * 10)
    config = load(write_config(tmp_path, [{"name": "files", "paths": [source]}]))
    assert config.backup is not None
    init_repository(config.backup, config.host)
    results: list = []
    assert run_backup(config, emit=results.append).ok
    repo = open_repository(config.backup)
    good = repo.find_snapshot(results[0].details["snapshot"])
    lines = [line for line in repo.read_tree_lines(good) if line.strip()]
    assert len(lines) == 4  # the directory and three files
    damaged = b"\n".join([lines[0], lines[1], lines[2][:-20], lines[3]]) + b"\n"  # b.txt cut
    with repo.writer() as writer:
        tree_id = writer.add(BlobType.TREE, damaged)
        writer.flush()
    parent = repo.save_snapshot(
        Snapshot(
            id="",
            time=datetime.now(UTC),
            host="test-host",
            source="files",
            source_kind="files",
            paths=(str(source),),
            tree=(tree_id.hex(),),
        )
    )
    results = []
    assert run_backup(config, emit=results.append).ok
    details = results[0].details
    assert any(
        w.startswith(f"parent snapshot {parent.short_id} cannot be read")
        for w in details["warnings"]
    ), details["warnings"]
    assert details["files"] == 3 and details["files_reused"] == 1  # a.txt, before the bad line
    assert details["bytes_read"] == len("b.txt" * 10) + len("c.txt" * 10)
    repo = open_repository(config.backup)
    newest = repo.find_snapshot(details["snapshot"])
    assert newest.parent is None  # a parent read in part is not named as one
    target = tmp_path / "out"
    restore(repo, newest, target)
    assert as_bytes(os.fsencode(inside(target, source))) == as_bytes(os.fsencode(source))
