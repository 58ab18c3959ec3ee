"""The reliability report: chaos, crash, load and soak tests record their figures here,
and the end of the test session writes docs/reliability.md (the figures of the last run
of each test, kept in docs/reliability.json so a partial run updates only its part)."""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
FIGURES = REPO / "docs" / "reliability.json"
REPORT = REPO / "docs" / "reliability.md"
_recorded: dict[str, Any] = {}

# what is tried, how it is injected, what must hold: the report's fixed part
TRIALS = [
    (
        "faults",
        "S3 faults during backup, forget, prune, restore test",
        "tests/support/faultproxy.py between the agent and the S3 server fails 20 % of "
        "requests, seeded: 503 SlowDown, connection dropped, reset mid-body, body cut short "
        "behind a lying Content-Length, 50 ms latency, a 1.5 s stall past a 1 s read timeout",
        "four days of backups with keep_last 2, prune and a restore test all succeed; with "
        "faults off every kept snapshot restores byte for byte, check --read-data is clean, "
        "exactly 2 snapshots (none duplicated or lost)",
    ),
    (
        "fail_everything",
        "a store that fails every request",
        "the same proxy at a 100 % fault rate",
        "backup, prune and restore test each end in a result with a one-line reason and a "
        "case; no snapshot is added; the repository checks clean afterwards",
    ),
    (
        "crash",
        "kill -9 of the agent at random points",
        "seeded random delays; SIGKILL of `opsagent backup run`, `backup prune` and "
        "`restore-test run` (local repository) mid-run",
        "after each kill: the next run succeeds (stale locks of dead processes cleared, "
        "sandboxes swept), the repository checks clean, every snapshot restores; an outbox "
        "notification is delivered exactly once across kills of the sender",
    ),
    (
        "crash_matrix",
        "kill -9 after every storage operation, enumerated",
        "tests/support/crashpoints.py kills `backup init`, `backup run` (also on a repository "
        "with a damaged index), `forget`, `prune`, `key add/remove/passwd` and `repair "
        "index/packs/snapshots` after their k-th put or per-key delete, for every k, on a "
        "local directory and on S3 over HTTP; the longer ones also twice in a row",
        "the rerun succeeds, check --read-data is clean, every snapshot the command must "
        "keep is there, and every snapshot restores byte for byte to its source tree",
    ),
    (
        "intake_load",
        "1,000 alerts in 10 s into the Alertmanager intake",
        "directly (HTTP, 20 threads, duplicates and resolves mixed in) and through a real "
        "Alertmanager",
        "open cases equal the distinct firing fingerprints, no request lost, p99 latency reported",
    ),
    (
        "soak",
        "the daemon over time",
        "bench/soak.py (30 minutes by default; a short run in the suite): a check every "
        "second, a backup and a restore test every minute, S3 through the fault proxy",
        "RSS, open files, threads and state-database size do not grow without bound "
        "(fitted slope under a threshold); no scheduled run missed; no result lost",
    ),
    (
        "fuzz",
        "hostile input",
        "hypothesis: config YAML, Alertmanager bodies, snapshot manifests and index files "
        "encrypted with the test key (valid MACs) with absurd lengths, cycles, ../ paths",
        "never a traceback, hang or unbounded allocation; every rejection one line",
    ),
]


def record(name: str, figures: dict[str, Any]) -> None:
    _recorded[name] = {**figures, "at": datetime.now(UTC).isoformat(timespec="seconds")}


def write() -> None:
    """Merge this session's figures and rewrite the report (nothing when none recorded)."""
    if not _recorded:
        return
    previous: dict[str, Any] = {}
    if FIGURES.exists():
        try:
            previous = json.loads(FIGURES.read_text())
        except ValueError:
            previous = {}
    figures = {**previous, **_recorded}
    FIGURES.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    lines = [
        "# Reliability report",
        "",
        "Written by the test suite (`tests/chaos/`, and `bench/soak.py` for long soaks) at",
        "the end of each run; the figures are those of the last run of each trial, on",
        f"{platform.machine()} Python {platform.python_version()}.",
        "",
    ]
    for key, title, how, must in TRIALS:
        lines += [f"## {title}", "", f"- **How**: {how}.", f"- **Must hold**: {must}."]
        got = figures.get(key)
        if got:
            lines.append(f"- **Last run** ({got.get('at', '?')}):")
            for field, value in sorted(got.items()):
                if field != "at":
                    lines.append(f"  - {field}: {json.dumps(value, sort_keys=True)}")
        else:
            lines.append("- **Last run**: not run yet.")
        lines.append("")
    REPORT.write_text("\n".join(lines))
