"""Verification steps of a restore test; each returns a Step with its own outcome.

- data: a rolling subset of packs is downloaded and verified whole, oldest-checked
  first, within a daily byte budget, so every pack is read at least once every
  `full_every`; coverage is the share of packs verified within that window;
- files: every restored file is chunked again as the repository chunks (its
  `chunker_for`) and its chunk IDs compared with the snapshot's, which proves
  content, size and order;
- databases: the dump restored into a scratch database has the row counts and
  schema fingerprint recorded at backup time;
- assertions: SQL queries that must return true, commands that must exit 0.
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from agents.backup.checker import blobs_by_pack, read_pack
from agents.backup.repository import Repository
from agents.backup.snapshot import Snapshot
from agents.config import CommandAssertion, DataVerify
from agents.errors import OpsagentError
from agents.state import StateDB
from agents.units import format_duration

log = logging.getLogger(__name__)


@dataclass
class Step:
    name: str
    ok: bool
    summary: str
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "summary": self.summary,
            "seconds": round(self.seconds, 3),
            **({"details": self.details} if self.details else {}),
        }


def verify_files(repo: Repository, snapshot: Snapshot, root: Path) -> Step:
    """Restored files equal the manifest: count, bytes, and chunk by chunk content."""
    start = time.monotonic()
    chunker = repo.chunker_for("files")  # cut as the backup did, so chunk IDs compare
    files = total = 0
    problems: list[str] = []
    for entry in repo.read_tree(snapshot):
        if entry.type != "file":
            continue
        path = root / entry.path
        try:
            st = path.lstat()
        except FileNotFoundError:
            problems.append(f"{entry.path} is missing")
            continue
        if not stat.S_ISREG(st.st_mode) or st.st_size != entry.size:
            problems.append(f"{entry.path} has {st.st_size} bytes, expected {entry.size}")
            continue
        with open(path, "rb") as handle:
            ids = [repo.crypto.blob_id(bytes(c.data)).hex() for c in chunker.cut_stream(handle)]
        if tuple(ids) != entry.chunks:
            problems.append(f"{entry.path} content differs from the snapshot")
            continue
        files += 1
        total += st.st_size
    expected = snapshot.stats.get("files", files)
    if files != expected and not problems:
        problems.append(f"{files} files verified, the snapshot has {expected}")
    seconds = time.monotonic() - start
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        return Step("files", False, problems[0] + more, seconds, {"problems": problems[:20]})
    return Step(
        "files",
        True,
        f"{files} files, {total} bytes match",
        seconds,
        {"files": files, "bytes": total},
    )


def verify_data(
    repo: Repository, state: StateDB, policy: DataVerify, now: datetime | None = None
) -> Step:
    """Verify the packs checked longest ago, within the daily budget; record progress."""
    start = time.monotonic()
    now = now or datetime.now(UTC)
    packs = blobs_by_pack(repo)
    checked = state.pack_checks()
    never = datetime.min.replace(tzinfo=UTC)
    order = sorted(packs, key=lambda p: (checked.get(p, never), p))
    budget = policy.daily_budget
    spent = 0
    verified: list[str] = []
    for pack_id in order:
        if checked.get(pack_id, never) > now - policy.full_every and verified:
            break  # everything left was verified within the window
        if budget is not None and spent >= budget and verified:
            break
        problem, read = read_pack(repo, pack_id, packs[pack_id])
        spent += read
        if problem:
            return Step(
                "data",
                False,
                problem,
                time.monotonic() - start,
                {"pack": pack_id, "bytes_read": spent},
            )
        verified.append(pack_id)
    try:
        state.record_pack_checks(verified, now)
    except OpsagentError as exc:  # bookkeeping: they are read again by a later test
        log.warning("pack checks not recorded: %s", exc)
    checked.update({p: now for p in verified})
    window = now - policy.full_every
    fresh = sum(1 for p in packs if checked.get(p, never) > window)
    coverage = fresh / len(packs) if packs else 1.0
    summary = (
        f"{len(verified)} pack(s), {spent} bytes verified; {coverage:.0%} of packs verified"
        f" in the last {format_duration(policy.full_every)}"
    )
    return Step(
        "data",
        True,
        summary,
        time.monotonic() - start,
        {"packs": len(verified), "bytes_read": spent, "coverage": round(coverage, 4)},
    )


def run_sql_assertions(dsn: str, password: str | None, queries: list[str], timeout: float) -> Step:
    start = time.monotonic()
    try:
        with psycopg.connect(dsn, password=password, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f"SET statement_timeout = {int(timeout * 1000)}")
            for query in queries:
                row = conn.execute(query).fetchone()
                if not row or row[0] is not True:
                    value = row[0] if row else "no row"
                    return Step(
                        "sql",
                        False,
                        f"assertion returned {value!r}: {query}",
                        time.monotonic() - start,
                    )
    except psycopg.Error as exc:
        return Step(
            "sql",
            False,
            f"assertion failed: {' '.join(str(exc).split())[:200]}",
            time.monotonic() - start,
        )
    return Step(
        "sql",
        True,
        f"{len(queries)} assertion(s) true",
        time.monotonic() - start,
        {"assertions": len(queries)},
    )


def run_commands(
    commands: list[CommandAssertion | list[str] | str], env: dict[str, str], cwd: Path
) -> Step:
    start = time.monotonic()
    for raw in commands:
        command = (
            raw
            if isinstance(raw, CommandAssertion)
            else CommandAssertion(command=raw, shell=isinstance(raw, str))
        )
        label = command.name or (
            command.command if isinstance(command.command, str) else " ".join(command.command)
        )
        timeout = command.timeout.total_seconds()
        try:
            proc = subprocess.run(
                command.command,
                shell=command.shell,
                cwd=cwd,
                env={**os.environ, **env},
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return Step(
                "commands",
                False,
                f"{label}: timed out after {format_duration(timeout)}",
                time.monotonic() - start,
            )
        except OSError as exc:
            return Step("commands", False, f"{label}: {exc.strerror}", time.monotonic() - start)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()
            last = f": {tail[-1][:200]}" if tail else ""
            return Step(
                "commands",
                False,
                f"{label}: exit code {proc.returncode}{last}",
                time.monotonic() - start,
            )
    return Step("commands", True, f"{len(commands)} command(s) passed", time.monotonic() - start)


def within(limit: timedelta | None, seconds: float) -> bool:
    return limit is None or seconds <= limit.total_seconds()
