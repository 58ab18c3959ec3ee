"""Sandboxes for restore tests: a scratch directory and scratch databases, always torn down.

Everything a run creates is named with a fixed prefix and the run ID, which starts with
the run's UTC start time (directories `opsagent-rt-<run>`, databases `opsagent_rt_<run>_<n>`,
e.g. `opsagent_rt_20261202t142233a1b2_0`), so a run killed before its teardown leaves
things `sweep` finds and removes at the next start. A sandbox kept for a validation
window carries a `keep-until` marker and is swept after it. The database server may be
shared with other agents, so `sweep` drops only databases that are certainly abandoned
(see its docstring).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agents.backup.errors import BackupError
from agents.backup.sources.registry import kinds, source_class
from agents.config import Sandbox
from agents.units import format_size

DIR_PREFIX = "opsagent-rt-"
DB_PREFIX = "opsagent_rt_"
KEEP_MARKER = "keep-until"
LOCK_SUFFIX = ".running"  # `.opsagent-rt-<run>.running` beside the run's directory: flock'ed
# by the process whose run it is, while it runs
RUN_TIME_FORMAT = "%Y%m%dt%H%M%S"  # how a run ID starts: its UTC start time
MIN_SWEEP_MARGIN = timedelta(hours=1)


class SandboxError(BackupError):
    """The sandbox cannot be made (no space, no database server)."""


def new_run_id(now: datetime | None = None) -> str:
    """A run ID: the start time (UTC), sortable, and a random suffix."""
    started = (now or datetime.now(UTC)).astimezone(UTC)
    return started.strftime(RUN_TIME_FORMAT) + secrets.token_hex(2)


def run_started(run_id: str) -> datetime | None:
    """When a run started, read from its ID; None when the ID does not start with a time."""
    try:
        return datetime.strptime(run_id[:15], RUN_TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


@dataclass
class LocalSandbox:
    """One run's scratch directory and scratch databases on this host."""

    config: Sandbox
    run_id: str
    databases: list[tuple[str, str]] = field(default_factory=list)
    _running: int | None = field(default=None, repr=False)
    _drops: dict[str, _Drop] = field(default_factory=dict, repr=False)
    _naming: threading.Lock = field(default_factory=threading.Lock, repr=False)

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
        # a lock beside the directory (not in it: the restore and the verify commands see
        # only what they restored), held until teardown or keep: a sweep by another run in
        # this root (a second config, the command line beside the daemon) sees the run is
        # alive; a killed run's lock is gone with its process, so its leftovers are swept.
        # Taken before the directory exists, so no sweep sees an unlocked run.
        self._running = os.open(_lock_path(self.directory), os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._running, fcntl.LOCK_EX)  # a sweep testing it holds it a moment
        self.directory.mkdir()

    def release(self) -> None:
        """The run is over (torn down or kept): its directory is no longer in use."""
        if self._running is not None:
            with contextlib.suppress(FileNotFoundError):
                _lock_path(self.directory).unlink()
            os.close(self._running)
            self._running = None

    def new_database(self, kind: str) -> str:
        """A fresh scratch database name, dropped at teardown by its kind."""
        with self._naming:
            name = f"{DB_PREFIX}{self.run_id}_{len(self.databases)}"
            name = re.sub(r"[^a-z0-9_]", "_", name.lower())[:63]
            self.databases.append((kind, name))
        return name

    def drop_soon(self, name: str) -> None:
        """Start dropping a scratch database nothing needs any more, in the background:
        the server's work (PostgreSQL checkpoints on every DROP DATABASE) then overlaps
        what the run does next. Teardown waits for it and reports how it went."""
        kind = next(k for k, n in self.databases if n == name)
        self._drops[name] = _Drop(self.config, kind, name)

    def keep_until(self, until: datetime) -> None:
        (self.directory / KEEP_MARKER).write_text(until.isoformat())
        self.release()

    def teardown(self) -> list[str]:
        """Remove the directory and drop the databases, the drops running while the
        directory is removed; returns problems (never raises)."""
        problems = []
        self.release()
        for kind, name in self.databases:
            if name not in self._drops:
                self._drops[name] = _Drop(self.config, kind, name)
        remove_tree(self.directory)
        if self.directory.exists():
            problems.append(f"{self.directory}: could not be removed")
        for drop in self._drops.values():
            problems += drop.wait()
        return problems


class _Drop:
    """One scratch database being dropped on a thread of its own."""

    def __init__(self, config: Sandbox, kind: str, name: str) -> None:
        self.kind, self.name = kind, name
        self.problem: str | None = None
        self.thread = threading.Thread(target=self._run, args=(config,), daemon=True)
        self.thread.start()

    def _run(self, config: Sandbox) -> None:
        try:
            _drop(config, self.kind, self.name)
        except Exception as exc:  # teardown goes on whatever one drop does
            self.problem = f"cannot drop {self.kind} database {self.name}: {exc}"

    def wait(self) -> list[str]:
        """Wait for the drop; its problem, if any."""
        self.thread.join()
        return [self.problem] if self.problem else []


def sweep(config: Sandbox, timeout: timedelta, now: datetime | None = None) -> list[str]:
    """Remove what earlier runs left (killed, or kept past their window); returns what.

    Directories under this root go unless kept (a live `keep-until` marker). The database
    server may be shared with other agents' sandboxes, whose runs this agent cannot see,
    so a scratch database is dropped only when it is certainly abandoned: its run is one of
    this root's leftovers just removed (a dead run of this agent), or its run started more
    than `timeout` (the restore test's time limit) plus a margin ago. The margin is the
    limit again, at least an hour: the limit is checked between steps, so a run may
    overrun it by one step, and hosts' clocks differ. A kept run's databases stay while it
    is kept.
    """
    now = now or datetime.now(UTC)
    root = config.root.absolute()
    removed = []
    live_runs: set[str] = set()
    dead_runs: set[str] = set()
    if root.is_dir():
        for path in sorted(root.glob(f"{DIR_PREFIX}*")):
            run = path.name.removeprefix(DIR_PREFIX)
            if _in_use(_lock_path(path)):
                live_runs.add(run)  # another run in this root, under way
                continue
            marker = path / KEEP_MARKER
            if marker.exists():
                try:
                    if datetime.fromisoformat(marker.read_text().strip()) > now:
                        live_runs.add(run)
                        continue
                except ValueError:
                    pass
            remove_tree(path)
            removed.append(str(path))
            dead_runs.add(run)
            with contextlib.suppress(OSError):  # a killed run's lock file: nobody's now
                _lock_path(path).unlink()
    oldest_live = now - timeout - max(timeout, MIN_SWEEP_MARGIN)
    for kind, name in _scratch_databases(config):
        run = name.removeprefix(DB_PREFIX).rsplit("_", 1)[0]
        if run in live_runs:
            continue
        started = run_started(run)
        # A name whose run ID does not start with a time cannot be aged; no version made
        # such names (run IDs always began with the start time), so it is dropped as
        # before rather than left forever.
        if run not in dead_runs and started is not None and started > oldest_live:
            continue  # perhaps another agent's run, still working: not certainly abandoned
        try:
            _drop(config, kind, name)
            removed.append(f"{kind} database {name}")
        except Exception:  # a server that is down now is swept next time
            continue
    return removed


def _lock_path(directory: Path) -> Path:
    """The run's lock file: hidden, beside its directory (no sweep glob matches it)."""
    return directory.with_name(f".{directory.name}{LOCK_SUFFIX}")


def _in_use(marker: Path) -> bool:
    """Whether a live process holds the run's lock (a killed one holds nothing)."""
    try:
        fd = os.open(marker, os.O_RDWR)
    except OSError:  # no marker: an older version's run, or one killed before it locked
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the lock taken just now, if it was taken
    return False


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
