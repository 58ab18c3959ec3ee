"""Benchmark: scraping opsagent's exporter against node_exporter, in the same run.

Starts `opsagent run` from this checkout (`python -m agents` with PYTHONPATH set to it, not
whatever the venv's console script points at) with 20 disk checks every 10 s and the
exporter, and `prometheus-node-exporter` (Debian package), each on a loopback port; lets
them settle (every check has run), scrapes each 1,000 times, and prints p50/p99 scrape
latency, CPU seconds per 1,000 scrapes, the RSS after the scrapes (steady state) and the
peak RSS (VmHWM), with ratios against node_exporter. `--baseline DIR` runs a second
checkout's agent (e.g. the base commit) in the same run, scraped in turn with the others.

    .venv/bin/python bench/scrape_vs_node_exporter.py [--scrapes 1000] [--baseline /tmp/base]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.services import free_port, wait_for  # noqa: E402

CHECKS = 20


def peak_rss(pid: int) -> float:
    """VmHWM of a process in MiB: the most resident memory it ever held."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(url: str, pid: int, scrapes: int) -> dict[str, float]:
    """Scrape `url` `scrapes` times in a row; latency, CPU of `pid` and its memory after."""
    process = psutil.Process(pid)
    for _ in range(20):  # warm up
        urllib.request.urlopen(url, timeout=10).read()
    before = process.cpu_times()
    latencies = []
    for _ in range(scrapes):
        start = time.perf_counter()
        urllib.request.urlopen(url, timeout=10).read()
        latencies.append(time.perf_counter() - start)
    after = process.cpu_times()
    latencies.sort()
    cpu = (after.user + after.system) - (before.user + before.system)
    return {
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "cpu_per_1000": cpu * 1000 / scrapes,
        "rss_mib": process.memory_info().rss / 2**20,
        "peak_rss_mib": peak_rss(pid),
    }


def agent_config(work: Path, port: int) -> Path:
    """20 disk checks every 10 s and the exporter on `port`: the issue's agent."""
    work.mkdir(parents=True)
    checks = "\n".join(
        f"    - {{name: c{i}, kind: disk, path: /, interval: 10s}}" for i in range(CHECKS)
    )
    config = work / "config.yml"
    config.write_text(
        f"state_dir: {work / 'state'}\nexporter: {{listen: '127.0.0.1:{port}'}}\n"
        f"monitor:\n  checks:\n{checks}\n"
    )
    return config


def agent_env(tree: Path, pycache: Path) -> dict[str, str]:
    """The environment of `tree`'s agent: its code first, bytecode cached under `pycache`
    (even when PYTHONDONTWRITEBYTECODE is set), as an installed package has it."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPATH=str(tree), PYTHONPYCACHEPREFIX=str(pycache))
    return env


def start_agent(tree: Path, config: Path, pycache: Path) -> subprocess.Popen[bytes]:
    """`opsagent run` from `tree`'s code, its bytecode compiled beforehand: compiling at
    start would leave its garbage in the agent's memory."""
    env = agent_env(tree, pycache)
    warm = "import agents.cli, agents.daemon, agents.status"
    subprocess.run([sys.executable, "-c", warm], cwd=tree, env=env, check=True)
    return subprocess.Popen(
        [sys.executable, "-m", "agents", "run", "--config", str(config)],
        cwd=tree,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def main() -> None:
    """Start the agents and node_exporter, settle, scrape each in turn, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scrapes", type=int, default=1000)
    parser.add_argument("--settle", type=float, default=15.0, help="seconds before scraping")
    parser.add_argument("--baseline", type=Path, default=None, help="a second checkout")
    parser.add_argument("--out", type=Path, default=None, help="write the table here")
    parser.add_argument("--json", type=Path, default=None, help="write the figures as JSON")
    args = parser.parse_args()
    node = shutil.which("prometheus-node-exporter")
    if node is None:
        raise SystemExit("prometheus-node-exporter is not installed")
    trees = {"opsagent": ROOT}
    if args.baseline is not None:
        trees["opsagent (baseline)"] = args.baseline.resolve()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="opsagent-scrape-") as tmp:
        procs: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
        try:
            for i, (label, tree) in enumerate(trees.items()):
                port = free_port()
                config = agent_config(Path(tmp) / f"agent{i}", port)
                proc = start_agent(tree, config, Path(tmp) / "pycache")
                procs[label] = (proc, f"http://127.0.0.1:{port}/metrics")
            node_port = free_port()
            node_proc = subprocess.Popen(
                [node, f"--web.listen-address=127.0.0.1:{node_port}", "--no-collector.systemd"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            procs["node_exporter"] = (node_proc, f"http://127.0.0.1:{node_port}/metrics")
            for label, (proc, url) in procs.items():
                wait_for(label, lambda url=url: urllib.request.urlopen(url, timeout=1), proc=proc)
            time.sleep(args.settle)  # every check has run: the agent's working set is in
            for label, (proc, url) in procs.items():
                results[label] = measure(url, proc.pid, args.scrapes)
        finally:
            for proc, _url in procs.values():
                proc.terminate()
                proc.wait(10)
    report = table(results, args.scrapes)
    print(report)
    if args.out:
        args.out.write_text(report + "\n")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def table(results: dict[str, dict[str, float]], scrapes: int) -> str:
    """Markdown: one row per measure, one column per process, ratios to node_exporter."""
    rows = [
        ("scrape p50 ms", "p50_ms"),
        ("scrape p99 ms", "p99_ms"),
        ("CPU s per 1,000 scrapes", "cpu_per_1000"),
        ("RSS MiB (steady state)", "rss_mib"),
        ("peak RSS MiB (VmHWM)", "peak_rss_mib"),
    ]
    agents = [label for label in results if label != "node_exporter"]
    node = results["node_exporter"]
    header = ["measure", *agents, "node_exporter", *(f"{a} / node" for a in agents)]
    lines = [
        f"{scrapes} sequential scrapes each on loopback; opsagent with {CHECKS} checks"
        f" ({sys.executable}, {os.cpu_count()} CPUs).",
        "",
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
    ]
    for label, key in rows:
        cells = [f"{results[a][key]:.2f}" for a in agents] + [f"{node[key]:.2f}"]
        cells += [f"{results[a][key] / node[key]:.2f}" for a in agents]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
