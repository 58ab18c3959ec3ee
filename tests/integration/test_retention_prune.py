"""forget and prune against a real S3 server: nothing kept is lost, space comes back."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agents.backup.checker import check
from agents.backup.maintenance import forget, prune
from agents.backup.restorer import restore
from agents.backup.runner import init_repository, open_repository, run_backup, run_forget
from agents.config import Config, parse_config
from tests.support import services
from tests.support.trees import fingerprint


@pytest.fixture(autouse=True)
def _s3_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSAGENT_T_AK", "testing")
    monkeypatch.setenv("OPSAGENT_T_SK", "testing")


def make_config(tmp_path: Path, endpoint: str, bucket: str, source: Path, extra: str = "") -> Path:
    key = tmp_path / "repo.key"
    key.write_text("pw\n")
    path = tmp_path / "config.yml"
    path.write_text(
        f"""
host: h
state_dir: {tmp_path / "state"}
backup:
  repository: s3://{bucket}/repo
  password_file: {key}
  pack_size: 1MiB
  s3: {{endpoint_url: "{endpoint}", path_style: true, access_key_id: "${{OPSAGENT_T_AK}}",
        secret_access_key: "${{OPSAGENT_T_SK}}"{extra}}}
  sources: [{{name: docs, kind: files, paths: ["{source}"]}}]
  retention: {{keep_daily: 3, keep_weekly: 2, timezone: UTC}}
  prune: {{repack_threshold_percent: 20}}
"""
    )
    return path


def load(path: Path) -> Config:
    return parse_config(path.read_text(), str(path))


def evolve(source: Path, day: int, rng: random.Random) -> None:
    """Each day: some files change, some are added, some removed."""
    source.mkdir(exist_ok=True)
    for i in range(6):
        (source / f"day{day}-{i}.bin").write_bytes(rng.randbytes(300_000))
    existing = sorted(source.iterdir())
    for path in rng.sample(existing, min(4, len(existing))):
        path.unlink()


def build_history(tmp_path: Path, config: Config, source: Path, days: int = 12) -> dict[str, dict]:
    """Back up once a day for `days` days; returns snapshot id -> fingerprint of the tree."""
    assert config.backup is not None
    init_repository(config.backup, config.host)
    rng = random.Random(3)
    start = datetime(2026, 10, 1, 2, tzinfo=UTC)
    for day in range(days):
        evolve(source, day, rng)
        result = run_backup(config, when=start + timedelta(days=day))
        assert result.ok, result.summary
    repo = open_repository(config.backup)
    snapshots = repo.snapshots()
    assert len(snapshots) == days
    return {snapshots[-1].id: fingerprint(source)}


def test_forget_then_prune_keeps_every_kept_snapshot_whole(
    s3_server: services.S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    source = tmp_path / "docs"
    config_path = make_config(tmp_path, s3_server.endpoint_url, s3_bucket, source)
    config = load(config_path)
    assert config.backup is not None and config.backup.retention is not None
    latest = build_history(tmp_path, config, source)
    repo = open_repository(config.backup)
    before = {s.id: [e.path for e in repo.read_tree(s)] for s in repo.snapshots()}
    contents = {}
    for snap in repo.snapshots():
        target = tmp_path / f"before-{snap.short_id}"
        restore(repo, snap, target)
        contents[snap.id] = fingerprint(target / str(source).lstrip("/"))
    assert contents[next(iter(latest))] == next(iter(latest.values()))

    dry = forget(repo, config.backup.retention, dry_run=True)
    real = forget(repo, config.backup.retention)
    assert [(d.snapshot.id, d.keep, d.reasons) for d in dry.decisions] == [
        (d.snapshot.id, d.keep, d.reasons) for d in real.decisions
    ]
    kept = {d.snapshot.id for d in real.decisions if d.keep}
    # Oct 10, 11, 12 (daily); weekly: Mon Oct 12 (W42) and Sun Oct 11 (W41), both dailies
    assert len(kept) == 3
    assert sorted(real.removed) == sorted(set(before) - kept)

    size_before = sum(i.size for i in repo.storage.list("data/"))
    report = prune(open_repository(config.backup), repack_threshold_percent=20)
    size_after = sum(i.size for i in repo.storage.list("data/"))
    assert report.bytes_reclaimed > 0
    assert size_before - size_after == report.bytes_reclaimed
    assert report.packs_deleted + report.packs_repacked > 0

    repo = open_repository(config.backup)
    assert {s.id for s in repo.snapshots()} == kept
    for snap in repo.snapshots():
        target = tmp_path / f"after-{snap.short_id}"
        restore(repo, snap, target)
        assert fingerprint(target / str(source).lstrip("/")) == contents[snap.id]
    checked = check(repo, read_data=True)
    assert checked.ok, checked.errors
    assert checked.warnings == []
    assert len(list(repo.storage.list("index/"))) == 1

    second = prune(open_repository(config.backup))
    assert second.packs_deleted == 0 and second.packs_repacked == 0


def test_kill_9_during_prune_then_rerun(
    s3_server: services.S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    source = tmp_path / "docs"
    config_path = make_config(tmp_path, s3_server.endpoint_url, s3_bucket, source)
    config = load(config_path)
    assert config.backup is not None and config.backup.retention is not None
    build_history(tmp_path, config, source, days=10)
    repo = open_repository(config.backup)
    forget(repo, config.backup.retention)
    expected = {}
    for snap in open_repository(config.backup).snapshots():
        target = tmp_path / f"expect-{snap.short_id}"
        restore(open_repository(config.backup), snap, target)
        expected[snap.id] = fingerprint(target / str(source).lstrip("/"))
    seed = int(os.environ.get("OPSAGENT_TEST_SEED", "7"))
    delays = random.Random(seed).sample([0.6, 0.9, 1.2, 1.5, 1.8], 3)
    for delay in delays:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agents", "backup", "prune", "--config", str(config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            proc.wait(delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
    proc = subprocess.run(
        [sys.executable, "-m", "agents", "backup", "prune", "--config", str(config_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    repo = open_repository(config.backup)
    assert {s.id for s in repo.snapshots()} == set(expected)
    for snap in repo.snapshots():
        target = tmp_path / f"after-{snap.short_id}"
        restore(repo, snap, target)
        assert fingerprint(target / str(source).lstrip("/")) == expected[snap.id]
    checked = check(repo, read_data=True)
    assert checked.ok, checked.errors


def test_object_locked_snapshots_and_packs_survive(
    s3_server: services.S3Server, tmp_path: Path
) -> None:
    bucket = f"lock-{uuid.uuid4().hex[:10]}"
    s3_server.client().create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    source = tmp_path / "docs"
    config_path = make_config(
        tmp_path,
        s3_server.endpoint_url,
        bucket,
        source,
        extra=", object_lock: {mode: GOVERNANCE, days: 2}",
    )
    config = load(config_path)
    assert config.backup is not None
    build_history(tmp_path, config, source, days=6)
    repo = open_repository(config.backup)
    packs_before = {i.key for i in repo.storage.list("data/")}
    result, report = run_forget(config)
    assert report.removed == []
    assert len(report.locked) == 6 - 3
    assert "3 under Object Lock kept" in result.summary
    assert len(repo.snapshot_ids()) == 6
    pruned = prune(open_repository(config.backup))
    assert pruned.packs_deleted == 0 or pruned.locked
    assert packs_before <= {i.key for i in repo.storage.list("data/")}
    assert check(open_repository(config.backup), read_data=True).ok


def test_forget_cli_json_and_refusal(tmp_path: Path) -> None:
    source = tmp_path / "docs"
    source.mkdir()
    (source / "a").write_text("a")
    key = tmp_path / "repo.key"
    key.write_text("pw\n")
    config_path = tmp_path / "c.yml"
    config_path.write_text(
        f"""
state_dir: {tmp_path / "state"}
backup:
  repository: {tmp_path / "repo"}
  password_file: {key}
  sources: [{{name: docs, kind: files, paths: ["{source}"]}}]
  retention: {{keep_last: 1}}
"""
    )
    config = load(config_path)
    assert config.backup is not None
    init_repository(config.backup, config.host)
    for day in (1, 2, 3):
        assert run_backup(config, when=datetime(2026, 1, day, tzinfo=UTC)).ok
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "agents",
            "backup",
            "forget",
            "--dry-run",
            "--json",
            "--config",
            str(config_path),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert [(r["time"][:10], r["keep"], r["reasons"]) for r in out["snapshots"]] == [
        ("2026-01-03", True, ["last snapshot"]),
        ("2026-01-02", False, []),
        ("2026-01-01", False, []),
    ]
    assert len(open_repository(config.backup).snapshot_ids()) == 3
    proc = subprocess.run(
        [sys.executable, "-m", "agents", "backup", "forget", "--config", str(config_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0
    assert "1 snapshot(s) kept, 2 removed" in proc.stdout
    assert len(open_repository(config.backup).snapshot_ids()) == 1


def test_versioned_bucket_old_versions_removed_only_when_configured(
    s3_server: services.S3Server, tmp_path: Path
) -> None:
    client = s3_server.client()
    results = {}
    for remove_versions in (False, True):
        bucket = f"ver-{uuid.uuid4().hex[:10]}"
        client.create_bucket(Bucket=bucket)
        client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        work = tmp_path / str(remove_versions)
        work.mkdir()
        source = work / "docs"
        config_path = make_config(work, s3_server.endpoint_url, bucket, source)
        if remove_versions:
            text = config_path.read_text().replace(
                "prune: {repack_threshold_percent: 20}",
                "prune: {repack_threshold_percent: 20, delete_old_versions: true}",
            )
            config_path.write_text(text)
        config = load(config_path)
        assert config.backup is not None and config.backup.retention is not None
        build_history(work, config, source, days=6)
        forget(
            open_repository(config.backup),
            config.backup.retention,
            delete_old_versions=config.backup.prune.delete_old_versions,
        )
        prune(
            open_repository(config.backup),
            delete_old_versions=config.backup.prune.delete_old_versions,
        )
        listing = client.list_object_versions(Bucket=bucket, Prefix="repo/snapshots/")
        results[remove_versions] = (
            len(listing.get("Versions", [])),
            len(listing.get("DeleteMarkers", [])),
        )
        assert len(open_repository(config.backup).snapshot_ids()) == 3
    assert results[False] == (6, 3)  # removed snapshots hide behind delete markers
    assert results[True] == (3, 0)  # their versions are gone


def test_init_warns_when_lock_outlasts_retention(
    s3_server: services.S3Server, tmp_path: Path
) -> None:
    bucket = f"lock-{uuid.uuid4().hex[:10]}"
    s3_server.client().create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    config_path = make_config(
        tmp_path,
        s3_server.endpoint_url,
        bucket,
        tmp_path,
        extra=", object_lock: {mode: GOVERNANCE, days: 35}",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "agents", "backup", "init", "--config", str(config_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "OPSAGENT_T_AK": "testing", "OPSAGENT_T_SK": "testing"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith(
        "warning: Object Lock keeps every object 35 days but the retention policy reaches"
        " only about 14 days"
    )
