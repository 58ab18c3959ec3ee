"""The ssh sandbox: run the restore test on a dedicated sandbox host and bring back its result.

The host is reached through `agents.ssh` (the fleet's connections), key authentication
only, and its host key must already be in the configured known_hosts file: an unknown
or changed key is refused, never added. There the same test runs in a local sandbox
(`opsagent restore-test run --sandbox local --json`), and its JSON result comes back
as this run's result.
"""

from __future__ import annotations

import json
import shlex
import threading
import time
from datetime import UTC, datetime
from typing import Any

import paramiko

from agents import ssh
from agents.config import Config, RestoreTestConfig, Sandbox
from agents.results import CheckResult, Severity, Status


class _StepFailed(Exception):
    """The `ssh` step failed: the sandbox host cannot be reached, refused, or gave no
    result; the message is the step's one-line summary."""


def run_remote(
    config: Config, plan: RestoreTestConfig, snapshot_ref: str | None, only_source: str | None
) -> CheckResult:
    """Run the restore test on the sandbox host over SSH; its JSON result is ours, and a
    host that cannot be reached or refused is a failed `ssh` step."""
    sandbox = plan.sandbox
    started_at = datetime.now(UTC)
    start = time.monotonic()
    where = f"{sandbox.user}@{sandbox.host}:{sandbox.port}"
    argv = _remote_argv(sandbox, snapshot_ref, only_source)
    try:
        client = _connect(sandbox, where)
        out, err, code = _execute(client, where, argv, plan.timeout.total_seconds())
        result = _result_of(out, err, code, where)
    except _StepFailed as exc:
        return _failed(config, where, str(exc), start, started_at)
    details = {**result.details, "sandbox_host": where}
    return CheckResult(
        name="restore_test",
        kind="restore_test",
        host=config.host,
        status=result.status,
        severity=Severity.CRITICAL,
        summary=result.summary,
        details=details,
        duration_seconds=time.monotonic() - start,
        started_at=started_at,
    )


def _remote_argv(sandbox: Sandbox, snapshot_ref: str | None, only_source: str | None) -> list[str]:
    """The command the sandbox host runs: the same test in a local sandbox, as JSON."""
    argv = [
        *shlex.split(sandbox.remote_command),
        "restore-test",
        "run",
        "--sandbox",
        "local",
        "--json",
    ]
    if sandbox.remote_config:
        argv += ["--config", sandbox.remote_config]
    if snapshot_ref:
        argv += ["--snapshot", snapshot_ref]
    if only_source:
        argv += ["--source", only_source]
    return argv


def _connect(sandbox: Sandbox, where: str) -> paramiko.SSHClient:
    """A connection to the sandbox host whose host key is already known, else _StepFailed."""
    assert sandbox.known_hosts is not None and sandbox.host is not None
    assert sandbox.user is not None  # the config refuses an ssh sandbox without them
    target = ssh.Target(
        name=where,
        address=sandbox.host,
        port=sandbox.port,
        user=sandbox.user,
        key_file=sandbox.key_file,
        connect_timeout=30,
    )
    try:
        return ssh.connect(target, sandbox.known_hosts)
    except ssh.HostKeyChanged as exc:
        raise _StepFailed(
            f"sandbox host {where} presented a changed host key"
            f" ({exc.key.get_name()} {exc.key.fingerprint}); refused"
        ) from None
    except ssh.HostKeyUnknown:
        raise _StepFailed(
            f"sandbox host {where} is not in {sandbox.known_hosts}; refused"
        ) from None
    except ssh.SSHError as exc:
        raise _StepFailed(f"sandbox host {where}: {exc.reason}") from None


def _execute(
    client: paramiko.SSHClient, where: str, argv: list[str], timeout: float
) -> tuple[bytes, str, int]:
    """Run the command there (cut at the test's time limit) and close the connection:
    stdout, stderr, exit code."""
    try:
        command = " ".join(shlex.quote(a) for a in argv)
        output = ssh.run(client, command, timeout, threading.Event())
    except (ssh.SSHError, paramiko.SSHException, OSError) as exc:
        raise _StepFailed(f"sandbox host {where}: {exc}") from None
    finally:
        ssh.close(client)
    if output.timed_out or output.exit_code is None:
        raise _StepFailed(f"sandbox host {where}: no result within {timeout:.0f}s; stopped")
    return output.stdout.encode(), output.stderr.strip(), output.exit_code


def _result_of(out: bytes, err: str, code: int, where: str) -> CheckResult:
    """The sandbox host's JSON result; without one, its last line of stderr says why."""
    try:
        data: dict[str, Any] = json.loads(out)
        return CheckResult.from_dict(data)
    except (ValueError, KeyError, TypeError):
        last = err.splitlines()[-1] if err else f"exit code {code}"
        raise _StepFailed(f"sandbox host {where}: no result ({last})") from None


def _failed(
    config: Config, where: str, summary: str, start: float, started_at: datetime
) -> CheckResult:
    """The result of a run whose `ssh` step failed."""
    return CheckResult(
        name="restore_test",
        kind="restore_test",
        host=config.host,
        status=Status.FAILED,
        severity=Severity.CRITICAL,
        summary=f"step ssh failed: {summary}",
        details={
            "steps": [{"name": "ssh", "ok": False, "summary": summary, "seconds": 0}],
            "sandbox_host": where,
            "rto_seconds": 0,
            "rpo_seconds": 0,
        },
        duration_seconds=time.monotonic() - start,
        started_at=started_at,
    )
