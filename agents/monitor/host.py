"""Host metrics, collected at scrape time from psutil (a prometheus-client custom collector).

The data source is a parameter, so tests feed recorded values and assert exact lines.
Names follow Prometheus conventions (base units, `_total` for counters), prefixed
`opsagent_`; labels are bounded (mode, mountpoint, device, interface); no `host` label.
Pseudo file systems are left out by a configurable pattern.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import psutil
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


class HostCollector(Collector):
    def __init__(self, pseudo_fs_pattern: str, source: Any = psutil, proc: str = "/proc") -> None:
        self.pseudo = re.compile(pseudo_fs_pattern)
        self.ps = source
        self.proc = proc

    def collect(self) -> Iterator[Any]:
        yield from self._cpu()
        yield from self._memory()
        yield from self._filesystems()
        yield from self._disks()
        yield from self._network()
        yield from self._system()

    def _cpu(self) -> Iterator[Any]:
        cpu = CounterMetricFamily("opsagent_cpu_seconds", "CPU time by mode.", labels=["mode"])
        for mode, seconds in self.ps.cpu_times()._asdict().items():
            cpu.add_metric([mode], seconds)
        yield cpu
        load = self.ps.getloadavg()
        for minutes, value in zip((1, 5, 15), load, strict=True):
            yield GaugeMetricFamily(f"opsagent_load{minutes}", f"{minutes}-minute load.", value)

    def _memory(self) -> Iterator[Any]:
        memory = self.ps.virtual_memory()
        swap = self.ps.swap_memory()
        for name, value, text in (
            ("memory_total_bytes", memory.total, "Physical memory."),
            ("memory_available_bytes", memory.available, "Memory available without swapping."),
            ("memory_used_bytes", memory.used, "Memory in use."),
            ("swap_total_bytes", swap.total, "Swap space."),
            ("swap_used_bytes", swap.used, "Swap in use."),
        ):
            yield GaugeMetricFamily(f"opsagent_{name}", text, value)

    def _filesystems(self) -> Iterator[Any]:
        labels = ["mountpoint", "fstype"]
        size = GaugeMetricFamily(
            "opsagent_filesystem_size_bytes", "File system size.", labels=labels
        )
        free = GaugeMetricFamily(
            "opsagent_filesystem_free_bytes", "Free bytes (root included).", labels=labels
        )
        avail = GaugeMetricFamily(
            "opsagent_filesystem_avail_bytes",
            "Bytes available to unprivileged users.",
            labels=labels,
        )
        files = GaugeMetricFamily("opsagent_filesystem_files", "Inodes.", labels=labels)
        files_free = GaugeMetricFamily(
            "opsagent_filesystem_files_free", "Free inodes.", labels=labels
        )
        seen = set()
        for part in self.ps.disk_partitions(all=True):
            if self.pseudo.match(part.fstype) or part.mountpoint in seen:
                continue
            seen.add(part.mountpoint)
            try:
                st = self.statvfs(part.mountpoint)
            except OSError:
                continue
            values = [part.mountpoint, part.fstype]
            size.add_metric(values, st.f_blocks * st.f_frsize)
            free.add_metric(values, st.f_bfree * st.f_frsize)
            avail.add_metric(values, st.f_bavail * st.f_frsize)
            files.add_metric(values, st.f_files)
            files_free.add_metric(values, st.f_ffree)
        yield from (size, free, avail, files, files_free)

    def statvfs(self, path: str) -> os.statvfs_result:
        return os.statvfs(path)

    def _disks(self) -> Iterator[Any]:
        counters = self.ps.disk_io_counters(perdisk=True) or {}
        families = {
            "read_bytes": CounterMetricFamily(
                "opsagent_disk_read_bytes", "Bytes read.", labels=["device"]
            ),
            "write_bytes": CounterMetricFamily(
                "opsagent_disk_written_bytes", "Bytes written.", labels=["device"]
            ),
            "read_count": CounterMetricFamily(
                "opsagent_disk_reads_completed", "Reads.", labels=["device"]
            ),
            "write_count": CounterMetricFamily(
                "opsagent_disk_writes_completed", "Writes.", labels=["device"]
            ),
        }
        busy = CounterMetricFamily(
            "opsagent_disk_io_time_seconds", "Time spent doing I/O.", labels=["device"]
        )
        for device, io in sorted(counters.items()):
            if device.startswith(("loop", "ram")):
                continue
            for field, family in families.items():
                family.add_metric([device], getattr(io, field))
            busy.add_metric([device], getattr(io, "busy_time", 0) / 1000)
        yield from families.values()
        yield busy

    def _network(self) -> Iterator[Any]:
        counters = self.ps.net_io_counters(pernic=True) or {}
        spec = {
            "bytes_recv": ("receive_bytes", "Bytes received."),
            "bytes_sent": ("transmit_bytes", "Bytes sent."),
            "packets_recv": ("receive_packets", "Packets received."),
            "packets_sent": ("transmit_packets", "Packets sent."),
            "errin": ("receive_errors", "Receive errors."),
            "errout": ("transmit_errors", "Transmit errors."),
            "dropin": ("receive_drop", "Received packets dropped."),
            "dropout": ("transmit_drop", "Sent packets dropped."),
        }
        families = {
            field: CounterMetricFamily(f"opsagent_network_{name}", text, labels=["interface"])
            for field, (name, text) in spec.items()
        }
        for interface, io in sorted(counters.items()):
            for field, family in families.items():
                family.add_metric([interface], getattr(io, field))
        yield from families.values()

    def _system(self) -> Iterator[Any]:
        boot = self.ps.boot_time()
        yield GaugeMetricFamily("opsagent_boot_time_seconds", "When the host booted.", boot)
        yield GaugeMetricFamily("opsagent_processes", "Processes.", len(self.ps.pids()))
        threads, fds = _proc_counts(self.proc)
        if threads is not None:
            yield GaugeMetricFamily("opsagent_threads", "Threads (scheduling entities).", threads)
        if fds is not None:
            yield GaugeMetricFamily("opsagent_open_fds", "Open file handles, system wide.", fds)


def _proc_counts(proc: str) -> tuple[int | None, int | None]:
    threads = fds = None
    try:
        with open(f"{proc}/loadavg") as handle:
            threads = int(handle.read().split()[3].split("/")[1])
    except (OSError, IndexError, ValueError):
        pass
    try:
        with open(f"{proc}/sys/fs/file-nr") as handle:
            fds = int(handle.read().split()[0])
    except (OSError, IndexError, ValueError):
        pass
    return threads, fds
