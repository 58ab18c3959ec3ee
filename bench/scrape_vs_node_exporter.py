"""Benchmark: scraping opsagent's exporter against node_exporter, in the same run.

Starts `opsagent run` with 20 checks configured and `prometheus-node-exporter` (Debian
package), each on a loopback port, scrapes each 1,000 times, and prints p50/p99
scrape latency, CPU seconds per 1,000 scrapes and steady-state RSS, with ratios.

    .venv/bin/python bench/scrape_vs_node_exporter.py [--scrapes 1000]
"""

from __future__ import annotations

import argparse
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


def measure(url: str, pid: int, scrapes: int) -> dict[str, float]:
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
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scrapes", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    node = shutil.which("prometheus-node-exporter")
    if node is None:
        raise SystemExit("prometheus-node-exporter is not installed")
    with tempfile.TemporaryDirectory(prefix="opsagent-scrape-") as tmp:
        work = Path(tmp)
        ops_port, node_port = free_port(), free_port()
        checks = "\n".join(
            f"    - {{name: c{i}, kind: disk, path: /, interval: 10s}}" for i in range(20)
        )
        config = work / "config.yml"
        config.write_text(
            f"state_dir: {work / 'state'}\nexporter: {{listen: '127.0.0.1:{ops_port}'}}\n"
            f"monitor:\n  checks:\n{checks}\n"
        )
        ops = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "opsagent"), "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        node_proc = subprocess.Popen(
            [node, f"--web.listen-address=127.0.0.1:{node_port}", "--no-collector.systemd"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            ops_url = f"http://127.0.0.1:{ops_port}/metrics"
            node_url = f"http://127.0.0.1:{node_port}/metrics"
            wait_for("opsagent", lambda: urllib.request.urlopen(ops_url, timeout=1), proc=ops)
            wait_for(
                "node_exporter", lambda: urllib.request.urlopen(node_url, timeout=1), proc=node_proc
            )
            time.sleep(2)
            ours = measure(ops_url, ops.pid, args.scrapes)
            theirs = measure(node_url, node_proc.pid, args.scrapes)
        finally:
            for proc in (ops, node_proc):
                proc.terminate()
                proc.wait(10)
    rows = [
        ("scrape p50 ms", "p50_ms"),
        ("scrape p99 ms", "p99_ms"),
        ("CPU s per 1,000 scrapes", "cpu_per_1000"),
        ("RSS MiB (steady state)", "rss_mib"),
    ]
    lines = [
        f"{args.scrapes} sequential scrapes each on loopback; opsagent with 20 checks.",
        "",
        "| measure | opsagent | node_exporter | ratio |",
        "|---|---:|---:|---:|",
    ]
    for label, key in rows:
        lines.append(
            f"| {label} | {ours[key]:.2f} | {theirs[key]:.2f} | {ours[key] / theirs[key]:.2f} |"
        )
    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.write_text(report + "\n")


if __name__ == "__main__":
    main()
