"""Hostile input, generated: snapshot manifests, index files and file trees encrypted
with the repository's own key (so their MACs are valid and only parsing stands in the
way), and Alertmanager webhook bodies. Never a traceback, a hang or an unbounded
allocation: every rejection is a one-line error."""

from __future__ import annotations

import hashlib
import json
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.backup.errors import BackupError
from agents.backup.index import read_index_file
from agents.backup.pack import BlobType
from agents.backup.repository import _SNAPSHOT_ASSOCIATED, Repository
from agents.backup.restorer import restore
from agents.backup.snapshot import Snapshot
from agents.backup.storage import open_storage
from agents.cases.store import CaseStore
from agents.config import CasesConfig
from agents.errors import OpsagentError
from exporters.alertmanager import AlertmanagerIntake, IntakeError
from tests.chaos import report

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
_counts: dict[str, int] = {}


def _one_line(exc: BaseException) -> None:
    text = str(exc)
    assert text and "\n" not in text and "Traceback" not in text, repr(text)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repository:
    storage = open_storage(str(tmp_path_factory.mktemp("fuzz") / "repo"))
    return Repository.init(storage, "fuzz", "h", "u")


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=30),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
times = st.one_of(
    st.just("2026-11-01T00:00:00+00:00"),
    st.just("2026-11-01T00:00:00"),
    st.text(max_size=25),
    st.integers(),
)
manifests = st.fixed_dictionaries(
    {},
    optional={
        "time": times,
        "host": values,
        "source": values,
        "source_kind": values,
        "paths": values,
        "tree": st.one_of(
            values, st.lists(st.text(alphabet="0123456789abcdefxyz", max_size=70), max_size=3)
        ),
        "tags": values,
        "parent": values,
        "stats": values,
        "facts": values,
        "warnings": values,
    },
)


@SETTINGS
@given(manifest=st.one_of(manifests, values))
def test_hostile_manifests(repo: Repository, manifest: Any) -> None:
    plain = zstandard.ZstdCompressor().compress(json.dumps(manifest).encode())
    sealed = repo.crypto.seal(plain, _SNAPSHOT_ASSOCIATED)
    snapshot_id = hashlib.sha256(sealed).hexdigest()
    repo.storage.put(f"snapshots/{snapshot_id}", sealed)
    good = _good_snapshot(repo)
    try:
        for action in (repo.snapshots, lambda: repo.find_snapshot("latest")):
            try:
                action()
            except OpsagentError as exc:
                _one_line(exc)
        try:
            snapshot = repo.load_snapshot(snapshot_id)
            with tempfile.TemporaryDirectory() as target:
                result = restore(repo, snapshot, Path(target))
                assert not result.refused or all(isinstance(r, str) for r in result.refused)
        except OpsagentError as exc:
            _one_line(exc)
    finally:
        repo.storage.delete([f"snapshots/{snapshot_id}", f"snapshots/{good}"])
    _counts["manifests"] = _counts.get("manifests", 0) + 1


def _good_snapshot(repo: Repository) -> str:
    """A valid snapshot beside the hostile one: listing must not be derailed by it."""
    from datetime import UTC, datetime

    snap = Snapshot("", datetime.now(UTC), "h", "s", "files", ("/x",), ())
    return repo.save_snapshot(snap).id


@SETTINGS
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.builds(
            lambda hlen, header, entries: b"OPSIDX1\n" + struct.pack("<I", hlen) + header + entries,
            st.integers(0, 2**32 - 1),
            st.binary(max_size=80).map(bytes),
            st.binary(max_size=200),
        ),
        st.builds(
            lambda packs, entries: b"OPSIDX1\n" + struct.pack("<I", len(packs)) + packs + entries,
            st.one_of(
                st.just(b'{"packs": ["a"]}'),
                st.just(b'{"packs": 5}'),
                st.just(b'{"packs": [], "supersedes": {}}'),
                st.binary(max_size=40),
            ),
            st.binary(max_size=300),
        ),
    )
)
def test_hostile_index_files(repo: Repository, body: bytes) -> None:
    from agents.backup import index as index_module

    magic = index_module._MAGIC
    body = magic + body[8:] if body.startswith(b"OPSIDX1\n") else body
    sealed = repo.crypto.seal(zstandard.ZstdCompressor().compress(body), index_module._ASSOCIATED)
    started = time.monotonic()
    try:
        read_index_file(repo.crypto, sealed, "f" * 64)
    except OpsagentError as exc:
        _one_line(exc)
    assert time.monotonic() - started < 5
    _counts["index_files"] = _counts.get("index_files", 0) + 1


entries = st.fixed_dictionaries(
    {
        "path": st.one_of(
            st.text(max_size=20),
            st.sampled_from(["../escape", "/etc/passwd", "a/../../b", "", ".", "a/./b"]),
        ),
        "type": st.sampled_from(["file", "dir", "symlink", "fifo", ""]),
        "mode": st.integers(-1, 2**32),
        "mtime_ns": st.integers(-(2**63), 2**63),
    },
    optional={
        "size": st.integers(-1, 2**62),
        "chunks": st.lists(
            st.text(alphabet="0123456789abcdef", min_size=0, max_size=64), max_size=3
        ),
        "chunk_sizes": st.lists(st.integers(-1, 2**62), max_size=3),
        "target": st.sampled_from(["", "../../etc", "/etc/passwd", "x"]),
        "uid": st.integers(-1, 2**40),
        "bogus": values,
    },
)


@SETTINGS
@given(lines=st.lists(st.one_of(entries.map(json.dumps), st.text(max_size=40)), max_size=6))
def test_hostile_trees_restore_nothing_outside(repo: Repository, lines: list[str]) -> None:
    from datetime import UTC, datetime

    with repo.writer(3, 2**20) as writer:
        blob = writer.add(BlobType.TREE, "\n".join(lines).encode())
    snapshot = repo.save_snapshot(
        Snapshot("", datetime.now(UTC), "h", "s", "files", ("/x",), (blob.hex(),))
    )
    with tempfile.TemporaryDirectory() as parent:
        target = Path(parent) / "target"
        outside = {p for p in Path(parent).iterdir()}
        started = time.monotonic()
        try:
            restore(repo, snapshot, target)
        except OpsagentError as exc:
            _one_line(exc)
        assert time.monotonic() - started < 10
        assert {p for p in Path(parent).iterdir()} <= outside | {target}
    repo.storage.delete([f"snapshots/{snapshot.id}"])
    _counts["trees"] = _counts.get("trees", 0) + 1


alerts = st.fixed_dictionaries(
    {},
    optional={
        "status": st.one_of(st.sampled_from(["firing", "resolved"]), values),
        "labels": st.one_of(
            st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3), values
        ),
        "annotations": values,
        "fingerprint": st.one_of(st.text(max_size=20), values),
        "startsAt": values,
    },
)
messages = st.one_of(
    values,
    st.fixed_dictionaries(
        {
            "version": st.one_of(st.just("4"), values),
            "alerts": st.one_of(st.lists(alerts, max_size=4), values),
        },
        optional={"receiver": values, "truncatedAlerts": values, "status": values},
    ),
)


@SETTINGS
@given(message=messages)
def test_hostile_alertmanager_bodies(
    tmp_path_factory: pytest.TempPathFactory, message: Any
) -> None:
    store = _store(tmp_path_factory)
    intake = AlertmanagerIntake(store, CasesConfig(), "fuzz-host")
    try:
        counts = intake.handle(message)
        assert set(counts) == {"firing", "resolved"}
    except IntakeError as exc:
        _one_line(exc)
    except OpsagentError as exc:
        _one_line(exc)
    _counts["webhooks"] = _counts.get("webhooks", 0) + 1


_stores: dict[str, CaseStore] = {}


def _store(factory: pytest.TempPathFactory) -> CaseStore:
    if "s" not in _stores:
        _stores["s"] = CaseStore(f"sqlite:///{factory.mktemp('intake') / 'cases.db'}")
    return _stores["s"]


def test_fuzz_report() -> None:
    """Record how many hostile inputs the generators above produced (runs after them)."""
    assert _counts, "the fuzz tests ran first"
    report.record("fuzz", {"examples": dict(sorted(_counts.items())), "max_examples_each": 150})


def test_a_decompression_bomb_manifest_is_refused_within_its_cap(repo: Repository) -> None:
    """100 MiB of zeros compressed to a few KiB, sealed with the key: refused at the 64 MiB
    manifest cap in one line, not inflated."""
    compressor = zstandard.ZstdCompressor(level=1).compressobj()
    chunk = b"0" * 2**20
    bomb = b"".join(compressor.compress(chunk) for _ in range(100)) + compressor.flush()
    assert len(bomb) < 2**20
    sealed = repo.crypto.seal(bomb, _SNAPSHOT_ASSOCIATED)
    snapshot_id = hashlib.sha256(sealed).hexdigest()
    repo.storage.put(f"snapshots/{snapshot_id}", sealed)
    try:
        with pytest.raises(BackupError) as caught:
            repo.load_snapshot(snapshot_id)
        _one_line(caught.value)
        assert "malformed" in str(caught.value)
    finally:
        repo.storage.delete([f"snapshots/{snapshot_id}"])
