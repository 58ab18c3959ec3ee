"""One storage test suite, run against the local directory and S3 (moto over HTTP) alike."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agents.backup.errors import NotFound, StorageError
from agents.backup.storage import ObjectKind, Storage, open_storage
from agents.backup.storage.base import STREAM_BLOCK
from agents.backup.storage.local import LocalStorage
from agents.backup.storage.s3 import S3Storage
from agents.config import S3Config
from tests.support import services
from tests.support.faultproxy import FaultPlan, FaultProxy


def s3_config(server: services.S3Server | FaultProxy, **extra: object) -> S3Config:
    return S3Config(
        endpoint_url=server.endpoint_url,
        region="us-east-1",
        path_style=True,
        access_key_id="${OPSAGENT_T_AK}",
        secret_access_key="${OPSAGENT_T_SK}",
        **extra,
    )


@pytest.fixture(autouse=True)
def _s3_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSAGENT_T_AK", "testing")
    monkeypatch.setenv("OPSAGENT_T_SK", "testing")


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "local":
        yield open_storage(str(tmp_path / "repo"))
    else:
        server = request.getfixturevalue("s3_server")
        bucket = request.getfixturevalue("s3_bucket")
        yield open_storage(f"s3://{bucket}/some/prefix", s3_config(server))


def test_put_get_and_ranges(storage: Storage) -> None:
    storage.put("config", b"hello world")
    assert storage.get("config") == b"hello world"
    assert storage.get("config", 6) == b"world"
    assert storage.get("config", 2, 3) == b"llo"
    assert storage.stat("config").size == 11
    storage.put("config", b"replaced")
    assert storage.get("config") == b"replaced"


def test_stream_gives_a_range_in_blocks(storage: Storage) -> None:
    body = bytes(range(256)) * (3 * STREAM_BLOCK // 256 + 7)
    storage.put("data/aa/pack", body, ObjectKind.DATA)
    blocks = list(storage.stream("data/aa/pack", 0, len(body)))
    assert b"".join(blocks) == body
    assert len(blocks) == 4 and all(len(b) <= STREAM_BLOCK for b in blocks)
    assert b"".join(storage.stream("data/aa/pack", 1000, 5000)) == body[1000:6000]
    assert list(storage.stream("data/aa/pack", 10, 0)) == []
    assert b"".join(storage.stream("data/aa/pack")) == body  # to the end, size unknown
    assert b"".join(storage.stream("data/aa/pack", 1000)) == body[1000:]
    with pytest.raises(NotFound):
        list(storage.stream("data/aa/missing", 0, 10))


def test_missing_objects_raise_not_found(storage: Storage) -> None:
    with pytest.raises(NotFound):
        storage.get("nope")
    with pytest.raises(NotFound):
        storage.stat("data/ab/nope")


def test_list_pages_past_a_thousand(storage: Storage) -> None:
    keys = [f"index/{i:05d}" for i in range(1105)]
    for key in keys:
        storage.put(key, b"x")
    storage.put("snapshots/a", b"y")
    listed = sorted(info.key for info in storage.list("index/"))
    assert listed == keys
    assert [i.key for i in storage.list("snapshots/")] == ["snapshots/a"]
    assert list(storage.list("locks/")) == []


def test_delete_verifies_and_tolerates_missing(storage: Storage) -> None:
    for i in range(5):
        storage.put(f"data/aa/{i}", b"z" * i, ObjectKind.DATA)
    storage.delete([f"data/aa/{i}" for i in range(3)] + ["data/aa/missing"])
    assert sorted(i.key for i in storage.list("data/")) == ["data/aa/3", "data/aa/4"]
    with pytest.raises(NotFound):
        storage.get("data/aa/0")


def test_no_leftovers_after_clean_writes(storage: Storage) -> None:
    storage.put("data/bb/x", b"1" * 1000, ObjectKind.DATA)
    assert storage.leftovers() == []


def test_local_refuses_escaping_keys(tmp_path: Path) -> None:
    local = LocalStorage(tmp_path / "repo")
    with pytest.raises(StorageError, match="invalid object key"):
        local.put("../outside", b"x")
    assert not (tmp_path / "outside").exists()


def test_s3_multipart_with_md5_and_leftovers(s3_server: services.S3Server, s3_bucket: str) -> None:
    proxy = FaultProxy(s3_server.port).start()
    try:
        cfg = s3_config(proxy, multipart_threshold=6 * 2**20, multipart_chunk_size=5 * 2**20)
        storage = S3Storage(s3_bucket, "p", cfg)
        data = bytes(range(256)) * (13 * 2**20 // 256)
        storage.put("data/cc/big", data, ObjectKind.DATA)
        assert storage.get("data/cc/big") == data
        parts = [r for r in proxy.requests if r.method == "PUT" and "partNumber=" in r.path]
        assert len(parts) == 3
        puts = [r for r in proxy.requests if r.method == "PUT"]
        assert all("Content-MD5" in r.headers for r in puts), "every write carries Content-MD5"
        client = s3_server.client()
        client.create_multipart_upload(Bucket=s3_bucket, Key="p/data/dd/broken")
        assert [x.split(" ")[0] for x in storage.leftovers()] == ["data/dd/broken"]
        assert storage.abort_leftovers() == 1
        assert storage.leftovers() == []
    finally:
        proxy.stop()


def test_s3_failed_multipart_is_aborted(s3_server: services.S3Server, s3_bucket: str) -> None:
    proxy = FaultProxy(s3_server.port, FaultPlan(forced=[])).start()
    try:
        cfg = s3_config(
            proxy, multipart_threshold=6 * 2**20, multipart_chunk_size=5 * 2**20, max_attempts=2
        )
        storage = S3Storage(s3_bucket, "p", cfg)
        # the create succeeds, the 3 parts fail on both attempts, the abort on its first
        proxy.plan.forced = [None] + ["503"] * 7  # type: ignore[list-item]
        with pytest.raises(StorageError, match="SlowDown"):
            storage.put("data/ee/big", b"x" * (11 * 2**20), ObjectKind.DATA)
        proxy.plan.forced = []
        assert storage.leftovers() == []
        with pytest.raises(NotFound):
            storage.stat("data/ee/big")
    finally:
        proxy.stop()


def test_s3_options_reach_the_objects(s3_server: services.S3Server, s3_bucket: str) -> None:
    cfg = s3_config(s3_server, storage_class="STANDARD_IA", sse="AES256", tags={"app": "acme"})
    storage = S3Storage(s3_bucket, "", cfg)
    storage.put("data/ff/pack", b"p", ObjectKind.DATA)
    storage.put("index/x", b"i", ObjectKind.META)
    client = s3_server.client()
    head = client.head_object(Bucket=s3_bucket, Key="data/ff/pack")
    assert head["StorageClass"] == "STANDARD_IA"
    assert head["ServerSideEncryption"] == "AES256"
    tags = client.get_object_tagging(Bucket=s3_bucket, Key="data/ff/pack")["TagSet"]
    assert tags == [{"Key": "app", "Value": "acme"}]


def test_s3_cold_class_never_used_for_metadata(
    s3_server: services.S3Server, s3_bucket: str
) -> None:
    storage = S3Storage(s3_bucket, "", s3_config(s3_server, storage_class="DEEP_ARCHIVE"))
    storage.put("snapshots/s", b"s", ObjectKind.META)
    storage.put("data/gg/p", b"p", ObjectKind.DATA)
    client = s3_server.client()
    assert client.head_object(Bucket=s3_bucket, Key="snapshots/s").get("StorageClass") in (
        None,
        "STANDARD",
    )
    assert client.head_object(Bucket=s3_bucket, Key="data/gg/p")["StorageClass"] == "DEEP_ARCHIVE"


def test_s3_object_lock_retention(s3_server: services.S3Server) -> None:
    bucket = f"lock-{uuid.uuid4().hex[:10]}"
    client = s3_server.client()
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    cfg = s3_config(s3_server, object_lock={"mode": "GOVERNANCE", "days": 3})
    storage = S3Storage(bucket, "r", cfg)
    storage.put("snapshots/locked", b"keep me")
    until = storage.retention("snapshots/locked")
    assert until is not None
    expected = datetime.now(UTC) + timedelta(days=3)
    assert abs((until - expected).total_seconds()) < 120


def test_s3_retries_through_faults(s3_server: services.S3Server, s3_bucket: str) -> None:
    proxy = FaultProxy(s3_server.port, FaultPlan(rate=0.3, seed=7)).start()
    try:
        storage = open_storage(f"s3://{s3_bucket}/f", s3_config(proxy, max_attempts=10))
        payloads = {f"data/hh/{i}": bytes([i]) * (1000 + i) for i in range(30)}
        for key, value in payloads.items():
            storage.put(key, value, ObjectKind.DATA)
        for key, value in payloads.items():
            assert storage.get(key) == value
        assert sorted(i.key for i in storage.list("data/")) == sorted(payloads)
        assert proxy.faults() > 5
    finally:
        proxy.stop()


def test_s3_stream_resumes_where_a_fault_cut_it(
    s3_server: services.S3Server, s3_bucket: str
) -> None:
    """A body reset half-way, a body cut short behind a lying Content-Length, a 503 and
    a dropped connection: the stream resumes with a ranged GET for the rest, and gives
    every byte once, in order."""
    plan = FaultPlan()
    proxy = FaultProxy(s3_server.port, plan).start()
    try:
        storage = open_storage(f"s3://{s3_bucket}/f", s3_config(proxy, max_attempts=5))
        body = bytes(range(251)) * (3 * STREAM_BLOCK // 251)
        storage.put("data/bb/pack", body, ObjectKind.DATA)
        plan.forced = ["reset", "truncate", "503", "drop"]
        assert b"".join(storage.stream("data/bb/pack", 5, len(body) - 5)) == body[5:]
        plan.forced = ["truncate", "reset"]  # no length asked: the Content-Range tells
        assert b"".join(storage.stream("data/bb/pack")) == body
        gets = [r for r in proxy.requests if r.method == "GET"]
        assert [r.fault for r in gets[:4]] == ["reset", "truncate", "503", "drop"]
        assert [r.fault for r in gets[5:7]] == ["truncate", "reset"]
        assert all(r.headers.get("Range", "").startswith("bytes=") for r in gets)
    finally:
        proxy.stop()


def test_s3_missing_bucket_is_one_line(s3_server: services.S3Server) -> None:
    storage = S3Storage("no-such-bucket-x", "p", s3_config(s3_server))
    with pytest.raises(StorageError) as info:
        list(storage.list("snapshots/"))
    assert str(info.value) == (
        f"bucket no-such-bucket-x at {s3_server.endpoint_url}: bucket does not exist"
    )


def test_s3_unreachable_endpoint_is_one_line() -> None:
    port = services.free_port()
    cfg = S3Config(
        endpoint_url=f"http://127.0.0.1:{port}",
        access_key_id="${OPSAGENT_T_AK}",
        secret_access_key="${OPSAGENT_T_SK}",
        max_attempts=2,
        connect_timeout=timedelta(seconds=1),
    )
    storage = S3Storage("bucket", "p", cfg)
    with pytest.raises(StorageError) as info:
        storage.get("config")
    assert str(info.value) == f"bucket bucket at http://127.0.0.1:{port}: endpoint unreachable"


def test_s3_falls_back_to_single_deletes(s3_server: services.S3Server, s3_bucket: str) -> None:
    proxy = FaultProxy(s3_server.port, refuse=("POST", "delete")).start()
    try:
        storage = S3Storage(s3_bucket, "d", s3_config(proxy))
        for i in range(4):
            storage.put(f"data/ii/{i}", b"x", ObjectKind.DATA)
        storage.delete([f"data/ii/{i}" for i in range(4)])
        assert list(storage.list("data/")) == []
        methods = [r.method for r in proxy.requests]
        assert methods.count("DELETE") == 4  # one by one, after the refused DeleteObjects
        assert any(r.method == "POST" and "delete" in r.path for r in proxy.requests)
    finally:
        proxy.stop()
