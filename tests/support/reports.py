"""A restore-test and case history for report tests, written through the real APIs
(the state database, the case rules and store), and the report schema's validator."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema

from agents.cases.rules import CaseRules
from agents.cases.store import CaseStore
from agents.config import CasesConfig
from agents.results import CheckResult, Severity, Status
from agents.state import StateDB

REPO = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((REPO / "docs/report-schema.json").read_text())
UNTIL = datetime(2026, 12, 2, 20, 0, tzinfo=UTC)
SNAP_FILES, SNAP_DB = "f1e2d3c4b5a69788", "0a1b2c3d4e5f6071"


def run_cli(
    *args: str, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`opsagent ARGS` in a new process from this checkout, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "agents", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
        check=False,
    )


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a refused command (no traceback)."""
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


def valid(doc: dict[str, Any]) -> dict[str, Any]:
    """The document, after checking it against docs/report-schema.json."""
    jsonschema.Draft202012Validator(SCHEMA).validate(doc)
    return doc


def t(text: str) -> datetime:
    return datetime.fromisoformat(text)


# --- a restore-test history, shaped as agents.restore_test.runner records it ----------


def restore_run(at: str, rto: float, fail: str | None = None, host: str = "web1") -> CheckResult:
    """One restore test of sources `files` and `db` at `at`; `fail` names the source whose
    step fails. Snapshots were taken one hour before the test."""
    started = t(at)
    snap_time = (started - timedelta(hours=1)).isoformat()
    files_ok, db_ok = fail != "files", fail != "db"
    steps = [
        {
            "name": "restore",
            "ok": files_ok,
            "seconds": 40.0,
            "summary": f"files snapshot {SNAP_FILES[:8]}: "
            + ("60 files, 2097152 bytes" if files_ok else "1 damaged file(s): a.txt; bad MAC"),
        },
    ]
    if files_ok:
        steps.append(
            {
                "name": "files",
                "ok": True,
                "seconds": 5.0,
                "summary": f"files snapshot {SNAP_FILES[:8]}: 60 files, 2097152 bytes match",
                "details": {"files": 60, "bytes": 2097152},
            }
        )
    steps.append(
        {
            "name": "database",
            "ok": db_ok,
            "seconds": 30.0,
            "summary": f"db snapshot {SNAP_DB[:8]} app: "
            + ("facts match" if db_ok else "row counts differ: invoices 499 != 500"),
            "details": {"tables": 3, "schema_fingerprint": "sha256:5c4e"},
        }
    )
    if db_ok:
        steps.append(
            {
                "name": "sql",
                "ok": True,
                "seconds": 0.2,
                "summary": f"db snapshot {SNAP_DB[:8]} app: 2 assertion(s) true",
                "details": {"assertions": 2},
            }
        )
    steps.append(
        {
            "name": "data",
            "ok": True,
            "seconds": 3.0,
            "summary": "2 pack(s) verified",
            "details": {"packs": 2, "coverage": 0.6},
        }
    )
    failed = next((s for s in steps if not s["ok"]), None)
    return CheckResult(
        name="restore_test",
        kind="restore_test",
        host=host,
        status=Status.FAILED if failed else Status.OK,
        severity=Severity.CRITICAL,
        summary=f"step {failed['name']} failed: {failed['summary']}"
        if failed
        else "2 snapshot(s) restored and verified",
        details={
            "run_id": f"rt-{started:%Y%m%d%H%M}",
            "snapshots": {"files": SNAP_FILES, "db": SNAP_DB},
            "sources": {
                "files": {
                    "snapshot": SNAP_FILES,
                    "snapshot_time": snap_time,
                    "ok": files_ok,
                    "summary": "restored and verified" if files_ok else steps[0]["summary"],
                },
                "db": {
                    "snapshot": SNAP_DB,
                    "snapshot_time": snap_time,
                    "ok": db_ok,
                    "summary": "restored and verified"
                    if db_ok
                    else next(s["summary"] for s in steps if s["name"] == "database"),
                },
            },
            "steps": steps,
            "rto_seconds": rto,
            "rpo_seconds": 3600.0,
            "sandbox": None,
            "kept_until": None,
        },
        duration_seconds=rto + 2,
        started_at=started,
    )


def write_recovery_history(state: StateDB, store: CaseStore) -> dict[str, int]:
    """Five restore tests in the period (two failed, each opening a case through the
    case rules), one before it; pack checks. Returns the case ids."""
    rules = CaseRules(store, CasesConfig())
    # critical: 4 h to respond, 24 h to resolve, on the wall clock
    handled = {
        "2026-11-01T05:30:00+00:00": (
            ("2026-11-01T07:00:00+00:00", "ana"),  # 1h30m: met
            ("2026-11-01T15:30:00+00:00", "ana"),  # 10h: met
        ),
        "2026-12-01T06:00:00+00:00": (
            ("2026-12-01T11:00:00+00:00", "bo"),  # 5h: missed
            ("2026-12-02T07:00:00+00:00", "bo"),  # 25h: missed
        ),
    }
    for run in (
        restore_run("2026-08-01T10:00:00+00:00", 100.0),  # before the 90 days
        restore_run("2026-10-30T10:00:00+00:00", 300.0),
        # 01:30 EDT, the night Toronto leaves daylight saving time (06:00Z)
        restore_run("2026-11-01T05:30:00+00:00", 400.0, fail="db"),
        restore_run("2026-11-02T05:30:00+00:00", 552.0),
        restore_run("2026-12-01T06:00:00+00:00", 500.0, fail="files"),
        restore_run("2026-12-02T06:00:00+00:00", 120.0),
    ):
        state.record_result(run)
        if run.ok:
            continue
        case = rules.observe(run)
        assert case is not None and case.first_seen == run.started_at
        (ack, who), (done, _) = handled[run.started_at.isoformat()]
        store.acknowledge(case.id, t(ack), who)
        store.resolve(case.id, t(done), who, "fixed")
    first, second = sorted(store.cases(), key=lambda c: c.first_seen)
    return {"first": first.id, "second": second.id}
