"""A finished pack is the builder's own bytearray (not copied into bytes): every
storage, S3 single PUT and multipart alike, must take it and store it byte for byte."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from agents.backup.crypto import Crypto, MasterKey
from agents.backup.errors import IntegrityError
from agents.backup.pack import BlobType, PackBuilder, header_size, pack_key, read_header
from agents.backup.repository import BATCH_BLOBS, CHUNK_MAX, SMALL_BLOB
from agents.backup.runner import init_repository, open_repository
from agents.backup.storage import ObjectKind, open_storage
from agents.config import S3Config
from tests.integration.test_files_source import load, write_config
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


def test_a_spooled_pack_is_the_buffered_pack_and_is_linked_into_place(tmp_path: Path) -> None:
    """A local repository spools packs to an unnamed file: the same blobs give the same
    bytes (so the same pack ID) as the buffer, and storing it leaves no temporary."""
    storage = open_storage(str(tmp_path / "repo"))
    crypto = Crypto(MasterKey.generate())
    buffered, spooled = PackBuilder(1 << 20), PackBuilder(spool=storage.spool)  # type: ignore[attr-defined]
    for _ in range(5):
        data = os.urandom(300_000)
        blob_id = crypto.blob_id(data)
        sealed = crypto.seal(data, blob_id)
        buffered.add(BlobType.DATA, blob_id, sealed)
        spooled.add(BlobType.DATA, blob_id, sealed)
    from_buffer = buffered.finish(crypto)
    header = read_header(crypto, bytes(from_buffer.data), from_buffer.id)
    nonce_free = [(e.type, e.id, e.offset, e.length) for e in header]
    from_spool = spooled.finish(crypto)
    assert from_spool.data == b"" and from_spool.file is not None
    assert from_spool.size == len(from_buffer.data)
    assert [(e.type, e.id, e.offset, e.length) for e in from_spool.entries] == nonce_free
    with from_spool.file:
        storage.put_file(pack_key(from_spool.id), from_spool.file, ObjectKind.DATA)  # type: ignore[attr-defined]
        spooled_inode = os.fstat(from_spool.file.fileno()).st_ino
    # linked into place, not copied: the stored pack is the spool file itself
    assert (tmp_path / "repo" / pack_key(from_spool.id)).stat().st_ino == spooled_inode
    stored = storage.get(pack_key(from_spool.id))
    assert hashlib.sha256(stored).hexdigest() == from_spool.id
    blobs_end = from_spool.entries[-1].offset + from_spool.entries[-1].length
    assert stored[:blobs_end] == bytes(from_buffer.data)[:blobs_end]  # the same sealed blobs
    assert read_header(crypto, stored, from_spool.id) == from_spool.entries
    assert sorted(p.name for p in (tmp_path / "repo").rglob(".tmp-*")) == []


def test_a_backup_killed_mid_pack_leaves_no_spool_file_behind(tmp_path: Path) -> None:
    """kill -9 while packs are being written: the unnamed spool files vanish with the
    process; the repository holds only whole packs, and a rerun completes and checks."""
    source = tmp_path / "src"
    source.mkdir()
    for n in range(12):
        (source / f"f{n}.bin").write_bytes(os.urandom(3 << 20))
    key = tmp_path / "key"
    key.write_text("correct horse battery staple\n")
    key.chmod(0o600)
    config = tmp_path / "c.yml"
    config.write_text(
        f"host: h\nstate_dir: {tmp_path / 'state'}\nbackup:\n  repository: {tmp_path / 'repo'}\n"
        f"  password_file: {key}\n  pack_size: 4MiB\n"
        f"  sources: [{{name: files, kind: files, paths: ['{source}']}}]\n"
    )

    def opsagent(*argv: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "agents", *argv, "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    assert opsagent("backup", "init").wait(120) == 0
    run = opsagent("backup", "run")
    data = tmp_path / "repo" / "data"
    deadline = time.monotonic() + 120
    while run.poll() is None and time.monotonic() < deadline:
        if any(p.is_file() and not p.name.startswith(".") for p in data.rglob("*")):
            break  # a pack is stored, others are being spooled
        time.sleep(0.01)
    assert run.poll() is None, "the backup ended before it could be killed"
    run.send_signal(signal.SIGKILL)
    run.wait(60)
    assert [p.name for p in data.rglob(".tmp-*")] == []
    assert opsagent("backup", "run").wait(300) == 0
    check = opsagent("backup", "check", "--read-data")
    assert check.wait(300) == 0, check.stderr.read() if check.stderr else ""  # type: ignore[union-attr]
    assert [p.name for p in data.rglob(".tmp-*")] == []


def test_a_spool_file_that_cannot_be_linked_is_copied_whole(tmp_path: Path) -> None:
    """On a file system without O_TMPFILE the spool is an unlinked temporary (and one
    opened with O_EXCL can never be linked): `put_file` copies it, byte for byte, and
    leaves no temporary."""
    storage = open_storage(str(tmp_path / "repo"))
    payload = os.urandom(3 << 20)
    with tempfile.TemporaryFile(dir=tmp_path) as handle:  # O_TMPFILE|O_EXCL: unlinkable
        handle.write(payload)
        storage.put_file("data/ab/copied", handle, ObjectKind.DATA)  # type: ignore[attr-defined]
    assert storage.get("data/ab/copied") == payload
    assert [p.name for p in (tmp_path / "repo").rglob(".tmp-*")] == []


def test_small_blobs_sealed_in_batches_are_each_stored_once_and_read_back(tmp_path: Path) -> None:
    """Blobs up to SMALL_BLOB are sealed in batches (one zstd call each) and a batch goes
    whole into one pack: with packs far smaller than a batch's worth of blobs, every
    blob, compressible or not, empty, repeated within its batch or large between small
    ones, must be stored once, read back exact, and no pack may outgrow its buffer.
    Tree blobs go to packs that hold no data (a lost data pack costs no tree)."""
    config = load(write_config(tmp_path, [{"name": "files", "paths": [tmp_path]}]))
    assert config.backup is not None
    init_repository(config.backup, config.host)
    repo = open_repository(config.backup)
    rng = random.Random(5)
    blobs: list[bytes] = [b""]
    for n in range(1500):
        size = rng.randrange(SMALL_BLOB + 1)
        blobs.append(rng.randbytes(size) if n % 2 else bytes([n % 251]) * size)
        if n % 97 == 0:
            blobs.append(rng.randbytes(SMALL_BLOB + 1 + rng.randrange(CHUNK_MAX - SMALL_BLOB)))
        if n % 13 == 0:
            blobs.append(blobs[rng.randrange(len(blobs))])  # stored already, or pending
    pack_size = 256 * 1024
    # trees among them, small and large: packs of their own, whatever the order
    types = [BlobType.TREE if n % 50 == 7 else BlobType.DATA for n in range(len(blobs))]
    with repo.writer(pack_size=pack_size) as writer:
        ids = [writer.add(kind, data) for kind, data in zip(types, blobs, strict=True)]
        stats = writer.flush()
    unique = set(ids)
    assert (stats.blobs_new, stats.blobs_reused) == (len(unique), len(blobs) - len(unique))
    assert stats.blobs_new > 10 * stats.packs  # a batch went whole into each pack
    assert stats.bytes_stored > 100 * pack_size
    repo = open_repository(config.backup)
    for blob_id, data in zip(ids, blobs, strict=True):
        assert repo.load_blob(blob_id) == data
    kinds_by_pack: dict[str, set[BlobType]] = {}
    for blob_id in unique:
        location = repo.location(blob_id)
        assert location is not None
        kinds_by_pack.setdefault(location.pack, set()).add(location.type)
    assert all(len(kinds) == 1 for kinds in kinds_by_pack.values())
    assert {BlobType.TREE} in kinds_by_pack.values()
    packs = list(repo.storage.list("data/"))
    assert len(packs) == stats.packs
    assert max(p.size for p in packs) <= pack_size + CHUNK_MAX + 1024 + header_size(BATCH_BLOBS)


@pytest.mark.parametrize("spooled", [False, True])
def test_a_pack_left_unhashed_by_its_builder_is_named_by_its_bytes(
    spooled: bool, tmp_path: Path
) -> None:
    """BlobWriter's builders leave the pack's SHA-256 to the uploading thread
    (`FinishedPack.named`): it must be the hash of every byte stored, the spool file
    read back from its start whatever its position."""
    storage = open_storage(str(tmp_path / "repo"))
    crypto = Crypto(MasterKey.generate())
    spool = storage.spool if spooled else None  # type: ignore[attr-defined]
    unhashed, hashed = PackBuilder(1 << 20, spool, hashed=False), PackBuilder(1 << 20, spool)
    blobs = [os.urandom(200_000) for _ in range(4)]
    for data in blobs:
        blob_id = crypto.blob_id(data)
        sealed = crypto.seal(data, blob_id)
        unhashed.add_many([(BlobType.DATA, blob_id)], [sealed])
        hashed.add(BlobType.DATA, blob_id, sealed)
    pack = unhashed.finish(crypto)
    assert pack.id == ""
    named = pack.named()
    if spooled:
        assert named.file is not None
        with named.file:
            named.file.seek(12345)
            assert named.named() is named  # named once
            stored = (named.file.seek(0), named.file.read())[1]
    else:
        stored = bytes(named.data)
    assert named.id == hashlib.sha256(stored).hexdigest()
    assert read_header(crypto, stored, named.id) == named.entries
    other = hashed.finish(crypto)  # the header's nonce differs: the entries do not
    if other.file is not None:
        other.file.close()
    assert other.id and other.entries == named.entries


@pytest.mark.parametrize("encrypt_into", [True, False])
def test_a_blob_sealed_into_its_own_buffer_opens_like_any_sealed_blob(
    encrypt_into: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`seal_blob` (the backup's path: nonce and ciphertext in one new buffer, from a
    view of a file read whole) writes what `seal` writes, with cryptography's
    `encrypt_into` and without it (older releases)."""
    from agents.backup import crypto as crypto_module

    monkeypatch.setattr(crypto_module, "_ENCRYPT_INTO", encrypt_into)
    crypto = Crypto(MasterKey.generate())
    whole = os.urandom(3 << 20)
    view = memoryview(whole)[1 << 20 :]
    blob_id = crypto.blob_id(view)
    sealed = crypto.seal_blob(view, blob_id)
    assert isinstance(sealed, bytearray)
    assert len(sealed) == len(view) + 28
    assert crypto.open(bytes(sealed), blob_id) == whole[1 << 20 :]
    again = crypto.seal_blob(view, blob_id)
    assert again[:12] != sealed[:12]  # a fresh nonce each time
    with pytest.raises(IntegrityError):
        crypto.open(bytes(sealed), b"another blob's ID")


def test_small_tails_of_files_read_whole_do_not_hold_the_files_in_memory(tmp_path: Path) -> None:
    """A helper's find: chunks of a file read whole were kept as views of its buffer, and
    a small new chunk waits in a batch, so 400 files of 4 MiB of zeros (stored once)
    with a 2 KiB random tail each held every file's buffer: a backup at 1.1 GiB. The
    peak (the process's own high-water mark) must stay far below the data's size."""
    data = tmp_path / "data"
    data.mkdir()
    for n in range(400):
        with open(data / f"f{n:04d}", "wb") as handle:
            handle.truncate(4 << 20)  # sparse: quick to make, 4 MiB of zeros to read
            handle.seek(4 << 20)
            handle.write(os.urandom(2048))
    config = write_config(tmp_path, [{"name": "tails", "paths": [data]}])
    subprocess.run(
        [sys.executable, "-m", "agents", "backup", "init", "--config", str(config)],
        check=True,
        capture_output=True,
    )
    cli = (
        "import atexit, sys\n"
        "def peak():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM:'):\n"
        "            print('PEAK', line.split()[1], file=sys.stderr)\n"
        "atexit.register(peak)\n"
        "from agents.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", cli, "backup", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    peak_kib = int(done.stderr.split("PEAK")[-1].split()[0])
    assert peak_kib < 400 * 1024, f"peak {peak_kib} KiB for 1.6 GiB of mostly zeros"
