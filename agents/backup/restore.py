"""A restore by hand (`opsagent restore`): files into a directory, or a database into a target.

`run_restore` finds the snapshot, then either plans (a dry run) or restores under a
shared repository lock and an audit record, and returns what happened as a typed
outcome for the command line to print (each outcome's `record()` is its `--json`). A
files restore is the restorer's; a database restore goes through the source's kind
(`recovery.restore_database`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from agents.audit import action as audit_action
from agents.backup.archiver import ProgressFn
from agents.backup.errors import BackupError
from agents.backup.recovery import Recovery, dump_entries, restore_database
from agents.backup.repository import Repository
from agents.backup.restorer import RestoreResult, plan, restore
from agents.backup.runner import open_repository
from agents.backup.snapshot import Snapshot, TreeEntry
from agents.backup.sources.registry import data_source
from agents.config import Config, redact_url
from agents.records import RestoreTestDetails
from agents.records.backup import (
    DamagedFile,
    DatabaseRestore,
    DatabaseRestorePlan,
    FilesRestore,
    FilesRestorePlan,
    SchemaFingerprints,
    TableRowCounts,
)
from agents.state import StateDB

# opens a progress display for a restore of `total` bytes (None: unknown)
Progress = Callable[[int | None], AbstractContextManager[ProgressFn]]


@dataclass(frozen=True)
class RestoreRequest:
    """What to restore and how, as the command line was given it."""

    snapshot: str
    target: str
    source: str | None = None
    include: tuple[str, ...] = ()
    database: str | None = None
    create: bool = False
    force: bool = False
    jobs: int = 2
    overwrite: bool = False
    dry_run: bool = False


@dataclass(frozen=True)
class FilesPlan:
    """A files dry run: the entries that would be restored."""

    snapshot: Snapshot
    entries: list[TreeEntry]

    @property
    def bytes(self) -> int:
        return sum(e.size for e in self.entries)

    def record(self) -> FilesRestorePlan:
        """The plan as `restore --dry-run --json` prints it."""
        return FilesRestorePlan(
            snapshot=self.snapshot.id, entries=len(self.entries), bytes=self.bytes
        )


@dataclass(frozen=True)
class FilesRestored:
    """A files restore into `directory` and what the restorer did."""

    snapshot: Snapshot
    directory: Path
    result: RestoreResult

    @property
    def failed(self) -> bool:
        """Anything refused, in error or damaged: the restore did not bring all back."""
        return bool(self.result.refused or self.result.errors or self.result.damaged)

    def record(self) -> FilesRestore:
        """The restore as `restore --json` prints it."""
        result = self.result
        return FilesRestore(
            snapshot=self.snapshot.id,
            target=str(self.directory),
            files=result.files,
            dirs=result.dirs,
            symlinks=result.symlinks,
            specials=result.specials,
            bytes=result.bytes,
            refused=result.refused,
            skipped_existing=result.skipped_existing,
            errors=result.errors,
            warnings=result.warnings,
            damaged=[DamagedFile.model_validate(d.to_dict()) for d in result.damaged],
        )


@dataclass(frozen=True)
class DatabasePlan:
    """A database dry run: the dump files that would be restored into `target`."""

    snapshot: Snapshot
    database: str
    target: str
    entries: list[TreeEntry]

    @property
    def bytes(self) -> int:
        return sum(e.size for e in self.entries)

    def record(self, expected_seconds: float | None) -> DatabaseRestorePlan:
        """The plan as `restore --database --dry-run --json` prints it, with the time the
        last good restore test took (`last_restore_seconds`)."""
        return DatabaseRestorePlan(
            snapshot=self.snapshot.id,
            database=self.database,
            target=self.target,
            dump_files=[e.path for e in self.entries],
            bytes=self.bytes,
            expected_seconds=expected_seconds,
        )


@dataclass(frozen=True)
class TableRows:
    """One table's row count at backup time and once restored (None: absent)."""

    table: str
    expected: int | None
    restored: int | None


@dataclass(frozen=True)
class DatabaseRestored:
    """A database restored into its target, compared with the recorded facts."""

    snapshot: Snapshot
    database: str
    target: str
    recovery: Recovery

    @property
    def tables(self) -> list[TableRows]:
        """Every table recorded or restored, by name, with both row counts."""
        expected, actual = self.recovery.expected.tables, self.recovery.actual.tables
        return [
            TableRows(table, expected.get(table), actual.get(table))
            for table in sorted(set(expected) | set(actual))
        ]

    @property
    def schema_matches(self) -> bool:
        return self.recovery.expected.schema_fingerprint == self.recovery.actual.schema_fingerprint

    def record(self) -> DatabaseRestore:
        """The restore as `restore --database --json` prints it."""
        recovery = self.recovery
        return DatabaseRestore(
            snapshot=self.snapshot.id,
            database=self.database,
            target=self.target,
            seconds=round(recovery.seconds, 3),
            ok=recovery.ok,
            problems=recovery.problems,
            tables=[
                TableRowCounts(table=row.table, expected=row.expected, restored=row.restored)
                for row in self.tables
            ],
            schema_fingerprint=SchemaFingerprints(
                expected=recovery.expected.schema_fingerprint,
                restored=recovery.actual.schema_fingerprint,
            ),
        )


RestoreOutcome = FilesPlan | FilesRestored | DatabasePlan | DatabaseRestored


def last_restore_seconds(config: Config) -> float | None:
    """How long the last restore test took when it passed (its RTO): what a database
    restore can expect; None when no restore test has passed yet."""
    if not config.state_db.exists():
        return None
    state = StateDB(config.state_db).job("restore_test")
    if state is None or state.last_result is None or not state.last_result.ok:
        return None
    rto = RestoreTestDetails.of(state.last_result).rto_seconds
    return float(rto if rto is not None else state.last_result.duration_seconds)


@contextmanager
def no_progress(total: int | None) -> Iterator[ProgressFn]:
    """A progress display that shows nothing."""
    yield lambda nbytes, nfiles: None


def run_restore(
    config: Config,
    request: RestoreRequest,
    warn: Callable[[str], None] = lambda line: None,
    progress: Progress = no_progress,
) -> RestoreOutcome:
    """Restore (or plan) as asked; `warn` hears damaged snapshots `latest` passed over,
    `progress` shows a files restore advancing."""
    if config.backup is None:
        raise BackupError("no backup section in the config")
    repo = open_repository(config.backup, config.state_dir)
    snap = repo.find_snapshot(request.snapshot, source=request.source)
    for damaged_id in repo.damaged_snapshots if request.snapshot == "latest" else ():
        warn(
            f"warning: snapshot {damaged_id[:8]} is damaged and was not considered for"
            f" `latest` (it may be newer than {snap.short_id})"
        )
    if request.database is not None:
        return _restore_database(config, repo, snap, request.database, request)
    include = list(request.include) or None
    if request.dry_run:
        return FilesPlan(snap, plan(repo, snap, include))
    directory = Path(request.target)
    with (
        audit_action(config.state_db, "restore files", str(directory), snapshot=snap.id) as audit,
        repo.lock(exclusive=False),
        progress(snap.stats.get("bytes")) as advance,
    ):
        result = restore(repo, snap, directory, include, request.overwrite, advance)
        audit |= {"files": result.files, "bytes": result.bytes}
        if result.refused or result.errors or result.damaged:
            audit["outcome"] = (
                f"{len(result.refused)} refused, {len(result.errors)} errors,"
                f" {len(result.damaged)} damaged"
            )
    return FilesRestored(snap, directory, result)


def _restore_database(
    config: Config, repo: Repository, snap: Snapshot, database: str, request: RestoreRequest
) -> DatabasePlan | DatabaseRestored:
    """One database of a database source's snapshot into `request.target`."""
    cfg = config.backup
    assert cfg is not None
    source = next((s for s in cfg.sources if s.name == snap.source), None)
    if source is None or not data_source(source).holds_databases:
        raise BackupError(
            f"snapshot {snap.short_id} is of source {snap.source!r}, not a database source"
            " in this config"
        )
    target = request.target
    if request.dry_run:
        return DatabasePlan(snap, database, target, dump_entries(repo, snap, database))
    workdir = cfg.cache_dir or config.state_dir / "tmp"
    where = redact_url(target)
    with (
        audit_action(config.state_db, "restore database", f"{database} -> {where}") as audit,
        repo.lock(exclusive=False),
    ):
        recovery = restore_database(
            repo,
            snap,
            database,
            target,
            source,
            workdir,
            request.create,
            request.force,
            request.jobs,
        )
        audit |= {"snapshot": snap.id, "seconds": round(recovery.seconds, 3)}
        audit["outcome"] = "ok" if recovery.ok else f"differs: {'; '.join(recovery.problems)}"
    return DatabaseRestored(snap, database, target, recovery)
