"""The whole agent under injected S3 faults: four days of backups with retention, a prune
and a restore test, through a proxy failing 20 % of requests in six ways (SlowDown, a
dropped connection, a reset mid-body, a body cut short behind a lying Content-Length,
latency, a stall past the read timeout). Afterwards, with the faults off, every kept
snapshot restores byte for byte, `check --read-data` is clean, and no snapshot is
duplicated or lost. Then a store that fails everything: each failure is a result with a
one-line reason and a case, and nothing partial is left."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest

from agents.backup.checker import check
from agents.backup.restorer import restore
from agents.backup.runner import init_repository, open_repository, run_backup, run_forget, run_prune
from agents.cases.rules import CaseRules
from agents.cases.store import CaseStore
from agents.config import parse_config
from agents.restore_test.runner import run_restore_test
from agents.results import run_guarded
from agents.state import StateDB
from tests.chaos import report
from tests.support.faultproxy import FaultPlan, FaultProxy
from tests.support.services import S3Server
from tests.support.trees import fingerprint, make_tree

SEED = int(os.environ.get("OPSAGENT_CHAOS_SEED", "20261127"))
KINDS = ("503", "drop", "reset", "truncate", "latency", "stall")


def _config(tmp: Path, endpoint: str, bucket: str, source: Path, attempts: int = 12):  # type: ignore[no-untyped-def]
    key = tmp / "repo.key"
    key.write_text("chaos\n")
    key.chmod(0o600)
    text = f"""
host: chaos-host
state_dir: {tmp / "state"}
backup:
  repository: s3://{bucket}/chaos
  s3: {{endpoint_url: "{endpoint}", path_style: true, access_key_id: "${{CHAOS_AK}}",
        secret_access_key: "${{CHAOS_SK}}", max_attempts: {attempts}, read_timeout: 1s,
        connect_timeout: 1s, max_concurrency: 4}}
  password_file: {key}
  pack_size: 1MiB
  sources: [{{name: files, kind: files, paths: ["{source}"]}}]
  retention: {{keep_last: 2}}
  prune: {{repack_threshold_percent: 1}}
restore_test:
  sandbox: {{kind: local, root: {tmp / "sandbox"}}}
  verify: {{data: {{full_every: 1d}}}}
"""
    return parse_config(text, "chaos.yml")


def _change(source: Path, rng: random.Random, day: int) -> None:
    files = sorted(p for p in source.rglob("*.txt") if p.is_file())
    for path in rng.sample(files, max(1, len(files) // 10)):
        path.write_text(f"day {day}: {rng.random()}\n" * rng.randint(1, 400))
    (source / f"new-day-{day}.bin").write_bytes(rng.randbytes(300_000))


def test_backup_forget_prune_restore_test_under_faults(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAOS_AK", s3_server.access_key)
    monkeypatch.setenv("CHAOS_SK", s3_server.secret_key)
    rng = random.Random(SEED)
    source = tmp_path / "source"
    make_tree(source, small_files=300, large_mib=3, seed=SEED % 1000)
    plan = FaultPlan(rate=0.0, seed=SEED, kinds=KINDS, latency_seconds=0.05, stall_seconds=1.5)
    proxy = FaultProxy(s3_server.port, plan).start()
    try:
        config = _config(tmp_path, proxy.endpoint_url, s3_bucket, source)
        assert config.backup is not None
        init_repository(config.backup, config.host)
        plan.rate = 0.2
        expected: dict[str, dict] = {}  # type: ignore[type-arg]
        for day in range(1, 5):
            _change(source, rng, day)
            result = run_backup(config)
            assert result.ok, result.summary
            repo = open_repository(config.backup)
            latest = repo.find_snapshot("latest")
            expected[latest.id] = fingerprint(source)
            forgotten, _report = run_forget(config)
            assert forgotten.ok, forgotten.summary
        pruned = run_prune(config)
        assert pruned.ok, pruned.summary
        tested = run_restore_test(config, StateDB(config.state_db))
        assert tested.ok, tested.summary
        faults = {kind: sum(1 for r in proxy.requests if r.fault == kind) for kind in KINDS}
        requests = len(proxy.requests)

        plan.rate = 0.0  # the verdict is read without faults
        repo = open_repository(config.backup)
        snapshots = repo.snapshots()
        assert len(snapshots) == 2, "keep_last 2 after four backups: no duplicate, none lost"
        assert len({s.id for s in snapshots}) == 2
        for snap in snapshots:
            target = tmp_path / f"restore-{snap.short_id}"
            restore(repo, snap, target)
            assert fingerprint(target / str(source).lstrip("/")) == expected[snap.id]
            shutil.rmtree(target)
        verdict = check(repo, read_data=True)
        assert verdict.ok, verdict.errors
    finally:
        proxy.stop()
    assert all(count > 0 for count in faults.values()), faults
    report.record(
        "faults",
        {
            "seed": SEED,
            "requests": requests,
            "faults": faults,
            "fault_rate": round(sum(faults.values()) / requests, 3),
            "snapshots_kept": 2,
        },
    )


def test_a_store_that_fails_everything_gives_one_line_results_and_cases(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAOS_AK", s3_server.access_key)
    monkeypatch.setenv("CHAOS_SK", s3_server.secret_key)
    source = tmp_path / "source"
    make_tree(source, small_files=50, large_mib=1, seed=5)
    plan = FaultPlan(rate=0.0, seed=SEED, kinds=("503", "drop", "reset"))
    proxy = FaultProxy(s3_server.port, plan).start()
    try:
        config = _config(tmp_path, proxy.endpoint_url, s3_bucket, source, attempts=3)
        assert config.backup is not None
        init_repository(config.backup, config.host)
        assert run_backup(config).ok
        before = sorted(
            i["Key"]
            for i in s3_server.client().list_objects_v2(Bucket=s3_bucket).get("Contents", [])
            if "/snapshots/" in i["Key"]
        )
        rules = CaseRules(CaseStore(config.cases_store), config.cases)
        plan.rate = 1.0
        (source / "more.txt").write_text("more\n")
        from agents.results import Severity

        emitted: list = []  # type: ignore[type-arg]
        results = [
            run_guarded(
                "backup",
                "backup",
                config.host,
                Severity.CRITICAL,
                lambda: run_backup(config, emit=emitted.append),
            ),
            run_guarded("prune", "prune", config.host, Severity.MAJOR, lambda: run_prune(config)),
            run_guarded(
                "restore_test",
                "restore_test",
                config.host,
                Severity.CRITICAL,
                lambda: run_restore_test(config, StateDB(config.state_db)),
            ),
        ]
        plan.rate = 0.0
        for result in [*emitted, *results]:
            assert not result.ok, result.name
            assert "\n" not in result.summary and "Traceback" not in result.summary
            rules.observe(result)
        after = sorted(
            i["Key"]
            for i in s3_server.client().list_objects_v2(Bucket=s3_bucket).get("Contents", [])
            if "/snapshots/" in i["Key"]
        )
        assert after == before, "a failed backup left a snapshot"
        assert check(open_repository(config.backup)).ok
        cases = CaseStore(config.cases_store).cases(status="open")
        kinds = {c.source.split(":")[0] for c in cases}
        assert kinds >= {"prune", "restore_test"} and kinds & {"backup", "backup_source"}, kinds
        report.record(
            "fail_everything",
            {"results": {r.name: r.summary for r in results}, "cases": len(cases)},
        )
    finally:
        proxy.stop()
