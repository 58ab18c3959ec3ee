"""Crash consistency by enumeration: every repository-changing command is killed after
each of its storage operations in turn, on the local backend and on S3 over HTTP.

For a command that makes N storage operations (puts and per-key deletes), trial k
(1 <= k <= N) starts from the same repository, runs the command in a child that dies
by SIGKILL right after operation k (tests/support/crashpoints.py), then reruns the same
command to the end. After every trial: the rerun succeeded, `check --read-data` finds
no error, every snapshot the command must keep still exists, and every snapshot in the
repository restores byte for byte to the tree it was taken from. A second series
crashes the rerun too, at another step, before the final rerun. This is the proof of
the write orders in docs/repository-format.md.
"""

from __future__ import annotations

import os
import random
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agents.backup.checker import check
from agents.backup.repository import Repository
from agents.backup.restorer import restore
from agents.backup.storage import open_storage
from agents.config import S3Config
from tests.chaos import report
from tests.support import crashpoints
from tests.support.services import S3Server
from tests.support.trees import fingerprint

PASSWORD = "crash-matrix-password"
NEW_PASSWORD = "crash-matrix-new-password"
VERSIONS = 5
_FIGURES: dict[str, int] = {}  # "backend command" -> crash trials run, for the report
_TWICE: dict[str, dict[str, int]] = {}
MOTO_KEYS = {"MATRIX_AK": "testing", "MATRIX_SK": "testing"}


@dataclass
class World:
    """One backend's template repository and the trees each snapshot was taken from."""

    root: Path
    backend: str
    s3: S3Server | None
    bucket: str = ""
    sources: dict[int, Path] = field(default_factory=dict)  # version -> frozen copy
    trees: dict[str, dict] = field(default_factory=dict)  # type: ignore[type-arg]
    templates: dict[str, str] = field(default_factory=dict)  # state -> repository URL
    second_key: str = ""  # the key `key remove` removes
    damaged_pack: str = ""  # the pack `repair packs` rewrites

    def config(self, url: str, workdir: Path, password_file: Path | None = None) -> Path:
        """A config for `url` with its own state directory."""
        workdir.mkdir(parents=True, exist_ok=True)
        key = password_file or self.root / "password"
        s3 = ""
        if self.s3 is not None:
            s3 = (
                f'  s3: {{endpoint_url: "{self.s3.endpoint_url}", path_style: true,'
                ' access_key_id: "${MATRIX_AK}", secret_access_key: "${MATRIX_SK}",'
                " region: us-east-1}\n"
            )
        path = workdir / "config.yml"
        path.write_text(
            f"host: crash-host\nstate_dir: {workdir / 'state'}\nbackup:\n"
            f"  repository: {url}\n{s3}  password_file: {key}\n  pack_size: 256KiB\n"
            f"  lock_wait: 0s\n"
            f'  sources: [{{name: files, kind: files, paths: ["{self.root / "source"}"]}}]\n'
            f"  retention: {{keep_last: 2}}\n  prune: {{repack_threshold_percent: 10}}\n"
            f"cases: {{store: 'sqlite:///{workdir / 'cases.db'}'}}\n"
        )
        return path

    def fresh_url(self) -> str:
        name = uuid.uuid4().hex[:10]
        if self.backend == "s3":
            return f"s3://{self.bucket}/{name}"
        return str(self.root / "repos" / name)

    def copy(self, state: str) -> str:
        """A new repository holding exactly what the template `state` holds."""
        source, target = self.templates[state], self.fresh_url()
        if state == "empty":
            return target
        if self.backend == "local":
            shutil.copytree(source, target)
            return target
        assert self.s3 is not None
        client = self.s3.client()
        prefix = source.split("/", 3)[3] + "/"
        new_prefix = target.split("/", 3)[3] + "/"
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        ):
            for obj in page.get("Contents", []):
                client.copy_object(
                    Bucket=self.bucket,
                    Key=new_prefix + obj["Key"][len(prefix) :],
                    CopySource={"Bucket": self.bucket, "Key": obj["Key"]},
                )
        return target

    def open(self, url: str, password: str = PASSWORD) -> Repository:
        s3 = None
        if self.s3 is not None:
            s3 = S3Config(
                endpoint_url=self.s3.endpoint_url,
                path_style=True,
                access_key_id="${MATRIX_AK}",
                secret_access_key="${MATRIX_SK}",
            )
        return Repository.open(open_storage(url, s3), password)


def _write_version(source: Path, version: int) -> None:
    """Version v of the source: a tree whose every version shares and drops some data."""
    rng = random.Random(version)
    if source.exists():
        shutil.rmtree(source)
    (source / "docs").mkdir(parents=True)
    for n in range(6):
        (source / "docs" / f"note-{n}.txt").write_text(f"note {n} of version {min(version, n)}\n")
    # one file kept from the first version on, one replaced by every version
    (source / "stable.bin").write_bytes(random.Random(0).randbytes(150_000))
    (source / f"media-{version}.bin").write_bytes(rng.randbytes(200_000))
    (source / "link").symlink_to("stable.bin")


def _opsagent(config: Path, *argv: str, crash_after: int = 0) -> crashpoints.Outcome:
    return crashpoints.run([*argv, "--config", str(config)], crash_after, dict(MOTO_KEYS))


def _ok(outcome: crashpoints.Outcome, *codes: int) -> None:
    assert not outcome.killed and outcome.exit_code in (codes or (0,)), outcome.output[-2000:]
    assert "Traceback" not in outcome.output and "uncaught" not in outcome.output, outcome.output


@pytest.fixture(scope="module", params=["local", "s3"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    backend = request.param
    s3 = request.getfixturevalue("s3_server") if backend == "s3" else None
    root = tmp_path_factory.mktemp(f"matrix-{backend}")
    os.environ.update(MOTO_KEYS)  # for the repositories this process opens to verify
    world = World(root, backend, s3)
    if s3 is not None:
        world.bucket = f"matrix-{uuid.uuid4().hex[:8]}"
        s3.client().create_bucket(Bucket=world.bucket)
    (root / "password").write_text(PASSWORD + "\n")
    (root / "password").chmod(0o600)
    (root / "new-password").write_text(NEW_PASSWORD + "\n")
    (root / "new-password").chmod(0o600)
    source = root / "source"
    empty = world.fresh_url()
    world.templates["empty"] = empty
    url = world.fresh_url()
    config = world.config(url, root / "template")
    _ok(_opsagent(config, "backup", "init"))
    for version in range(1, VERSIONS + 1):
        _write_version(source, version)
        frozen = root / "versions" / str(version)
        shutil.copytree(source, frozen, symlinks=True)
        world.sources[version] = frozen
        _ok(_opsagent(config, "backup", "run"))
        latest = world.open(url).find_snapshot("latest")
        world.trees[latest.id] = fingerprint(source)
    world.templates["five"] = url
    two_keys = world.copy("five")
    _ok(
        _opsagent(
            world.config(two_keys, root / "t-keys"),
            *("backup", "key", "add", "--new-password-file", str(root / "new-password")),
        )
    )
    world.second_key = next(k["id"] for k in world.open(two_keys).list_keys() if not k["current"])
    world.templates["two-keys"] = two_keys
    forgotten = world.copy("five")
    _ok(_opsagent(world.config(forgotten, root / "t-forgotten"), "backup", "forget"))
    world.templates["forgotten"] = forgotten
    # a damaged index: one byte of one index file flipped
    damaged = world.copy("five")
    repo = world.open(damaged)
    name = sorted(repo.storage.list("index/"), key=lambda i: i.key)[0].key
    body = bytearray(repo.storage.get(name))
    body[len(body) // 2] ^= 0xFF
    repo.storage.delete([name])
    repo.storage.put(name, bytes(body))
    world.templates["damaged-index"] = damaged
    # lost data: the pack holding the first version's own media file is gone
    lost = world.copy("five")
    repo = world.open(lost)
    first = repo.snapshots()[0]
    media = next(e for e in repo.read_tree(first) if e.path.endswith("media-1.bin"))
    location = repo.location(bytes.fromhex(media.chunks[0]))
    assert location is not None
    repo.storage.delete([f"data/{location.pack[:2]}/{location.pack}"])
    # as the runbook says: the index first, so the lost blobs are known to be lost
    _ok(_opsagent(world.config(lost, root / "t-lost"), "backup", "repair", "index"))
    world.templates["lost-pack"] = lost
    # a damaged pack header (every blob intact): for `repair packs`
    header = world.copy("five")
    repo = world.open(header)
    pack_id, size = max(repo.stored_packs().items(), key=lambda item: item[1])
    key = f"data/{pack_id[:2]}/{pack_id}"
    body = bytearray(repo.storage.get(key))
    body[size - 10] ^= 0xFF
    repo.storage.delete([key])
    repo.storage.put(key, bytes(body))
    world.damaged_pack = pack_id
    world.templates["damaged-header"] = header
    _write_version(source, VERSIONS + 1)
    world.trees["new"] = fingerprint(source)
    yield world


@dataclass(frozen=True)
class Scenario:
    state: str  # the template repository the command starts from
    argv: tuple[str, ...]
    codes: tuple[int, ...] = (0,)  # exit codes the finishing run may give
    password_after: str = PASSWORD
    must_keep: Callable[[World, list[str]], set[str]] = lambda w, ids: set(ids)
    done: Callable[[Repository], bool] = lambda repo: True  # the command's work is there


def _repaired(repo: Repository) -> bool:
    snapshots = repo.snapshots()
    lost = [w for s in snapshots for w in s.warnings if w.startswith("lost in repair:")]
    return any(s.repaired_from for s in snapshots) and any("media-1.bin" in w for w in lost)


def _pruned(repo: Repository) -> bool:
    return len(repo.snapshot_ids()) == 2 and len(repo.stored_packs()) < 12


def _last_two(world: World, ids: list[str]) -> set[str]:
    return set(ids[-2:])


def _none(world: World, ids: list[str]) -> set[str]:
    return set()


SCENARIOS = {
    "init": Scenario("empty", ("backup", "init")),
    "backup": Scenario("five", ("backup", "run")),
    "forget": Scenario(
        "five",
        ("backup", "forget"),
        must_keep=_last_two,
        done=lambda repo: len(repo.snapshot_ids()) == 2,
    ),
    "prune": Scenario("forgotten", ("backup", "prune"), done=_pruned),
    "key-add": Scenario("five", ("backup", "key", "add", "--new-password-file", "{new}")),
    "key-remove": Scenario(
        "two-keys",
        ("backup", "key", "remove", "{second-key}"),
        done=lambda repo: len(repo.list_keys()) == 1,
    ),
    "key-passwd": Scenario(
        "five",
        ("backup", "key", "passwd", "--new-password-file", "{new}"),
        password_after=NEW_PASSWORD,
    ),
    "repair-index": Scenario("damaged-index", ("backup", "repair", "index")),
    "repair-snapshots": Scenario(
        "lost-pack",
        ("backup", "repair", "snapshots"),
        codes=(0, 1),
        must_keep=_none,
        done=_repaired,
    ),
    "repair-packs": Scenario(
        "damaged-header",
        ("backup", "repair", "packs", "{damaged-pack}"),
    ),  # done: `check --read-data` below fails while the damaged pack is there
    "backup-on-damage": Scenario("damaged-index", ("backup", "run")),
}


def _argv(world: World, scenario: Scenario) -> list[str]:
    return [
        a.replace("{new}", str(world.root / "new-password"))
        .replace("{second-key}", world.second_key)
        .replace("{damaged-pack}", world.damaged_pack)
        for a in scenario.argv
    ]


def _trial(world: World, scenario: Scenario, crashes: list[int], workdir: Path) -> str:
    """Start from the template, crash at each of `crashes` in turn, finish; verify."""
    url = world.copy(scenario.state)
    config = world.config(url, workdir)
    before = [] if scenario.state == "empty" else [s.id for s in world.open(url).snapshots()]
    argv = _argv(world, scenario)
    for k in crashes:
        crashed = _opsagent(config, *argv, crash_after=k)
        if not crashed.killed:  # fewer operations this time (the rerun has less to do)
            _ok(crashed, *scenario.codes)
    _ok(_opsagent(config, *argv), *scenario.codes)
    _verify(world, scenario, url, before, workdir, f"crashes at {crashes}")
    return url


def _verify(
    world: World, scenario: Scenario, url: str, before: list[str], workdir: Path, what: str
) -> None:
    repo = world.open(url, scenario.password_after)
    if scenario.state == "empty":
        assert repo.snapshot_ids() == [], what
        return
    assert scenario.done(repo), f"{what}: the command's work is not there"
    report = check(repo, read_data=True)
    assert report.ok or (scenario.state == "damaged-index" and scenario.argv[1] == "run"), (
        f"{what}: {report.errors}"
    )
    ids = set(repo.snapshot_ids())
    missing = scenario.must_keep(world, before) - ids
    assert not missing, f"{what}: snapshots {sorted(missing)} are gone"
    for snapshot in repo.snapshots():
        target = workdir / f"restore-{snapshot.short_id}"
        result = restore(repo, snapshot, target)
        assert not result.errors and not result.refused, f"{what}: {result.errors}"
        restored = fingerprint(target / str(world.root / "source").lstrip("/"))
        if snapshot.repaired_from is not None:
            expected = {
                path: value
                for path, value in world.trees[snapshot.repaired_from].items()
                if f"lost in repair: {world.root.as_posix().lstrip('/')}/source/{path}"
                not in snapshot.warnings
            }
            assert restored == expected, f"{what}: repaired {snapshot.short_id} differs"
        else:
            expected = world.trees.get(snapshot.id, world.trees["new"])
            assert restored == expected, f"{what}: snapshot {snapshot.short_id} differs"
        shutil.rmtree(target)


def _operations(world: World, scenario: Scenario, workdir: Path) -> int:
    url = world.copy(scenario.state)
    outcome = _opsagent(world.config(url, workdir), *_argv(world, scenario))
    _ok(outcome, *scenario.codes)
    assert outcome.operations > 0, "the command made no storage operation"
    return outcome.operations


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_kill_after_every_storage_operation(world: World, name: str, tmp_path: Path) -> None:
    scenario = SCENARIOS[name]
    total = _operations(world, scenario, tmp_path / "count")
    for k in range(1, total + 1):
        _trial(world, scenario, [k], tmp_path / f"k{k}")
    _FIGURES[f"{world.backend} {name}"] = total
    report.record("crash_matrix", {"single_kill_trials": dict(_FIGURES), **_TWICE})


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "name", ["backup", "prune", "repair-index", "repair-packs", "repair-snapshots"]
)
def test_kill_twice_then_finish(world: World, name: str, tmp_path: Path) -> None:
    scenario = SCENARIOS[name]
    total = _operations(world, scenario, tmp_path / "count")
    pairs = {(max(1, total // 2), 1), (max(1, total - 1), max(1, total // 3)), (1, total)}
    for first, second in sorted(pairs):
        _trial(world, scenario, [first, second], tmp_path / f"k{first}-{second}")
    _TWICE.setdefault("double_kill_trials", {})[f"{world.backend} {name}"] = len(pairs)
    report.record("crash_matrix", {"single_kill_trials": dict(_FIGURES), **_TWICE})
