"""The typed records between rooms: the JSON printed is the documented schema's, state rows
an older version wrote still load as typed details, and docs/json.md is the models'."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agents.config import load_config
from agents.monitor.checks import run_all
from agents.records import (
    DETAILS_BY_KIND,
    BackupSourceDetails,
    RestoreTestDetails,
    SlaRow,
    StatusDocument,
    details_of,
    json_docs,
)
from agents.results import CheckResult, Severity
from agents.state import StateDB
from agents.status import collect

REPO = Path(__file__).resolve().parents[2]

# rows as the version before the typed records wrote them (`CheckResult.to_json`)
OLD_ROWS: dict[str, dict[str, Any]] = {
    "web": {
        "details": {"latency_seconds": 0.0123, "status_code": 503},
        "duration_seconds": 0.013,
        "fingerprint": "",
        "host": "records-host",
        "kind": "http",
        "name": "web",
        "severity": "critical",
        "started_at": "2026-11-30T09:00:00+00:00",
        "status": "failed",
        "summary": "http://127.0.0.1:9/: HTTP 503",
    },
    "backup/docs": {
        "details": {
            "bytes": 5000,
            "bytes_added": 120,
            "bytes_read": 5000,
            "bytes_stored": 80,
            "files": 5,
            "snapshot": "ab" * 32,
            "source": "docs",
            "source_kind": "files",
            "warnings": [],
        },
        "duration_seconds": 1.5,
        "host": "records-host",
        "kind": "backup_source",
        "name": "backup/docs",
        "started_at": "2026-11-30T08:00:00+00:00",
        "status": "ok",
        "summary": "snapshot abababab: 5 files, 5000 bytes, 120 new",
    },
    "backup": {
        "details": {
            "bytes": 5000,
            "bytes_added": 120,
            "damaged": [],
            "logical_bytes": 5000,
            "repository": "/srv/repo",
            "repository_bytes": 4096,
            "snapshots": 3,
            "sources": {"docs": "ok"},
        },
        "duration_seconds": 2.0,
        "host": "records-host",
        "kind": "backup",
        "name": "backup",
        "severity": "critical",
        "started_at": "2026-11-30T08:00:00+00:00",
        "status": "ok",
        "summary": "1 source(s) backed up, 120 bytes added",
    },
    # no run_id, sandbox or coverage: the oldest restore tests recorded none
    "restore_test": {
        "details": {
            "rpo_seconds": 3600.0,
            "rto_seconds": 12.5,
            "snapshots": {"docs": "ab" * 32},
            "steps": [{"name": "restore", "ok": True, "seconds": 12.5, "summary": "ok"}],
        },
        "duration_seconds": 13.0,
        "host": "records-host",
        "kind": "restore_test",
        "name": "restore_test",
        "severity": "critical",
        "started_at": "2026-11-30T07:00:00+00:00",
        "status": "ok",
        "summary": "1 snapshot(s) restored and verified in 12s; RPO 1h",
    },
    "gauge": {
        "details": {"reading": 7, "unit": "widgets"},
        "host": "records-host",
        "kind": "from_a_newer_version",
        "name": "gauge",
        "started_at": "2026-11-30T09:00:00+00:00",
        "status": "ok",
    },
}


def _config(tmp_path: Path) -> Path:
    key = tmp_path / "repo.key"
    key.write_text("records-test\n")
    key.chmod(0o600)
    config = tmp_path / "config.yml"
    config.write_text(
        f"""
host: records-host
state_dir: {tmp_path / "state"}
monitor:
  checks:
    - {{name: root, kind: disk, path: /, min_free_percent: 0}}
    - {{name: truth, kind: command, command: ["true"]}}
backup:
  repository: {tmp_path / "repo"}
  password_file: {key}
  sources:
    - {{name: docs, kind: files, paths: ["{tmp_path}"]}}
    - {{name: never, kind: files, paths: ["{tmp_path}"]}}
"""
    )
    return config


def _write_old_rows(state_db: Path) -> None:
    """The rows inserted as an older version left them, not through today's code."""
    StateDB(state_db)  # the schema
    with sqlite3.connect(state_db) as db:
        for name, row in OLD_ROWS.items():
            finish = row["started_at"]
            db.execute(
                "INSERT INTO jobs (name, kind, last_start, last_finish, last_success,"
                " last_status, last_result, consecutive_failures, status_since)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    name,
                    row["kind"],
                    finish,
                    finish,
                    finish if row["status"] == "ok" else None,
                    row["status"],
                    json.dumps(row, sort_keys=True),
                    0 if row["status"] == "ok" else 1,
                    finish,
                ),
            )


def test_old_state_rows_load_as_typed_details(tmp_path: Path) -> None:
    state_db = tmp_path / "state.db"
    _write_old_rows(state_db)
    records = {r.name: r.last_result for r in StateDB(state_db).jobs()}
    assert all(result is not None for result in records.values())

    source = BackupSourceDetails.of(records["backup/docs"])  # type: ignore[arg-type]
    assert (source.source, source.bytes, source.blobs_new) == ("docs", 5000, None)
    tested = details_of(records["restore_test"])  # type: ignore[arg-type]
    assert isinstance(tested, RestoreTestDetails)
    assert tested.rto_seconds == 12.5 and tested.coverage is None and tested.run_id is None
    assert [(s.name, s.ok, s.seconds) for s in tested.steps or []] == [("restore", True, 12.5)]
    # a kind this version does not know keeps its plain dict, and stores back unchanged
    unknown = records["gauge"]
    assert details_of(unknown) == {"reading": 7, "unit": "widgets"}  # type: ignore[arg-type]
    assert unknown.to_dict()["details"] == OLD_ROWS["gauge"]["details"]  # type: ignore[union-attr]
    # an entry of the wrong type is kept, not lost, and reading it never raises
    odd = CheckResult.from_dict(OLD_ROWS["backup/docs"] | {"details": {"bytes": "lots"}})
    assert BackupSourceDetails.of(odd).bytes == "lots"


def test_status_json_is_the_documented_schema(tmp_path: Path) -> None:
    config_file = _config(tmp_path)
    config = load_config(config_file)
    config.state_dir.mkdir(parents=True)
    _write_old_rows(config.state_db)
    proc = subprocess.run(
        [sys.executable, "-m", "agents", "status", "--json", "--config", str(config_file)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 1, proc.stderr  # the failing http check and no agent running
    printed = json.loads(proc.stdout)
    schema = StatusDocument.model_json_schema()
    assert _problems(printed, schema, schema.get("$defs", {})) == []
    assert list(printed) == sorted(StatusDocument.model_fields)  # `--json` sorts keys
    backups = {b["source"]: b for b in printed["backups"]}
    assert backups["never"] == {"source": "never", "status": None, "last_success": None}
    assert (backups["docs"]["bytes"], backups["docs"]["bytes_added"]) == (5000, 120)
    assert printed["restore_test"]["rto_seconds"] == 12.5
    assert printed["repository"]["snapshots"] == 3

    # `/status` keeps the fields in the models' order; reading the JSON gives it back
    document = collect(config)
    served = json.loads(json.dumps(document.to_dict(), default=str))
    assert list(served) == list(StatusDocument.model_fields)
    assert StatusDocument.model_validate(served).to_dict() == served


def test_check_and_sla_json_are_the_documented_schema(tmp_path: Path) -> None:
    from agents.cases.sla import sla_report

    config = load_config(_config(tmp_path))
    assert config.monitor is not None
    for result in run_all(config.monitor.checks, config.host):
        printed = json.loads(result.to_json())
        schema = DETAILS_BY_KIND[result.kind].model_json_schema()
        assert printed["details"], result
        assert _problems(printed["details"], schema, schema.get("$defs", {})) == []
    schema = SlaRow.model_json_schema()
    rows = sla_report([], {}, datetime.now(UTC))
    assert [r["severity"] for r in rows] == [s.value for s in Severity]
    for row in rows:
        assert list(row) == list(SlaRow.model_fields)
        assert _problems(row, schema, {}) == []


def test_docs_json_is_generated_from_the_models() -> None:
    assert (REPO / "docs/json.md").read_text() == json_docs(), (
        "docs/json.md is stale: python -m agents.docs"
    )


def _problems(value: Any, schema: dict[str, Any], defs: dict[str, Any], at: str = "") -> list[str]:
    """Where the value strays from the JSON schema: an undocumented or missing field, or a
    value of another type."""
    if "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[1]]
    if "anyOf" in schema:
        fits = any(not _problems(value, option, defs, at) for option in schema["anyOf"])
        return [] if fits else [f"{at}: {value!r} fits none of {schema['anyOf']}"]
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{at}: {value!r} is not an object"]
        fields = schema.get("properties")
        if fields is None:
            return []
        found = [f"{at}.{k}: undocumented" for k in value if k not in fields]
        found += [f"{at}.{k}: missing" for k in schema.get("required", []) if k not in value]
        for key, item in value.items():
            if key in fields:
                found += _problems(item, fields[key], defs, f"{at}.{key}")
        return found
    if kind == "array":
        if not isinstance(value, list):
            return [f"{at}: {value!r} is not a list"]
        items = schema.get("items", {})
        return [p for i, v in enumerate(value) for p in _problems(v, items, defs, f"{at}[{i}]")]
    types: dict[str, Any] = {
        "string": str,
        "integer": int,
        "number": int | float,
        "boolean": bool,
        "null": type(None),
    }
    if kind in types:
        wrong = not isinstance(value, types[kind]) or (
            kind in ("integer", "number") and isinstance(value, bool)
        )
        return [f"{at}: {value!r} is not {kind}"] if wrong else []
    return []
