"""The host collector on recorded psutil values: exact exposition lines."""

from __future__ import annotations

import subprocess
import sys
from collections import namedtuple
from pathlib import Path
from types import SimpleNamespace

from prometheus_client import CollectorRegistry, generate_latest

from agents.config import MonitorConfig
from agents.monitor.host import HostCollector

CpuTimes = namedtuple("CpuTimes", "user system idle iowait")
Memory = namedtuple("Memory", "total available used")
Swap = namedtuple("Swap", "total used")
Partition = namedtuple("Partition", "device mountpoint fstype opts")
DiskIO = namedtuple("DiskIO", "read_bytes write_bytes read_count write_count busy_time")
NetIO = namedtuple(
    "NetIO", "bytes_recv bytes_sent packets_recv packets_sent errin errout dropin dropout"
)
StatVfs = namedtuple("StatVfs", "f_blocks f_frsize f_bfree f_bavail f_files f_ffree")

FAKE = SimpleNamespace(
    cpu_times=lambda: CpuTimes(100.5, 20.25, 1000.0, 3.0),
    getloadavg=lambda: (0.5, 0.25, 0.125),
    virtual_memory=lambda: Memory(8 * 2**30, 6 * 2**30, 2 * 2**30),
    swap_memory=lambda: Swap(2**30, 0),
    disk_partitions=lambda all: [
        Partition("/dev/vda1", "/", "ext4", "rw"),
        Partition("proc", "/proc", "proc", "rw"),
        Partition("tmpfs", "/run", "tmpfs", "rw"),
        Partition("/dev/vda1", "/", "ext4", "rw"),
    ],
    disk_io_counters=lambda perdisk: {
        "vda": DiskIO(1000, 2000, 10, 20, 1500),
        "loop0": DiskIO(1, 1, 1, 1, 1),
    },
    net_io_counters=lambda pernic: {"eth0": NetIO(10, 20, 1, 2, 0, 0, 3, 4)},
    boot_time=lambda: 1_700_000_000.0,
    pids=lambda: [1, 2, 3],
)


class FixedCollector(HostCollector):
    def statvfs(self, path: str):  # type: ignore[no-untyped-def, override]
        return StatVfs(1000, 4096, 400, 300, 5000, 4000)


def test_exact_lines_from_recorded_values(tmp_path: Path) -> None:
    (tmp_path / "sys" / "fs").mkdir(parents=True)
    (tmp_path / "loadavg").write_text("0.50 0.25 0.12 2/345 9999\n")
    (tmp_path / "sys" / "fs" / "file-nr").write_text("1184\t0\t9223372036854775807\n")
    registry = CollectorRegistry()
    registry.register(FixedCollector(MonitorConfig().pseudo_fs_pattern, FAKE, str(tmp_path)))
    text = generate_latest(registry).decode()
    expected = [
        'opsagent_cpu_seconds_total{mode="user"} 100.5',
        'opsagent_cpu_seconds_total{mode="system"} 20.25',
        "opsagent_load1 0.5",
        "opsagent_load15 0.125",
        "opsagent_memory_available_bytes 6.442450944e+09",
        "opsagent_swap_used_bytes 0.0",
        'opsagent_filesystem_size_bytes{fstype="ext4",mountpoint="/"} 4.096e+06',
        'opsagent_filesystem_avail_bytes{fstype="ext4",mountpoint="/"} 1.2288e+06',
        'opsagent_filesystem_files_free{fstype="ext4",mountpoint="/"} 4000.0',
        'opsagent_disk_read_bytes_total{device="vda"} 1000.0',
        'opsagent_disk_io_time_seconds_total{device="vda"} 1.5',
        'opsagent_network_receive_drop_total{interface="eth0"} 3.0',
        'opsagent_network_transmit_bytes_total{interface="eth0"} 20.0',
        "opsagent_boot_time_seconds 1.7e+09",
        "opsagent_processes 3.0",
        "opsagent_threads 345.0",
        "opsagent_open_fds 1184.0",
    ]
    lines = text.splitlines()
    for line in expected:
        assert line in lines, line
    assert 'mountpoint="/proc"' not in text
    assert 'mountpoint="/run"' not in text and 'device="loop0"' not in text
    sizes = [row for row in lines if row.startswith("opsagent_filesystem_size_bytes{")]
    assert len(sizes) == 1  # the repeated mount is listed once
    assert "host=" not in text


def test_monitor_metrics_passes_promtool(repo_root: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "agents",
            "monitor",
            "metrics",
            "--config",
            str(repo_root / "deploy/config/local.yml"),
        ],
        capture_output=True,
        text=True,
        cwd=repo_root,
    )
    assert out.returncode == 0, out.stderr
    assert "opsagent_cpu_seconds_total" in out.stdout
    assert 'opsagent_check_up{check="root-disk",kind="disk"} 1.0' in out.stdout
    assert "opsagent_process_resident_memory_bytes" in out.stdout
    lint = subprocess.run(
        ["promtool", "check", "metrics"], input=out.stdout, capture_output=True, text=True
    )
    assert lint.returncode == 0 and lint.stdout == "" and lint.stderr == "", lint.stdout


def test_concurrent_scrapes_share_one_collection() -> None:
    import threading
    import time

    from exporters.cache import SharedCollection

    calls = 0

    class Slow:
        def collect(self):  # type: ignore[no-untyped-def]
            nonlocal calls
            calls += 1
            time.sleep(0.3)
            yield from ()

    registry = CollectorRegistry()
    registry.register(SharedCollection(Slow(), max_age=1.0))  # type: ignore[arg-type]
    threads = [threading.Thread(target=generate_latest, args=(registry,)) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == 1


def test_textfile_output(tmp_path: Path) -> None:
    import signal
    import time

    from tests.support import services

    target = tmp_path / "textfile" / "opsagent.prom"
    config = tmp_path / "c.yml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        f"exporter: {{enabled: false, textfile: {target}}}\n"
        "monitor: {checks: [{name: root, kind: disk, path: /}]}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "agents", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        services.wait_for("the textfile", target.exists, timeout=60, proc=proc)
        time.sleep(0.2)
        text = target.read_text()
        assert "opsagent_cpu_seconds_total" in text
        assert list(target.parent.iterdir()) == [target]  # no temporary file left beside it
        lint = subprocess.run(
            ["promtool", "check", "metrics"], input=text, capture_output=True, text=True
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
