"""Sandboxes for restore tests: a scratch directory and scratch databases, always torn down.

Everything a run creates is named with a fixed prefix and the run ID (directories
`opsagent-rt-<run>`, databases `opsagent_rt_<run>_<n>`), so a run killed before its
teardown leaves things `sweep` finds and removes at the next start. A sandbox kept
for a validation window carries a `keep-until` marker and is swept after it.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from agents.backup.errors import BackupError
from agents.backup.sources.registry import kinds, source_class
from agents.config import Sandbox
from agents.units import format_size

DIR_PREFIX = "opsagent-rt-"
DB_PREFIX = "opsagent_rt_"
KEEP_MARKER = "keep-until"


class SandboxError(BackupError):
    """The sandbox cannot be made (no space, no database server)."""


def new_run_id() -> str:
    """A run ID: the start time, sortable, and a random suffix."""
    return datetime.now(UTC).strftime("%Y%m%dt%H%M%S") + secrets.token_hex(2)


@dataclass
class LocalSandbox:
    """One run's scratch directory and scratch databases on this host."""

    config: Sandbox
    run_id: str
    databases: list[tuple[str, str]] = field(default_factory=list)

    @property
    def directory(self) -> Path:
        return self.config.root.absolute() / f"{DIR_PREFIX}{self.run_id}"

    def create(self, needed_bytes: int) -> None:
        """Make the scratch directory, refusing when the snapshot would not fit."""
        root = self.config.root.absolute()
        root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(root).free
        if needed_bytes > free:
            raise SandboxError(
                f"sandbox {root} has {format_size(free)} free, the restore needs"
                f" {format_size(needed_bytes)}"
            )
        self.directory.mkdir()

    def new_database(self, kind: str) -> str:
        """A fresh scratch database name, dropped at teardown by its kind."""
        name = f"{DB_PREFIX}{self.run_id}_{len(self.databases)}"
        name = re.sub(r"[^a-z0-9_]", "_", name.lower())[:63]
        self.databases.append((kind, name))
        return name

    def keep_until(self, until: datetime) -> None:
        (self.directory / KEEP_MARKER).write_text(until.isoformat())

    def teardown(self) -> list[str]:
        """Remove the directory and drop the databases; returns problems (never raises)."""
        problems = []
        remove_tree(self.directory)
        if self.directory.exists():
            problems.append(f"{self.directory}: could not be removed")
        for kind, name in self.databases:
            try:
                _drop(self.config, kind, name)
            except Exception as exc:  # teardown goes on whatever one drop does
                problems.append(f"cannot drop {kind} database {name}: {exc}")
        return problems


def sweep(config: Sandbox, now: datetime | None = None) -> list[str]:
    """Remove what earlier runs left (killed, or kept past their window)."""
    now = now or datetime.now(UTC)
    root = config.root.absolute()
    removed = []
    live_runs = set()
    if root.is_dir():
        for path in sorted(root.glob(f"{DIR_PREFIX}*")):
            marker = path / KEEP_MARKER
            if marker.exists():
                try:
                    if datetime.fromisoformat(marker.read_text().strip()) > now:
                        live_runs.add(path.name.removeprefix(DIR_PREFIX))
                        continue
                except ValueError:
                    pass
            remove_tree(path)
            removed.append(str(path))
    for kind, name in _scratch_databases(config):
        run = name.removeprefix(DB_PREFIX).rsplit("_", 1)[0]
        if run in live_runs:
            continue
        try:
            _drop(config, kind, name)
            removed.append(f"{kind} database {name}")
        except Exception:  # a server that is down now is swept next time
            continue
    return removed


def _scratch_databases(config: Sandbox) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for kind in kinds():
        with contextlib.suppress(Exception):  # a server that is down now is swept next time
            names = source_class(kind).scratch_databases(config, DB_PREFIX)
            found += [(kind, name) for name in names]
    return found


def _drop(config: Sandbox, kind: str, name: str) -> None:
    if not name.startswith(DB_PREFIX):
        raise SandboxError(f"refusing to drop {name}: not a sandbox database")
    source_class(kind).drop_scratch(config, name)


def remove_tree(path: Path) -> None:
    """rmtree that also removes what a restored read-only directory (mode 0555) holds: as
    an unprivileged user, unlinking inside one needs its write bit back first."""

    def retry(function, failed, _exc):  # type: ignore[no-untyped-def]
        parent = os.path.dirname(failed)
        try:
            os.chmod(parent, 0o700)
            if os.path.isdir(failed) and not os.path.islink(failed):
                os.chmod(failed, 0o700)
            function(failed)
        except OSError:
            pass

    if path.exists():
        shutil.rmtree(path, onerror=retry)
