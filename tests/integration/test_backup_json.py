"""The backup, restore and restore-test commands print the documented schema: each
`--json` document validates against its model's JSON schema, and the model names every
key printed (and prints every field it names)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydantic import BaseModel

from agents.records import DOCUMENTS
from agents.records import backup as records
from tests.support import services
from tests.unit.test_records import _problems

REPO = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, sources: str) -> Path:
    key = tmp_path / "repo.key"
    key.write_text("json password\n")
    key.chmod(0o600)
    path = tmp_path / "config.yml"
    path.write_text(
        f"""
host: json-host
state_dir: {tmp_path / "state"}
backup:
  repository: {tmp_path / "repo"}
  password_file: {key}
  pack_size: 64KiB
  retention: {{keep_last: 1}}
  sources:
{sources}
restore_test:
  sandbox: {{root: {tmp_path / "sandbox"}}}
  max_rto: 1h
"""
    )
    return path


def _cli(config: Path, *args: str, code: int = 0, **env: str) -> Any:
    """Run `opsagent ARGS --json`; the JSON printed, after checking the exit code."""
    proc = subprocess.run(
        [sys.executable, "-m", "agents", *args, "--json", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, **env},
    )
    assert proc.returncode == code, (args, proc.stdout, proc.stderr)
    return json.loads(proc.stdout)


def _is(printed: Any, model: type[BaseModel]) -> None:
    """The document validates against the model's schema with no key the model lacks,
    and every field the model has is printed."""
    schema = model.model_json_schema()
    assert _problems(printed, schema, schema.get("$defs", {})) == []
    assert sorted(printed) == sorted(model.model_fields)


def test_backup_and_restore_json_is_the_documented_schema(tmp_path: Path) -> None:
    source = tmp_path / "source"
    (source / "sub").mkdir(parents=True)
    for n in range(4):
        (source / f"f{n}.txt").write_text(f"file {n}\n" * (n * 500 + 1))
    (source / "sub" / "random.bin").write_bytes(os.urandom(150_000))
    (source / os.fsdecode(b"odd\xff.txt")).write_text("a name that is not UTF-8\n")
    config = _config(tmp_path, f'    - {{name: docs, kind: files, paths: ["{source}"]}}')
    init = subprocess.run(
        [sys.executable, "-m", "agents", "backup", "init", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert init.returncode == 0, init.stderr

    run = _cli(config, "backup", "run", "--time", "2026-11-01T10:00:00+00:00")
    _is(run, records.BackupRun)
    assert run["repository"] is not None and run["sources"][0]["kind"] == "backup_source"
    _cli(config, "backup", "run", "--time", "2026-11-02T10:00:00+00:00")
    subprocess.run(
        [sys.executable, "-m", "agents", "backup", "key", "add", "--config", str(config)],
        check=True,
        capture_output=True,
        cwd=REPO,
        env={**os.environ, "OPSAGENT_NEW_PASSWORD": "second password"},
    )

    snapshots = _cli(config, "backup", "snapshots")
    assert len(snapshots) == 2
    for snapshot in snapshots:
        _is(snapshot, records.SnapshotSummary)
    _is(_cli(config, "backup", "show", "latest"), records.SnapshotSummary)
    listed = _cli(config, "backup", "show", "latest", "--ls")
    _is(listed, records.SnapshotFiles)
    assert any(e["path"].endswith("odd\udcff.txt") for e in listed["entries"])
    _is(_cli(config, "backup", "check", "--read-data"), records.RepositoryCheck)
    keys = _cli(config, "backup", "key", "list")
    assert [k["current"] for k in keys] == [True, False]
    for key in keys:
        _is(key, records.KeyRow)
    _is(_cli(config, "backup", "forget", "--dry-run"), records.ForgetRun)
    oldest = snapshots[0]["short_id"]
    _is(_cli(config, "backup", "forget", "--dry-run", oldest), records.ForgetSnapshotsPlan)

    target = tmp_path / "restored"
    planned = _cli(config, "restore", "latest", "--to", str(target), "--dry-run")
    _is(planned, records.FilesRestorePlan)
    restored = _cli(config, "restore", "latest", "--to", str(target))
    _is(restored, records.FilesRestore)
    again = _cli(config, "restore", "latest", "--to", str(target))
    assert len(again["skipped_existing"]) == restored["files"]
    _is(_cli(config, "restore-test", "plan"), records.RestoreTestPlan)
    _is(_cli(config, "restore-test", "run"), records.JobResult)
    history = _cli(config, "restore-test", "history")
    assert [r["kind"] for r in history] == ["restore_test"]
    _is(history[0], records.JobResult)

    removed = _cli(config, "backup", "forget", oldest)
    _is(removed, records.ForgetSnapshots)
    assert [i[:8] for i in removed["removed"]] == [oldest]
    _is(_cli(config, "backup", "forget"), records.ForgetRun)
    _is(_cli(config, "backup", "prune"), records.JobResult)

    # damage one pack: the repairs print their documents (and exit 1: data was lost)
    packs = sorted(p for p in (tmp_path / "repo" / "data").rglob("*") if p.is_file())
    pack = max(packs, key=lambda p: p.stat().st_size)
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pack.chmod(0o644)
    pack.write_bytes(bytes(data))
    check = _cli(config, "backup", "check", "--read-data", code=1)
    _is(check, records.RepositoryCheck)
    assert check["bad_packs"], check
    repaired = _cli(config, "backup", "repair", "packs", pack.name[:12], code=1)
    _is(repaired, records.PacksRepairReport)
    _is(_cli(config, "backup", "repair", "index", "--read-data"), records.IndexRepairReport)
    plan = _cli(config, "backup", "repair", "snapshots", "--dry-run", code=1)
    _is(plan, records.SnapshotsRepairReport)
    assert plan["dry_run"] and plan["repaired"][0]["replacement"] is None
    for row in plan["repaired"]:
        _is(row, records.SnapshotRepairRow)
    done = _cli(config, "backup", "repair", "snapshots", code=1)
    assert not done["dry_run"] and done["repaired"][0]["replacement"]

    # the person's actions are audited as before, now by the backup room
    audit = _cli(config, "audit")
    actions = [(a["action"], a["outcome"]) for a in reversed(audit) if a["action"] != "key add"]
    assert actions == [
        ("restore files", "ok"),
        ("restore files", "ok"),
        ("restore-test", "ok"),
        ("backup forget", "ok"),
        ("forget", "ok"),  # the jobs are audited as the daemon audits them
        ("prune", "ok"),
        ("backup repair packs", "ok"),
        ("backup repair index", "ok"),
        ("backup repair snapshots", "ok"),
        ("backup repair snapshots", "ok"),
    ]
    forget = next(a for a in audit if a["action"] == "backup forget")
    assert (forget["target"], forget["detail"]) == (oldest, {"removed": [oldest]})


@pytest.fixture
def pg_target() -> Iterator[str]:
    name = f"opsagent_j_{uuid.uuid4().hex[:10]}"
    yield f"{services.PG_ADMIN_DSN.rsplit('/', 1)[0]}/{name}"
    with psycopg.connect(services.PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'drop database if exists "{name}" with (force)')


def test_database_restore_json_is_the_documented_schema(
    pg_database: services.Database, pg_target: str, tmp_path: Path
) -> None:
    with psycopg.connect(pg_database.dsn, autocommit=True) as conn:
        conn.execute("create table t (id int primary key, v text)")
        conn.execute("insert into t select i, 'v' || i from generate_series(1, 20) i")
    config = _config(tmp_path, f'    - {{name: db, kind: postgres, dsn: "{pg_database.dsn}"}}')
    subprocess.run(
        [sys.executable, "-m", "agents", "backup", "init", "--config", str(config)],
        check=True,
        capture_output=True,
        cwd=REPO,
    )
    _cli(config, "backup", "run")
    restore = ["restore", "latest", "--database", pg_database.name, "--to", pg_target]
    plan = _cli(config, *restore, "--dry-run")
    _is(plan, records.DatabaseRestorePlan)
    assert plan["expected_seconds"] is None  # no restore test has run
    done = _cli(config, *restore, "--create")
    _is(done, records.DatabaseRestore)
    assert done["ok"] and done["tables"] == [{"expected": 20, "restored": 20, "table": "public.t"}]


def test_every_backup_document_is_in_docs_json() -> None:
    documented = {model for _, _, model in DOCUMENTS}
    printed = {
        records.BackupRun,
        records.SnapshotSummary,
        records.SnapshotFiles,
        records.RepositoryCheck,
        records.KeyRow,
        records.ForgetRun,
        records.ForgetSnapshotsPlan,
        records.ForgetSnapshots,
        records.IndexRepairReport,
        records.PacksRepairReport,
        records.SnapshotsRepairReport,
        records.FilesRestorePlan,
        records.FilesRestore,
        records.DatabaseRestorePlan,
        records.DatabaseRestore,
        records.RestoreTestPlan,
    }
    assert printed <= documented
