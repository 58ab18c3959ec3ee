"""Benchmark: the time to build a signed 90-day recovery report for 20 sources.

Writes a synthetic history through the real APIs into a temporary directory: one
restore test a day for 90 days, each testing 20 sources (half files, half PostgreSQL,
with their restore, files or database and SQL steps), every 15th day one source
failing and its case opened by the case rules, acknowledged and resolved; 10,000 packs
with their last checks. Then times, best of `--repeat`: reading the facts (state
database runs and pack checks, the case store), building the document (with the
coverage series over the 10,000 packs), signing it and writing its JSON and its HTML;
and the whole command a person runs, `opsagent report recovery --since 90d --out
report.html` in a fresh process (start-up, config, the same history, no repository to
open).

    .venv/bin/python bench/report_build.py [--days 90] [--sources 20] [--packs 10000]
        [--repeat 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agents.cases.rules import CaseRules  # noqa: E402
from agents.cases.store import CaseStore  # noqa: E402
from agents.config import CasesConfig  # noqa: E402
from agents.reports.files import document_json  # noqa: E402
from agents.reports.gather import RESTORE_TEST_SOURCE  # noqa: E402
from agents.reports.html import render_html  # noqa: E402
from agents.reports.recovery import RecoveryInputs, build_recovery  # noqa: E402
from agents.reports.signing import create_key, sign  # noqa: E402
from agents.results import CheckResult, Severity, Status  # noqa: E402
from agents.state import StateDB  # noqa: E402

UNTIL = datetime(2026, 12, 2, 20, 0, tzinfo=UTC)


def restore_run(at: datetime, sources: int, failing: int | None) -> CheckResult:
    """A restore test of `sources` sources as the runner records it."""
    steps: list[dict[str, object]] = []
    tested: dict[str, dict[str, object]] = {}
    for i in range(sources):
        name, snap = f"src{i:02d}", f"{i:02d}{at:%m%d}abcdef0123"
        ok = i != failing
        label = f"{name} snapshot {snap[:8]}"
        if i % 2 == 0:
            steps.append(
                {"name": "restore", "ok": ok, "seconds": 20.0, "summary": f"{label}: 900 files"}
            )
            if ok:
                steps.append(
                    {
                        "name": "files",
                        "ok": True,
                        "seconds": 4.0,
                        "summary": f"{label}: match",
                        "details": {"files": 900, "bytes": 10**8},
                    }
                )
        else:
            steps.append(
                {
                    "name": "database",
                    "ok": ok,
                    "seconds": 30.0,
                    "summary": f"{label} app: facts",
                    "details": {"tables": 40, "schema_fingerprint": "sha256:" + "ab" * 32},
                }
            )
            if ok:
                steps.append(
                    {
                        "name": "sql",
                        "ok": True,
                        "seconds": 0.5,
                        "summary": f"{label} app: 3 true",
                        "details": {"assertions": 3},
                    }
                )
        tested[name] = {
            "snapshot": snap,
            "snapshot_time": (at - timedelta(hours=4)).isoformat(),
            "ok": ok,
            "summary": "restored and verified" if ok else f"{label}: failed",
        }
    steps.append({"name": "data", "ok": True, "seconds": 60.0, "summary": "packs verified"})
    return CheckResult(
        name="restore_test",
        kind="restore_test",
        host="bench-host",
        status=Status.OK if failing is None else Status.FAILED,
        severity=Severity.CRITICAL,
        summary="restored" if failing is None else f"step restore failed: src{failing:02d}",
        details={
            "run_id": f"rt-{at:%Y%m%d}",
            "snapshots": {n: str(s["snapshot"]) for n, s in tested.items()},
            "sources": tested,
            "steps": steps,
            "rto_seconds": 900.0 + at.day,
            "rpo_seconds": 14400.0,
        },
        duration_seconds=960.0,
        started_at=at,
    )


def write_history(root: Path, days: int, sources: int, packs: int) -> tuple[StateDB, CaseStore]:
    state = StateDB(root / "state.db")
    store = CaseStore(f"sqlite:///{root / 'cases.db'}")
    rules = CaseRules(store, CasesConfig())
    for day in range(days):
        at = UNTIL - timedelta(days=days - day) + timedelta(hours=10)
        failing = (day // 15) % sources if day % 15 == 7 else None
        run = restore_run(at, sources, failing)
        state.record_result(run)
        if failing is not None:
            case = rules.observe(run)
            assert case is not None
            store.acknowledge(case.id, at + timedelta(hours=1), "ops")
            store.resolve(case.id, at + timedelta(hours=6), "ops", "fixed")
    for day in range(31):
        when = UNTIL - timedelta(days=31 - day)
        share = [f"{p:064x}" for p in range(packs) if p % 31 == day]
        state.record_pack_checks(share, when)
    return state, store


def build_once(state: StateDB, store: CaseStore, days: int, packs: int, key: object) -> float:
    start = time.perf_counter()
    since = UNTIL - timedelta(days=days)
    runs = state.runs_between("restore_test", since, UNTIL)
    cases = [c for c in store.cases(since=since) if c.source == RESTORE_TEST_SOURCE]
    doc = build_recovery(
        RecoveryInputs(
            runs=runs,
            cases=cases,
            since=since,
            until=UNTIL,
            packs={f"{p:064x}": 16 * 2**20 for p in range(packs)},
            pack_checks=state.pack_checks(),
            full_every=timedelta(days=31),
            daily_budget=20 * 2**30,
            rto_target=6 * 3600.0,
            hosts=["bench-host"],
        )
    )
    signed = sign(doc, key)  # type: ignore[arg-type]
    text = document_json(signed)
    page = render_html(signed)
    seconds = time.perf_counter() - start
    assert len(doc["recovery"]["sources"]) > 0 and len(text) > 1000 and len(page) > len(text)
    return seconds


def command_once(root: Path, days: int) -> float:
    """`opsagent report recovery --out report.html` over the history, in a new process."""
    config = root / "config.yml"
    config.write_text(
        f"host: bench-host\nstate_dir: {root}\ncases: {{store: 'sqlite:///{root / 'cases.db'}'}}\n"
    )
    start = time.perf_counter()
    period = ["--since", f"{days}d", "--until", UNTIL.isoformat()]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "agents",
            "report",
            "recovery",
            "--config",
            str(config),
            *period,
            "--out",
            str(root / "r.html"),
        ],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--sources", type=int, default=20)
    parser.add_argument("--packs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="opsagent-report-bench-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        state, store = write_history(root, args.days, args.sources, args.packs)
        written = time.perf_counter() - started
        key = create_key(root / "report.key")
        times = [build_once(state, store, args.days, args.packs, key) for _ in range(args.repeat)]
        (root / "report-signing.key").write_bytes((root / "report.key").read_bytes())
        (root / "report-signing.key").chmod(0o600)
        commands = [command_once(root, args.days) for _ in range(args.repeat)]
        doc_bytes = len(
            document_json(
                sign(
                    build_recovery(
                        RecoveryInputs(
                            runs=state.runs_between(
                                "restore_test", UNTIL - timedelta(days=args.days), UNTIL
                            ),
                            cases=store.cases(),
                            since=UNTIL - timedelta(days=args.days),
                            until=UNTIL,
                        )
                    ),
                    key,
                )
            ).encode()
        )
    figures = {
        "days": args.days,
        "sources": args.sources,
        "packs": args.packs,
        "source_tests": args.days * args.sources,
        "history_written_seconds": round(written, 2),
        "build_best_seconds": round(min(times), 3),
        "build_worst_seconds": round(max(times), 3),
        "command_best_seconds": round(min(commands), 3),
        "command_worst_seconds": round(max(commands), 3),
        "document_bytes": doc_bytes,
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(
            f"{args.days}-day recovery report, {args.sources} sources"
            f" ({figures['source_tests']} source tests), {args.packs} packs:"
            f" built, signed, serialised and rendered in {figures['build_best_seconds']} s"
            f" (best of {args.repeat}; worst {figures['build_worst_seconds']} s);"
            f" document {doc_bytes // 1024} KiB; the whole command with --out HTML"
            f" {figures['command_best_seconds']} s (worst {figures['command_worst_seconds']} s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
