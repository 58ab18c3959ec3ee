"""The scheduled restore test: restore snapshots into a sandbox, verify, measure, tear down.

For each source under test a snapshot is chosen (`latest`, or a random one within a
window), restored into a local sandbox (files into a scratch directory, databases
into scratch databases), and verified step by step. RPO is the age of the newest
snapshot of each source; RTO the wall time from the first byte downloaded to the
last verification. The sandbox is torn down on success, failure, timeout or stop,
unless kept for a validation window; leftovers of killed runs are swept first.
One CheckResult names the first failing step with its snapshot and source; every
source is tested even when another fails or has no snapshot (`details.sources` says
how each did), and a failure before the test starts (no repository, a damaged
snapshot) is a failed `start` step: a run always ends in a result to record.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from agents.backup.errors import BackupError
from agents.backup.recovery import restore_database
from agents.backup.repository import Repository
from agents.backup.restorer import restore
from agents.backup.runner import open_repository
from agents.backup.snapshot import Snapshot
from agents.backup.sources.base import DataSource
from agents.backup.sources.registry import data_source, source_class
from agents.config import Config, RandomWithin, RestoreTestConfig, resolve_secret
from agents.records.details import RestoreStep, RestoreTestDetails
from agents.restore_test.sandbox import LocalSandbox, new_run_id, sweep
from agents.restore_test.verify import (
    Step,
    run_commands,
    run_sql_assertions,
    verify_data,
    verify_files,
    within,
)
from agents.results import CheckResult, Severity, Status, one_line
from agents.state import StateDB
from agents.units import format_duration

log = logging.getLogger("opsagent.restore_test")


class Stopped(Exception):
    pass


def run_restore_test(
    config: Config,
    state: StateDB,
    snapshot_ref: str | None = None,
    only_source: str | None = None,
    keep_sandbox: bool = False,
    should_stop: Callable[[], bool] = lambda: False,
    force_local: bool = False,
) -> CheckResult:
    """One restore test run; never leaves a sandbox behind unless asked, never raises:
    a failure before the test starts (no repository, a damaged snapshot) is a failed
    `start` step, and a source that cannot be tested fails alone while the others are
    still tested."""
    started_at = datetime.now(UTC)
    start = time.monotonic()
    plan = config.restore_test or RestoreTestConfig()
    if config.backup is None:
        reason = "restore tests need a backup section in the config"
        return _not_started(config, reason, started_at, start)
    if plan.sandbox.kind == "ssh" and not force_local:
        from agents.restore_test.remote import run_remote

        return run_remote(config, plan, snapshot_ref, only_source)
    try:
        swept = sweep(plan.sandbox, plan.timeout)
        if swept:
            log.info("swept %d sandbox leftover(s)", len(swept))
        repo = open_repository(config.backup)
        snapshots, problems = choose_snapshots(repo, config, plan, snapshot_ref, only_source)
    except Exception as exc:  # before the test starts, still a result that is recorded
        return _not_started(config, one_line(exc), started_at, start)
    run = _Run(
        config=config,
        state=state,
        plan=plan,
        repo=repo,
        snapshots=snapshots,
        sandbox=LocalSandbox(plan.sandbox, new_run_id()),
        steps=[Step("snapshot", False, text, 0.0) for _, text in problems],
        sources={
            name: {"snapshot": None, "ok": False, "summary": text}
            for name, text in problems
            if name
        },
        rpo=max(((started_at - s.time).total_seconds() for s in snapshots), default=0.0),
        deadline=start + plan.timeout.total_seconds(),
        should_stop=should_stop,
    )
    run.test(keep_sandbox)
    run.check_objectives()
    return run.result(started_at, start)


@dataclass
class _Run:
    """One local restore test under way: what it tests, its steps so far, how each source
    did, and how long the restore took."""

    config: Config
    state: StateDB
    plan: RestoreTestConfig
    repo: Repository
    snapshots: list[Snapshot]
    sandbox: LocalSandbox
    steps: list[Step]
    sources: dict[str, dict[str, Any]]
    rpo: float
    deadline: float  # monotonic
    should_stop: Callable[[], bool]
    restore_seconds: float = 0.0
    kept_until: datetime | None = None
    drop_early: bool = False  # scratch databases go as soon as verified: none can be kept

    def checkpoint(self) -> None:
        """Raise Stopped when the run is asked to stop or is past its timeout."""
        if self.should_stop():
            raise Stopped("restore test stopped")
        if time.monotonic() > self.deadline:
            raise Stopped(f"restore test timed out after {format_duration(self.plan.timeout)}")

    def test(self, keep_sandbox: bool) -> None:
        """Restore and verify into the sandbox; a stop, a timeout or an error is a failed
        step. The sandbox is kept (asked, or a pass with a validation window) or torn down."""
        self.drop_early = (
            not keep_sandbox
            and self.plan.keep_sandbox_for <= timedelta(0)
            and not self.plan.verify.commands  # commands may look at the scratch databases
        )
        try:
            self._restore_and_verify()
        except Stopped as exc:
            self.steps.append(Step("run", False, str(exc), 0.0))
        except Exception as exc:  # a failing step is a result, never a crash
            self.steps.append(Step("restore", False, one_line(exc), 0.0))
        finally:
            self._keep_or_tear_down(keep_sandbox)

    def _restore_and_verify(self) -> None:
        sandbox = self.sandbox
        needed = sum(int(s.stats.get("bytes", 0)) for s in self.snapshots)
        sandbox.create(int(needed * 1.1) + 2**20)
        restore_start = time.monotonic()
        with self.repo.lock(exclusive=False):
            self._test_sources()
        self.restore_seconds = time.monotonic() - restore_start
        if all(s.ok for s in self.steps) and self.plan.verify.commands:
            self.checkpoint()
            self.steps.append(
                run_commands(
                    self.plan.verify.commands,
                    {
                        "OPSAGENT_SANDBOX_DIR": str(sandbox.directory),
                        "OPSAGENT_SANDBOX_RUN": sandbox.run_id,
                    },
                    sandbox.directory,
                )
            )
            self.restore_seconds = time.monotonic() - restore_start
        if all(s.ok for s in self.steps):
            self.checkpoint()
            self.steps.append(verify_data(self.repo, self.state, self.plan.verify.data))

    def _test_sources(self) -> None:
        """Every source's snapshot restored and verified, whatever another one did. The
        database snapshots are tested on a thread of their own while the files snapshots
        restore: a database restore waits on its server (loading, indexing, counting)
        much of the time. Steps are recorded in snapshot order."""
        databases = [i for i, s in enumerate(self.snapshots) if _restores_databases(self.config, s)]
        files = [i for i in range(len(self.snapshots)) if i not in databases]
        tested: dict[int, list[Step]] = {}

        def test(indexes: list[int]) -> None:
            for i in indexes:
                self.checkpoint()
                tested[i] = self._test_source(self.snapshots[i])

        try:
            if databases and files:
                self.repo.load_index()  # read once, before two threads use it
                with ThreadPoolExecutor(1, thread_name_prefix="restore-test-db") as pool:
                    other = pool.submit(test, databases)
                    try:
                        test(files)
                    finally:
                        other.result()
            else:
                test(list(range(len(self.snapshots))))
        finally:
            for i in sorted(tested):
                self._record(self.snapshots[i], tested[i])

    def _test_source(self, snap: Snapshot) -> list[Step]:
        """One source's snapshot restored and verified; its failure is its own."""
        try:
            return _test_snapshot(
                self.repo,
                self.config,
                self.plan,
                self.sandbox,
                snap,
                self.checkpoint,
                self.drop_early,
            )
        except Stopped:
            raise
        except Exception as exc:  # this source failed; the others still count
            label = f"{snap.source} snapshot {snap.short_id}"
            return [Step("restore", False, f"{label}: {one_line(exc)}", 0.0)]

    def _record(self, snap: Snapshot, tested: list[Step]) -> None:
        """A tested source's steps and how it did."""
        self.steps += tested
        bad = next((t for t in tested if not t.ok), None)
        self.sources[snap.source] = {
            "snapshot": snap.id,
            "snapshot_time": snap.time.isoformat(),  # its age at the test (reports)
            "ok": bad is None,
            "summary": bad.summary if bad else "restored and verified",
        }

    def _keep_or_tear_down(self, keep_sandbox: bool) -> None:
        ok = all(s.ok for s in self.steps)
        keep_for = self.plan.keep_sandbox_for if ok else timedelta(0)
        if keep_sandbox or keep_for > timedelta(0):
            self.kept_until = datetime.now(UTC) + (keep_for if keep_for else timedelta(days=1))
            if self.sandbox.directory.exists():
                self.sandbox.keep_until(self.kept_until)
        else:
            for problem in self.sandbox.teardown():
                log.warning("%s", problem)

    def check_objectives(self) -> None:
        """A restore over max_rto, or a newest snapshot older than max_rpo, is a failed step."""
        plan = self.plan
        if not within(plan.max_rto, self.restore_seconds):
            self.steps.append(
                Step(
                    "rto",
                    False,
                    f"restore took {format_duration(self.restore_seconds)},"
                    f" over max_rto {format_duration(plan.max_rto)}",
                    0.0,
                )
            )
        if not within(plan.max_rpo, self.rpo):
            self.steps.append(
                Step(
                    "rpo",
                    False,
                    f"newest snapshot is {format_duration(self.rpo)} old,"
                    f" over max_rpo {format_duration(plan.max_rpo)}",
                    0.0,
                )
            )

    def result(self, started_at: datetime, start: float) -> CheckResult:
        """The run's one result: the first failing step, or what was restored and how fast."""
        steps, kept_until = self.steps, self.kept_until
        failed = [s for s in steps if not s.ok]
        coverage = next((s.details.get("coverage") for s in steps if s.name == "data"), None)
        tested = RestoreTestDetails(
            run_id=self.sandbox.run_id,
            snapshots={s.source: s.id for s in self.snapshots},
            sources=self.sources,
            steps=[RestoreStep(**s.to_dict()) for s in steps],
            rto_seconds=round(self.restore_seconds, 3),
            rpo_seconds=round(self.rpo, 1),
            sandbox=str(self.sandbox.directory) if kept_until else None,
            kept_until=kept_until.isoformat() if kept_until else None,
            **({"coverage": coverage} if coverage is not None else {}),
        )
        if failed:
            first = failed[0]
            more = f" (+{len(failed) - 1} more failed step(s))" if len(failed) > 1 else ""
            summary = f"step {first.name} failed: {first.summary}{more}"
        else:
            summary = (
                f"{len(self.snapshots)} snapshot(s) restored and verified in"
                f" {format_duration(self.restore_seconds)}; RPO {format_duration(self.rpo)}"
            )
        return CheckResult(
            name="restore_test",
            kind="restore_test",
            host=self.config.host,
            status=Status.FAILED if failed else Status.OK,
            severity=Severity.CRITICAL,
            summary=summary,
            details=_details(tested),
            duration_seconds=time.monotonic() - start,
            started_at=started_at,
        )


def _details(tested: RestoreTestDetails) -> dict[str, Any]:
    """The details a restore test result carries: every field given, a null sandbox and
    kept_until too (unlike `to_details`, which leaves out what is null)."""
    return tested.model_dump(exclude_unset=True)


def choose_snapshots(
    repo: Repository,
    config: Config,
    plan: RestoreTestConfig,
    snapshot_ref: str | None,
    only_source: str | None,
) -> tuple[list[Snapshot], list[tuple[str, str]]]:
    """The snapshots this run tests (one per source, or the one asked for), and what
    cannot be tested as (source or "", one line): a source with no snapshot from this
    host, a snapshot that cannot be read."""
    if snapshot_ref and snapshot_ref != "latest":
        try:
            return [repo.find_snapshot(snapshot_ref)], []
        except BackupError as exc:
            return [], [(only_source or "", one_line(exc))]
    assert config.backup is not None
    names = (
        [only_source] if only_source else (plan.sources or [s.name for s in config.backup.sources])
    )
    problems: list[tuple[str, str]] = []
    everything = []
    for snapshot_id in repo.snapshot_ids():
        try:
            everything.append(repo.load_snapshot(snapshot_id))
        except BackupError as exc:  # one damaged manifest must not hide the others
            problems.append(("", one_line(exc)))
    everything.sort(key=lambda s: s.time)
    chosen = []
    for name in names:
        mine = [s for s in everything if s.source == name and s.host == config.host]
        if not mine:
            problems.append((name, f"source {name} has no snapshot from {config.host} to test"))
            continue
        if isinstance(plan.snapshot, RandomWithin) and snapshot_ref is None:
            newest = mine[-1].time
            window = [s for s in mine if s.time >= newest - plan.snapshot.random_within]
            chosen.append(random.choice(window))
        else:
            chosen.append(mine[-1])
    return chosen, problems


def _not_started(config: Config, reason: str, started_at: datetime, start: float) -> CheckResult:
    """A run that failed before any snapshot was restored, shaped like any other run."""
    return CheckResult(
        name="restore_test",
        kind="restore_test",
        host=config.host,
        status=Status.FAILED,
        severity=Severity.CRITICAL,
        summary=f"step start failed: {reason}",
        details=_details(
            RestoreTestDetails(
                snapshots={},
                sources={},
                steps=[RestoreStep(**Step("start", False, reason, 0.0).to_dict())],
                rto_seconds=0.0,
                rpo_seconds=0.0,
                sandbox=None,
                kept_until=None,
            )
        ),
        duration_seconds=time.monotonic() - start,
        started_at=started_at,
    )


def _restores_databases(config: Config, snap: Snapshot) -> bool:
    """Whether a snapshot is tested database by database (else as files)."""
    assert config.backup is not None
    source = next((s for s in config.backup.sources if s.name == snap.source), None)
    return source is not None and data_source(source).holds_databases and _holds_databases(snap)


def _test_snapshot(
    repo: Repository,
    config: Config,
    plan: RestoreTestConfig,
    sandbox: LocalSandbox,
    snap: Snapshot,
    checkpoint: Callable[[], None],
    drop_early: bool = False,
) -> list[Step]:
    assert config.backup is not None
    source = next((s for s in config.backup.sources if s.name == snap.source), None)
    label = f"{snap.source} snapshot {snap.short_id}"
    if source is None:
        return [Step("restore", False, f"{label}: source is not in the config", 0.0)]
    handler = data_source(source)
    if not handler.holds_databases or not _holds_databases(snap):
        target = sandbox.directory / snap.source
        start = time.monotonic()
        result = restore(repo, snap, target)
        restored = Step(
            "restore",
            not (result.refused or result.errors or result.damaged),
            f"{label}: {result.files} files, {result.bytes} bytes",
            time.monotonic() - start,
        )
        if result.damaged:
            paths = ", ".join(d.path for d in result.damaged[:3])
            more = f" (+{len(result.damaged) - 3} more)" if len(result.damaged) > 3 else ""
            restored.summary = (
                f"{label}: {len(result.damaged)} damaged file(s): {paths}{more};"
                f" {result.damaged[0].reason}"
            )
            restored.details = {"damaged": [d.to_dict() for d in result.damaged[:100]]}
            return [restored]
        if not restored.ok:
            restored.summary = f"{label}: refused {result.refused[:3]} errors {result.errors[:3]}"
            return [restored]
        checkpoint()
        verified = verify_files(repo, snap, target)
        verified.summary = f"{label}: {verified.summary}"
        return [restored, verified]
    steps: list[Step] = []
    for database in sorted(snap.facts.get("databases", {})):
        checkpoint()
        known = len(sandbox.databases)
        target = handler.scratch_target(sandbox, f"{snap.source}-{database}")
        try:
            steps += _test_database(repo, plan, snap, database, source, handler, target, sandbox)
        finally:
            for _, name in sandbox.databases[known:] if drop_early else ():
                sandbox.drop_soon(name)
        if not steps[-1].ok:
            return steps
    return steps


def _test_database(
    repo: Repository,
    plan: RestoreTestConfig,
    snap: Snapshot,
    database: str,
    source: Any,
    handler: DataSource,
    target: str,
    sandbox: LocalSandbox,
) -> list[Step]:
    """One database restored into `target` and checked against its facts (and the SQL
    assertions); the last step is the first that failed, if any."""
    label = f"{snap.source} snapshot {snap.short_id}"
    start = time.monotonic()
    recovery = restore_database(
        repo, snap, database, target, source, sandbox.directory / ".work", create=True
    )
    step = Step(
        "database",
        recovery.ok,
        f"{label} {database}: "
        + ("facts match" if recovery.ok else "; ".join(recovery.problems[:3])),
        time.monotonic() - start,
        {
            "tables": len(recovery.actual.tables),
            "schema_fingerprint": recovery.actual.schema_fingerprint,
        },
    )
    if not step.ok or not (plan.verify.sql and handler.accepts_sql_assertions):
        return [step]
    password = resolve_secret(file=plan.sandbox.postgres_password_file)
    sql = run_sql_assertions(target, password, plan.verify.sql, 300)
    sql.summary = f"{label} {database}: {sql.summary}"
    return [step, sql]


def _holds_databases(snap: Snapshot) -> bool:
    """Whether the snapshot's own kind restores database by database (a snapshot taken
    while the source was of another kind is restored as what it is)."""
    try:
        return source_class(snap.source_kind).holds_databases
    except BackupError:
        return True
