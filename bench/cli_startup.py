"""Benchmark: how long the command line takes to answer (issue #20, start-up time).

Times `opsagent --help`, `opsagent backup --help`, `opsagent status` (on a small local
config with a state_dir and a SQLite case store, created in a temp dir) and
`opsagent --version`, each N times in fresh processes, and prints a Markdown table of
the min and median wall and CPU time per command. `--baseline DIR` times a second checkout
(e.g. the base commit) too, alternating run by run, so a loaded machine weighs on both
alike. Bytecode is cached under the temp dir (PYTHONPYCACHEPREFIX, even when
PYTHONDONTWRITEBYTECODE is set), as an installed package has it, and the first run of
each command is a warm-up that is not counted.

    .venv/bin/python bench/cli_startup.py [--runs 20] [--baseline /tmp/base] [--only status]
        [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

COMMANDS: list[tuple[str, list[str], tuple[int, ...]]] = [
    ("opsagent --help", ["--help"], (0,)),
    ("opsagent backup --help", ["backup", "--help"], (0,)),
    ("opsagent status", ["status", "--config", "{config}"], (0, 1)),
    ("opsagent --version", ["--version"], (0,)),
]


def write_config(work: Path) -> Path:
    """A small local config: a state_dir, a SQLite case store, one command check."""
    (work / "state").mkdir()
    config = work / "config.yml"
    config.write_text(
        f"""
host: bench-host
state_dir: {work / "state"}
monitor:
  checks:
    - {{name: always-ok, kind: command, command: ["true"], interval: 1m}}
cases: {{store: 'sqlite:///{work / "cases.db"}'}}
"""
    )
    return config


def run_once(
    tree: Path, argv: list[str], codes: tuple[int, ...], pycache: Path
) -> tuple[float, float]:
    """One fresh `python -m agents ...` from `tree`; its wall time and its CPU time
    (user + system) in seconds. The CPU time is what the command costs; on a machine
    busy with other work, the wall time also counts the waits for a core."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPATH=str(tree), PYTHONPYCACHEPREFIX=str(pycache))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "agents", *argv],
        cwd=tree,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode not in codes:
        err = proc.stderr.decode(errors="replace").strip()[-500:]
        raise SystemExit(f"{tree}: opsagent {' '.join(argv)} exited {proc.returncode}: {err}")
    return seconds, cpu


def table(
    results: dict[str, dict[str, list[float]]], cpu: dict[str, dict[str, list[float]]], runs: int
) -> str:
    """Markdown: one row per command and tree, min and median in milliseconds, wall and CPU."""
    lines = [
        f"CLI start-up, {runs} fresh processes each ({sys.executable}, {os.cpu_count()} CPUs)",
        "",
        "| command | tree | min ms | median ms | CPU min ms | CPU median ms |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, by_tree in results.items():
        for tree, times in by_tree.items():
            lines.append(
                f"| `{name}` | {tree} | {min(times) * 1000:.0f} "
                f"| {statistics.median(times) * 1000:.0f} "
                f"| {min(cpu[name][tree]) * 1000:.0f} "
                f"| {statistics.median(cpu[name][tree]) * 1000:.0f} |"
            )
    return "\n".join(lines)


def main() -> None:
    """Time each command over --runs fresh processes; print the table, optionally JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--baseline", type=Path, default=None, help="a second checkout")
    parser.add_argument("--out", type=Path, default=None, help="write the timings as JSON")
    parser.add_argument(
        "--only",
        action="append",
        default=None,
        metavar="ARG",
        help="time only the commands whose first argument this is (status, --help, ...)",
    )
    args = parser.parse_args()
    commands = [c for c in COMMANDS if args.only is None or c[1][0] in args.only]
    trees = {"this": ROOT}
    if args.baseline is not None:
        trees["baseline"] = args.baseline.resolve()
    results: dict[str, dict[str, list[float]]] = {
        name: {t: [] for t in trees} for name, *_ in commands
    }
    cpu: dict[str, dict[str, list[float]]] = {name: {t: [] for t in trees} for name, *_ in commands}
    with tempfile.TemporaryDirectory(prefix="opsagent-cli-bench-") as tmp:
        config = write_config(Path(tmp))
        pycache = Path(tmp) / "pycache"
        for name, argv, codes in commands:
            argv = [a.replace("{config}", str(config)) for a in argv]
            for tree in trees.values():  # warm the page cache and bytecode first
                run_once(tree, argv, codes, pycache)
            for _ in range(args.runs):
                for label, tree in trees.items():
                    wall, used = run_once(tree, argv, codes, pycache)
                    results[name][label].append(wall)
                    cpu[name][label].append(used)
    report = table(results, cpu, args.runs)
    print(report)
    if args.out:
        summary = {
            name: {
                label: {
                    "min_s": min(t),
                    "median_s": statistics.median(t),
                    "cpu_min_s": min(cpu[name][label]),
                    "cpu_median_s": statistics.median(cpu[name][label]),
                    "runs": len(t),
                }
                for label, t in by_tree.items()
            }
            for name, by_tree in results.items()
        }
        args.out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
