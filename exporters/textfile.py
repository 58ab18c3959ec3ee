"""The textfile writer: a registry's exposition as a `.prom` file for node_exporter's
textfile collector, written atomically (a temporary file, then a rename), so the
collector never reads half a file. The daemon writes its live registry every 15 s; a
host run by the systemd timers writes the job metrics after each one-shot command."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, write_to_textfile


def write_textfile(target: Path, registry: CollectorRegistry) -> None:
    """Write the registry's exposition to `target`, creating its directory."""
    target.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(target), registry)  # temp file + rename: never half written
