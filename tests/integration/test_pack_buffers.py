"""A finished pack is the builder's own bytearray (not copied into bytes): every
storage, S3 single PUT and multipart alike, must take it and store it byte for byte."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from agents.backup.crypto import Crypto, MasterKey
from agents.backup.pack import BlobType, PackBuilder, pack_key, read_header
from agents.backup.storage import ObjectKind, open_storage
from agents.config import S3Config
from tests.support import services


def _pack(blobs: int, size: int) -> tuple[Crypto, object]:
    crypto = Crypto(MasterKey.generate())
    builder = PackBuilder()
    for n in range(blobs):
        data = os.urandom(size)
        blob_id = crypto.blob_id(data)
        builder.add(BlobType.DATA, blob_id, crypto.seal(data, blob_id))
        assert builder.size > 0 and len(builder) == n + 1
    return crypto, builder.finish(crypto)


@pytest.mark.parametrize("where", ["local", "s3-single", "s3-multipart"])
def test_pack_buffer_is_stored_byte_for_byte(
    where: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    crypto, pack = _pack(blobs=7, size=1 << 20)
    assert isinstance(pack.data, bytearray)  # the point of the test: no bytes copy
    assert hashlib.sha256(pack.data).hexdigest() == pack.id
    if where == "local":
        storage = open_storage(str(tmp_path / "repo"))
    else:
        server: services.S3Server = request.getfixturevalue("s3_server")
        bucket = request.getfixturevalue("s3_bucket")
        monkeypatch.setenv("OPSAGENT_T_AK", "testing")
        monkeypatch.setenv("OPSAGENT_T_SK", "testing")
        threshold = 6 * 2**20 if where == "s3-multipart" else 64 * 2**20
        cfg = S3Config(
            endpoint_url=server.endpoint_url,
            region="us-east-1",
            path_style=True,
            access_key_id="${OPSAGENT_T_AK}",
            secret_access_key="${OPSAGENT_T_SK}",
            multipart_threshold=threshold,
            multipart_chunk_size=5 * 2**20,
        )
        storage = open_storage(f"s3://{bucket}/buffers", cfg)
    storage.put(pack_key(pack.id), pack.data, ObjectKind.DATA)
    stored = storage.get(pack_key(pack.id))
    assert hashlib.sha256(stored).hexdigest() == pack.id
    assert read_header(crypto, stored, pack.id) == pack.entries
