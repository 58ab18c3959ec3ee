"""Run one command on many hosts: selection, bounded parallelism, per-host timeouts,
cancellation, and a result per host (exit code, output, duration, or the one-line error).
"""

from __future__ import annotations

import contextlib
import shlex
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.config import Inventory
from agents.errors import OpsagentError
from agents.ssh import Output, SSHError, Target, close, connect, run, targets


class FleetError(OpsagentError):
    """A fleet command that cannot start as asked (a selection that names no host)."""


@dataclass
class HostResult:
    host: str
    address: str
    status: str  # ok | failed (non-zero exit) | error (unreachable, refused) | timeout | cancelled
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    error: str = ""
    duration_seconds: float = 0.0
    data: Any = None  # the parsed --json output of a runbook command
    started_at: float = field(default_factory=time.time)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "address": self.address,
            "status": self.status,
            "exit_code": self.exit_code,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "error": self.error,
            "duration_seconds": round(self.duration_seconds, 3),
            **({"data": self.data} if self.data is not None else {}),
        }


def select(
    inventory: Inventory,
    hosts: Iterable[str] = (),
    groups: Iterable[str] = (),
    labels: Iterable[str] = (),
    everything: bool = False,
) -> list[Target]:
    """The hosts a command runs on: `--host`, `--group` and `--label k=v` add up (a host
    matching any), `--all` takes every host; an unknown name or group is an error."""
    by_name = targets(inventory)
    hosts, groups, labels = list(hosts), list(groups), list(labels)
    if everything:
        return list(by_name.values())
    if not (hosts or groups or labels):
        raise FleetError("say which hosts: --host NAME, --group GROUP, --label k=v or --all")
    unknown = [h for h in hosts if h not in by_name]
    if unknown:
        raise FleetError(f"not in the inventory: {', '.join(unknown)}")
    known_groups = {g for h in inventory.hosts for g in h.groups}
    missing = [g for g in groups if g not in known_groups]
    if missing:
        raise FleetError(f"no host is in group {', '.join(missing)}")
    wanted: list[tuple[str, str]] = []
    for label in labels:
        key, sep, value = label.partition("=")
        if not sep or not key:
            raise FleetError(f"--label takes key=value, got {label!r}")
        wanted.append((key, value))
    chosen = [
        h.name
        for h in inventory.hosts
        if h.name in hosts
        or set(h.groups) & set(groups)
        or any(h.labels.get(k) == v for k, v in wanted)
    ]
    if not chosen:
        raise FleetError("the selection matches no host")
    return [by_name[name] for name in chosen]


def last_line(text: str, default: str = "") -> str:
    """The last non-blank line of a command's output: its one-line reason, usually."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else default


def opsagent_command(target: Target, *args: str) -> str:
    """The remote runbook command for a host: its opsagent, its config."""
    argv = [*shlex.split(target.opsagent), *args]
    if target.config:
        argv += ["--config", target.config]
    return shlex.join(argv)


Progress = Callable[[int, int, int, int], None]  # done, running, failed, total


def run_on(
    chosen: list[Target],
    known_hosts: Path,
    command_for: Callable[[Target], str],
    parallel: int,
    timeout: float,
    progress: Progress = lambda *a: None,
    cancel: threading.Event | None = None,
    parse: Callable[[str], Any] | None = None,
) -> list[HostResult]:
    """Run on every chosen host, at most `parallel` at a time; results in host order.
    Setting `cancel` (Ctrl-C) stops hosts not started and cuts the running ones."""
    cancel = cancel or threading.Event()
    results: dict[str, HostResult] = {}
    running: set[str] = set()
    lock = threading.Lock()

    def one(target: Target) -> HostResult:
        start = time.monotonic()
        if cancel.is_set():
            return HostResult(target.name, target.address, "cancelled", error="cancelled")
        with lock:
            running.add(target.name)
        return _run_host(target, known_hosts, command_for, timeout, cancel, parse, start)

    def finished(target: Target, result: HostResult) -> None:
        with lock:
            running.discard(target.name)
            results[target.name] = result
            failed = sum(1 for r in results.values() if not r.ok)
            progress(len(results), len(running), failed, len(chosen))

    pool = ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="fleet")
    futures: dict[Future[HostResult], Target] = {pool.submit(one, t): t for t in chosen}
    pending = set(futures)
    try:
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            for future in done:
                finished(futures[future], future.result())
            with lock:
                progress(
                    len(results), len(running), sum(not r.ok for r in results.values()), len(chosen)
                )
    except KeyboardInterrupt:
        _interrupted(cancel, pending, futures, results)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return [results[t.name] for t in chosen if t.name in results]


def _run_host(
    target: Target,
    known_hosts: Path,
    command_for: Callable[[Target], str],
    timeout: float,
    cancel: threading.Event,
    parse: Callable[[str], Any] | None,
    start: float,
) -> HostResult:
    """Connect, run the host's command, and make its result; a host that cannot be
    reached, or whose connection breaks, is an `error` with its one-line reason."""
    try:
        client = connect(target, known_hosts)
    except SSHError as exc:
        return _host_error(target, str(exc), start)
    try:
        output = run(client, command_for(target), timeout, cancel)
    except (SSHError, OSError, EOFError) as exc:
        return _host_error(target, f"{target.name}: {exc}", start)
    finally:
        close(client)
    return _host_result(target, output, time.monotonic() - start, timeout, cancel, parse)


def _host_error(target: Target, error: str, start: float) -> HostResult:
    """A host the command never ran to its end on: unreachable, refused, or cut off."""
    return HostResult(
        target.name,
        target.address,
        "error",
        error=error,
        duration_seconds=time.monotonic() - start,
    )


def _host_result(
    target: Target,
    output: Output,
    seconds: float,
    timeout: float,
    cancel: threading.Event,
    parse: Callable[[str], Any] | None,
) -> HostResult:
    """What the command gave: ok or failed by its exit code, timeout or cancelled when
    cut (saying so when it was not seen to end there), with the parsed --json output
    when there is a parser and it parses."""
    result = HostResult(
        target.name,
        target.address,
        "ok" if output.exit_code == 0 else "failed",
        exit_code=output.exit_code,
        stdout=output.stdout,
        stderr=output.stderr,
        duration_seconds=seconds,
    )
    if output.timed_out:
        result.status = "cancelled" if cancel.is_set() else "timeout"
        result.error = (
            f"{target.name}: cancelled"
            if cancel.is_set()
            else f"{target.name}: timed out after {timeout:.0f}s"
        )
        if not output.stopped:
            result.error += "; not seen to end when stopped, it may still be running there"
    if parse is not None and output.stdout.strip():
        with contextlib.suppress(ValueError):
            result.data = parse(output.stdout)
    return result


def _interrupted(
    cancel: threading.Event,
    pending: set[Future[HostResult]],
    futures: dict[Future[HostResult], Target],
    results: dict[str, HostResult],
) -> None:
    """Ctrl-C: cut the running hosts, mark those not started cancelled, and keep what the
    running ones give within 30 seconds."""
    cancel.set()
    for future in pending:
        future.cancel()
    for future, target in futures.items():
        if future.cancelled():
            results[target.name] = HostResult(
                target.name, target.address, "cancelled", error=f"{target.name}: cancelled"
            )
    done, _ = wait([f for f in futures if not f.cancelled()], timeout=30)
    for future in done:
        results.setdefault(futures[future].name, future.result())
