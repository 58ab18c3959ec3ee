"""The local cache of an S3 repository's index files, snapshots and trees, over real HTTP:
a nightly backup reads none of them from the bucket again, a damaged or planted copy is
never used, another host's forget is followed, and check reads the bucket itself."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from agents.backup.cache import ObjectCache
from agents.backup.checker import run_check
from agents.backup.restore import RestoreRequest, run_restore
from agents.backup.runner import init_repository, open_repository, run_backup
from agents.backup.storage import open_storage
from agents.config import Config
from tests.integration.test_s3_round_trips import _config, _kind, _s3_credentials  # noqa: F401
from tests.support import services
from tests.support.faultproxy import FaultProxy
from tests.support.trees import fingerprint, make_tree


def _cache(config: Config) -> ObjectCache:
    assert config.backup is not None
    repo = open_repository(config.backup, config.state_dir)
    assert repo.cache is not None
    return repo.cache


def _backed_up_twice(tmp_path: Path, endpoint: str, bucket: str, cache: bool = True) -> Config:
    source = tmp_path / "src"
    make_tree(source, small_files=60, large_mib=2, seed=9)
    config = _config(tmp_path, endpoint, bucket, source, cache=cache)
    assert config.backup is not None
    (tmp_path / "state").mkdir(exist_ok=True)
    init_repository(config.backup, config.host)
    assert run_backup(config).ok
    (source / "changed.txt").write_text("the second night\n")
    assert run_backup(config).ok
    return config


def _reads(config: Config, proxy: FaultProxy) -> list[str]:
    """The kinds of request a backup with nothing changed makes."""
    proxy.requests.clear()
    result = run_backup(config)
    assert result.ok, result.summary
    return [_kind(r) for r in proxy.requests]


@pytest.mark.parametrize("cache", [True, False])
def test_a_nightly_backup_reads_no_index_snapshot_or_tree_from_the_bucket(
    s3_server: services.S3Server, s3_bucket: str, tmp_path: Path, cache: bool
) -> None:
    proxy = FaultProxy(s3_server.port).start()
    try:
        config = _backed_up_twice(tmp_path, proxy.endpoint_url, s3_bucket, cache)
        kinds = _reads(config, proxy)
    finally:
        proxy.stop()
    gets = {k: kinds.count(k) for k in ("GET index/", "GET snapshots/", "GET data/")}
    # the listings are still taken from the bucket: they are what another host changes
    assert kinds.count("LIST index/") == kinds.count("LIST snapshots/") == 1
    if cache:
        assert gets == {"GET index/": 0, "GET snapshots/": 0, "GET data/": 0}, kinds
    else:  # the same run without the cache reads them all: the counts above mean it
        assert gets["GET index/"] >= 2 and gets["GET snapshots/"] == 2, kinds
        assert gets["GET data/"] >= 1, kinds


@pytest.mark.parametrize("tree_damage", ["another tree's", "one byte flipped"])
def test_a_damaged_or_planted_copy_is_read_from_the_bucket_again(
    s3_server: services.S3Server, s3_bucket: str, tmp_path: Path, tree_damage: str
) -> None:
    proxy = FaultProxy(s3_server.port).start()
    try:
        config = _backed_up_twice(tmp_path, proxy.endpoint_url, s3_bucket)
        cache = _cache(config)
        storage = open_storage(config.backup.repository, config.backup.s3)  # type: ignore[union-attr]
        trees = sorted(cache.names("trees"))
        assert len(trees) >= 2 and cache.names("index") and len(cache.names("snapshots")) == 2
        for kind in ("index", "snapshots"):
            for name in cache.names(kind):  # one byte flipped in every copy
                path = cache.root / kind / name
                data = bytearray(path.read_bytes())
                data[len(data) // 2] ^= 0x40
                path.write_bytes(bytes(data))
        # every tree copy replaced by another tree's sealed bytes: they decrypt with the
        # key, but not as the blob their name says
        originals = [(cache.root / "trees" / name).read_bytes() for name in trees]
        if tree_damage == "another tree's":  # valid sealed bytes, of another blob
            for name, other in zip(trees, originals[1:] + originals[:1], strict=True):
                (cache.root / "trees" / name).write_bytes(other)
        else:  # the right length, one byte flipped: only opening it can tell
            for name, data in zip(trees, originals, strict=True):
                flipped = bytearray(data)
                flipped[len(flipped) // 2] ^= 0x01
                (cache.root / "trees" / name).write_bytes(bytes(flipped))
        kinds = _reads(config, proxy)
    finally:
        proxy.stop()
    assert kinds.count("GET index/") == len(cache.names("index"))
    assert kinds.count("GET snapshots/") == 2
    assert kinds.count("GET data/") >= 1  # the parent's tree, from its pack
    # the copies are good again: byte for byte what the bucket holds
    for kind in ("index", "snapshots"):
        for name in cache.names(kind):
            assert (cache.root / kind / name).read_bytes() == storage.get(f"{kind}/{name}")
    # and a restore through them gives the source back exactly
    target = tmp_path / "restored"
    run_restore(config, RestoreRequest(snapshot="latest", target=str(target)))
    assert fingerprint(target / (tmp_path / "src").relative_to("/")) == fingerprint(
        tmp_path / "src"
    )


def test_another_hosts_forget_removes_the_copies(
    s3_server: services.S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    config = _backed_up_twice(tmp_path, s3_server.endpoint_url, s3_bucket)
    assert config.backup is not None
    here = open_repository(config.backup, config.state_dir)
    older, newer = here.snapshots()
    other = _config(tmp_path, s3_server.endpoint_url, s3_bucket, tmp_path / "src", "elsewhere")
    assert other.backup is not None
    there = open_repository(other.backup, other.state_dir)
    assert there.cache is not None and not there.cache.names("snapshots")  # nothing kept yet
    open_storage(config.backup.repository, config.backup.s3).delete([f"snapshots/{older.id}"])
    listed = open_repository(config.backup, config.state_dir).snapshots()
    assert [s.id for s in listed] == [newer.id]
    cache = _cache(config)
    assert cache.names("snapshots") == {newer.id}
    assert cache.names("trees") == set(newer.tree)  # the forgotten one's own trees went


def test_check_reads_the_bucket_not_the_copies(
    s3_server: services.S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    """A stored index file damaged after it was copied: the backup does not see it (the
    copy is good), the check does, as a fresh host would."""
    config = _backed_up_twice(tmp_path, s3_server.endpoint_url, s3_bucket)
    assert config.backup is not None
    storage = open_storage(config.backup.repository, config.backup.s3)
    name = sorted(_cache(config).names("index"))[0]
    data = bytearray(storage.get(f"index/{name}"))
    data[-5] ^= 0x01
    s3_server.client().put_object(Bucket=s3_bucket, Key=f"repo/index/{name}", Body=bytes(data))
    cached = open_repository(config.backup, config.state_dir)
    cached.load_index()
    assert cached.damaged_index == {}
    report = run_check(open_repository(config.backup, config.state_dir))
    assert not report.ok
    assert any(name[:8] in line for line in report.errors + report.warnings), report


def test_a_cache_that_cannot_be_written_costs_only_requests(
    s3_server: services.S3Server, s3_bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = FaultProxy(s3_server.port).start()
    try:
        config = _backed_up_twice(tmp_path, proxy.endpoint_url, s3_bucket)
        cache = _cache(config)
        for kind in ("index", "snapshots", "trees"):
            for name in cache.names(kind):
                (cache.root / kind / name).unlink()
            (cache.root / kind).rmdir()
            (cache.root / kind).write_text("not a directory\n")
        with caplog.at_level(logging.WARNING, logger="opsagent.backup"):
            kinds = _reads(config, proxy)
    finally:
        proxy.stop()
    assert kinds.count("GET snapshots/") == 2  # read from the bucket, as without a cache
    warnings = [r.getMessage() for r in caplog.records if "local cache" in r.getMessage()]
    assert len(warnings) == 1 and "not used for this run" in warnings[0]


def test_a_repository_id_from_the_bucket_is_never_a_path(
    s3_server: services.S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    """The config object is the bucket's: an ID that climbs out of the state directory
    gets no cache at all, and nothing is written outside it."""
    config = _backed_up_twice(tmp_path, s3_server.endpoint_url, s3_bucket)
    assert config.backup is not None
    storage = open_storage(config.backup.repository, config.backup.s3)
    info = storage.get("config").decode()
    repository_id = open_repository(config.backup).info["id"]
    hostile = info.replace(repository_id, "../../../escaped")
    s3_server.client().put_object(Bucket=s3_bucket, Key="repo/config", Body=hostile.encode())
    repo = open_repository(config.backup, config.state_dir)
    assert repo.cache is None
    assert run_backup(config).ok
    assert not (tmp_path / "escaped").exists() and not (tmp_path.parent / "escaped").exists()


@pytest.mark.timeout(180)  # the first version blocked for ever opening a FIFO
def test_fifos_and_directories_planted_as_copies_cost_only_requests(
    s3_server: services.S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    """Every copy replaced by a FIFO or a directory (from the attack on the first
    version: backups and restores hung, or the cache was given up for good)."""
    config = _backed_up_twice(tmp_path, s3_server.endpoint_url, s3_bucket)
    cache = _cache(config)
    held = {kind: cache.names(kind) for kind in ("index", "snapshots", "trees")}
    for number, (kind, names) in enumerate(held.items()):
        for name in names:
            path = cache.root / kind / name
            path.unlink()
            if number % 2:
                os.mkfifo(path)
            else:
                (path / "planted").mkdir(parents=True)
    assert run_backup(config).ok
    assert {kind: cache.names(kind) >= names for kind, names in held.items()} == {
        "index": True,
        "snapshots": True,
        "trees": True,
    }
    assert config.backup is not None
    latest = open_repository(config.backup, config.state_dir).snapshots()[-1]
    held["trees"] = set(latest.tree)  # the older snapshots' trees were not read
    for kind, names in held.items():  # real copies again, in use
        assert all((cache.root / kind / name).is_file() for name in names), kind
    target = tmp_path / "restored"
    run_restore(config, RestoreRequest(snapshot="latest", target=str(target)))
    assert fingerprint(target / (tmp_path / "src").relative_to("/")) == fingerprint(
        tmp_path / "src"
    )
