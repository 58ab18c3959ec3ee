"""The backup job: each configured source into its own snapshot, one result per source.

A broken source never hides a good one: each yields its own CheckResult, and the
run's result sums them up. A source's snapshot is saved only after its packs and
index are stored (the repository's commit order), so a failure or a kill leaves no
partial snapshot behind.
"""

from __future__ import annotations

import getpass
import logging
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agents import __version__
from agents.backup import unlock
from agents.backup.archiver import Archiver, ArchiveResult, ProgressFn
from agents.backup.errors import BackupError, NotFound
from agents.backup.locks import RepositoryLock
from agents.backup.repository import ReconcileReport, Repository, WriteStats
from agents.backup.snapshot import Snapshot
from agents.backup.sources import SourceError
from agents.backup.sources.base import Backup, DataSource
from agents.backup.sources.registry import data_source
from agents.backup.storage import open_storage
from agents.config import BackupConfig, Config, resolve_secret
from agents.records.details import (
    BackupDetails,
    BackupSourceDetails,
    ForgetDetails,
    PruneDetails,
    RepositoryHealthDetails,
)
from agents.results import CheckResult, Severity, Status, one_line

log = logging.getLogger("opsagent.backup")

Emit = Callable[[CheckResult], None]


def repository_password(cfg: BackupConfig) -> str:
    password = resolve_secret(cfg.password, cfg.password_file)
    if not password:
        raise BackupError("no repository password: set backup.password_file or backup.password")
    return password


def open_repository(cfg: BackupConfig, state_dir: Path | None = None) -> Repository:
    """Open the configured repository, with the unlock `unlock.begin` started if any.

    With `state_dir`, an S3 repository reads its index files, snapshots and trees
    through the local cache there (`backup.local_cache`; see cache.py); a command that
    must see what storage holds (check, the restore test) passes none."""
    password = repository_password(cfg)
    started = unlock.take(cfg, password)
    if started is not None:
        repo = Repository.open(started[0], password, started[1])
    else:
        repo = Repository.open(open_storage(cfg.repository, cfg.s3), password)
    repo.lock_wait = cfg.lock_wait.total_seconds()
    if state_dir is not None and cfg.local_cache and cfg.repository.startswith("s3://"):
        from agents.backup.cache import ObjectCache

        repo.cache = ObjectCache.for_repository(state_dir, repo.info)
    return repo


def init_repository(cfg: BackupConfig, host: str) -> Repository:
    storage = open_storage(cfg.repository, cfg.s3)
    return Repository.init(storage, repository_password(cfg), host, getpass.getuser())


def existing_repository(cfg: BackupConfig) -> Repository | None:
    """The repository at cfg.repository if it is complete and this password opens it: a
    second `init` (a rerun after a kill that came after the last write) has nothing to
    do. A repository this password does not open is refused by `init` itself."""
    from agents.backup.errors import WrongKey

    storage = open_storage(cfg.repository, cfg.s3)
    try:
        storage.stat("config")
    except NotFound:
        return None
    try:
        return Repository.open(storage, repository_password(cfg))
    except WrongKey:
        return None


def run_backup(
    config: Config,
    only: list[str] | None = None,
    tags: list[str] | None = None,
    when: datetime | None = None,
    emit: Emit = lambda r: None,
    should_stop: Callable[[], bool] = lambda: False,
    progress: ProgressFn | None = None,
    repo: Repository | None = None,
) -> CheckResult:
    """Back up the configured sources (or `only` those); returns the run's result.

    `repo` is an already opened repository (the daemon opens one for backup and forget:
    unlocking the key is the costly part of opening)."""
    cfg = config.backup
    if cfg is None:
        raise BackupError("no backup section in the config")
    sources = _chosen_sources(cfg, only)
    started_at = datetime.now(UTC)
    start = time.monotonic()
    repo = repo or open_repository(cfg, config.state_dir)
    results: list[CheckResult] = []
    with repo.lock(exclusive=False) as lock:
        reconciled = repo.reconcile(snapshots_ahead=True)
        previous = repo.snapshots()
        health = _repository_health(config, repo, reconciled, started_at)
        for source in sources:
            result = _backup_source(
                repo, config, source, previous, tags or [], when, should_stop, progress, lock
            )
            results.append(result)
            emit(result)
            if should_stop():
                break
        emit(health)  # after the sources: their results come first for every reader
    return _run_result(config, repo, results, previous, health, started_at, start)


def _chosen_sources(cfg: BackupConfig, only: list[str] | None) -> list[Any]:
    """The configured sources to back up (all, or `only` those); unknown names refused."""
    sources = [s for s in cfg.sources if only is None or s.name in only]
    unknown = sorted(set(only or ()) - {s.name for s in cfg.sources})
    if unknown:
        raise BackupError(f"no source named {', '.join(unknown)} in the config")
    if not sources:
        raise BackupError("no backup sources configured")
    return sources


def _run_result(
    config: Config,
    repo: Repository,
    results: list[CheckResult],
    previous: list[Snapshot],
    health: CheckResult,
    started_at: datetime,
    start: float,
) -> CheckResult:
    """The run's result summing up its sources' results and the repository's size."""
    # from the listings made under the lock plus this run's writes: no LIST at the end
    snapshots = repo.snapshot_count()
    repository_bytes = repo.repository_bytes()
    failed = [r for r in results if not r.ok]
    stats = {r.name: BackupSourceDetails.of(r) for r in results}

    def source_of(result: CheckResult) -> str:
        return stats[result.name].source or result.name

    bytes_added = sum(stats[r.name].bytes_added or 0 for r in results)
    details = BackupDetails(
        sources={source_of(r): r.status.value for r in results},
        bytes_added=bytes_added,
        bytes=sum(stats[r.name].bytes or 0 for r in results),
        snapshots=snapshots,
        repository_bytes=repository_bytes,
        # every snapshot's size before dedup: over repository_bytes, the dedup ratio
        logical_bytes=sum(int(s.stats.get("bytes", 0)) for s in previous)
        + sum(stats[r.name].bytes or 0 for r in results if r.ok),
        repository=repo.storage.url,
        damaged=RepositoryHealthDetails.of(health).damaged or [],
    ).to_details()
    if failed:
        summary = "; ".join(f"{source_of(r)}: {r.summary}" for r in failed)
        status = Status.ERROR if all(r.status is Status.ERROR for r in failed) else Status.FAILED
    else:
        summary = f"{len(results)} source(s) backed up, {bytes_added} bytes added"
        status = Status.OK
    return CheckResult(
        name="backup",
        kind="backup",
        host=config.host,
        status=status,
        severity=Severity.CRITICAL,
        summary=summary,
        details=details,
        duration_seconds=time.monotonic() - start,
        started_at=started_at,
    )


def _repository_health(
    config: Config, repo: Repository, reconciled: ReconcileReport, started_at: datetime
) -> CheckResult:
    """The repository's own state as seen by the backup: damaged snapshots or index files
    and unreadable packs make a failed `backup/repository` result (and so a case) while
    the backup itself goes on; a clean look resolves that case."""
    damaged = [f"snapshot {i[:8]}: {why}" for i, why in sorted(repo.damaged_snapshots.items())]
    damaged += [f"index {n[:12]}: {why}" for n, why in sorted(reconciled.damaged_index.items())]
    damaged += [f"pack {p[:12]}: {why}" for p, why in sorted(reconciled.unreadable_packs.items())]
    if damaged:
        status = Status.FAILED
        summary = (
            f"{len(damaged)} damaged object(s), first {damaged[0]}; backups go on"
            " (see `opsagent backup check` and the runbook case-backup)"
        )
    else:
        status = Status.OK
        summary = "repository readable"
        if reconciled.recovered_packs:
            summary += f", {len(reconciled.recovered_packs)} interrupted pack(s) indexed"
    return CheckResult(
        name="backup/repository",
        kind="backup_repository",
        host=config.host,
        status=status,
        severity=Severity.CRITICAL,
        summary=summary,
        details=RepositoryHealthDetails(
            repository=repo.storage.url,
            damaged=damaged[:50],
            recovered_packs=len(reconciled.recovered_packs),
        ).to_details(),
        duration_seconds=0.0,
        started_at=started_at,
    )


def _backup_source(
    repo: Repository,
    config: Config,
    source: Any,
    previous: list[Snapshot],
    tags: list[str],
    when: datetime | None,
    should_stop: Callable[[], bool],
    progress: ProgressFn | None,
    lock: RepositoryLock,
) -> CheckResult:
    """Back up one source into its own snapshot; any failure becomes its result."""
    started_at = datetime.now(UTC)
    start = time.monotonic()

    def result(status: Status, summary: str, details: dict[str, Any]) -> CheckResult:
        return _source_result(config, source, status, summary, details, start, started_at)

    parents = [s for s in previous if s.host == config.host and s.source == source.name]
    parent = parents[-1] if parents else None
    backup_cfg = config.backup
    assert backup_cfg is not None
    workdir = backup_cfg.cache_dir or config.state_dir / "tmp"
    try:
        handler = data_source(source)
        _run_hooks(source, "before")
        with repo.writer(backup_cfg.compression_level, backup_cfg.pack_size) as writer:
            archiver = Archiver(repo, writer, progress, should_stop, handler.chunking)
            backup = handler.back_up(archiver, parent, workdir)
            stats = writer.flush()
        lock.verify()  # the data this snapshot needs may be gone with a lost lock
    except Exception as exc:  # one source's failure, whatever it is, never hides another
        _run_hooks(source, "on_failure", quiet=True)
        log.debug("source %s failed", source.name, exc_info=True)
        return result(Status.ERROR, one_line(exc), {})
    archived = backup.archived
    warnings = (
        archived.warnings
        + [f"missing: {m}" for m in archived.missing]
        + [f"unreadable: {u}" for u in archived.unreadable]
    )
    snapshot = _save_snapshot(
        repo, config, source, handler, backup, stats, parent, tags, when, warnings, start
    )
    try:
        _run_hooks(source, "after")
    except SourceError as exc:
        warnings.append(str(exc))
    status, summary = _source_outcome(snapshot, archived, stats, handler, warnings)
    details = {"snapshot": snapshot.id, **snapshot.stats, "warnings": warnings[:50]}
    return result(status, summary, details)


def _source_result(
    config: Config,
    source: Any,
    status: Status,
    summary: str,
    details: dict[str, Any],
    start: float,
    started_at: datetime,
) -> CheckResult:
    """One source's `backup/NAME` result."""
    return CheckResult(
        name=f"backup/{source.name}",
        kind="backup_source",
        host=config.host,
        status=status,
        severity=Severity.CRITICAL,
        summary=summary,
        details=BackupSourceDetails(
            source=source.name, source_kind=source.kind, **details
        ).to_details(),
        duration_seconds=time.monotonic() - start,
        started_at=started_at,
    )


def _save_snapshot(
    repo: Repository,
    config: Config,
    source: Any,
    handler: DataSource,
    backup: Backup,
    stats: WriteStats,
    parent: Snapshot | None,
    tags: list[str],
    when: datetime | None,
    warnings: list[str],
    start: float,
) -> Snapshot:
    """Save the snapshot of one archived source (after its packs and index are stored)."""
    archived = backup.archived
    return repo.save_snapshot(
        Snapshot(
            id="",
            time=when or datetime.now(UTC),
            host=config.host,
            source=source.name,
            source_kind=source.kind,
            paths=handler.paths(),
            tree=tuple(archived.tree),
            tags=tuple(tags),
            parent=parent.id if parent and archived.parent_read else None,
            stats={
                "files": archived.files,
                "dirs": archived.dirs,
                "bytes": archived.bytes,
                "bytes_read": archived.bytes_read,
                "files_reused": archived.files_reused,
                # a child listing as the same user may take an unchanged file's extended
                # attributes from this one (None: it may not)
                "xattrs_listed_as": archived.xattrs_listed_as,
                "bytes_added": stats.bytes_new,
                "bytes_stored": stats.bytes_stored,
                "blobs_new": stats.blobs_new,
                "duration_seconds": round(time.monotonic() - start, 3),
            },
            facts=backup.facts,
            warnings=tuple(warnings),
            program_version=__version__,
        )
    )


def _source_outcome(
    snapshot: Snapshot,
    archived: ArchiveResult,
    stats: WriteStats,
    handler: DataSource,
    warnings: list[str],
) -> tuple[Status, str]:
    """A saved source's status and summary: missing or (untolerated) unreadable paths
    fail it, its snapshot saved without them."""
    summary = (
        f"snapshot {snapshot.short_id}: {archived.files} files, {archived.bytes} bytes,"
        f" {stats.bytes_new} new"
    )
    problems = (
        [f"missing source path(s): {', '.join(archived.missing)}"] if archived.missing else []
    )
    if archived.unreadable and not handler.tolerates_unreadable:
        problems.append(
            f"{len(archived.unreadable)} unreadable path(s), first {archived.unreadable[0]}"
        )
    if problems:
        return (
            Status.FAILED,
            f"{'; '.join(problems)} (snapshot {snapshot.short_id} saved without them)",
        )
    if warnings:
        summary += f", {len(warnings)} warning(s)"
    return Status.OK, summary


def _run_hooks(source: Any, phase: str, quiet: bool = False) -> None:
    """Run a source's before / after / on_failure commands; a failure raises SourceError."""
    hooks = source.hooks
    commands = getattr(hooks, phase, None) if hooks is not None else None
    for command in commands or ():
        try:
            proc = subprocess.run(
                command,
                shell=True,
                capture_output=True,
                text=True,
                timeout=hooks.timeout.total_seconds(),
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired:
            if quiet:
                continue
            raise SourceError(f"{phase} hook timed out: {command}") from None
        if proc.returncode != 0 and not quiet:
            last = (proc.stderr or proc.stdout).strip().splitlines()
            tail = f": {last[-1][:200]}" if last else ""
            raise SourceError(f"{phase} hook failed (exit {proc.returncode}): {command}{tail}")


def run_forget(
    config: Config, dry_run: bool = False, repo: Repository | None = None
) -> tuple[CheckResult, Any]:
    """Apply the retention policy; the result and the report (decisions per snapshot)."""
    from agents.backup.maintenance import forget

    cfg = config.backup
    if cfg is None or cfg.retention is None:
        raise BackupError("no backup.retention policy in the config")
    started_at = datetime.now(UTC)
    start = time.monotonic()
    report = forget(
        repo or open_repository(cfg, config.state_dir),
        cfg.retention,
        dry_run,
        delete_old_versions=cfg.prune.delete_old_versions,
    )
    kept = sum(1 for d in report.decisions if d.keep)
    removed = len(report.removed) if not dry_run else len(report.decisions) - kept
    summary = f"{kept} snapshot(s) kept, {removed} {'to remove' if dry_run else 'removed'}"
    if report.locked:
        summary += f", {len(report.locked)} under Object Lock kept"
    return (
        CheckResult(
            name="forget",
            kind="forget",
            host=config.host,
            status=Status.OK,
            severity=Severity.MAJOR,
            summary=summary,
            details=ForgetDetails(
                kept=kept, removed=removed, locked=len(report.locked)
            ).to_details(),
            duration_seconds=time.monotonic() - start,
            started_at=started_at,
        ),
        report,
    )


def run_prune(
    config: Config, dry_run: bool = False, progress: ProgressFn | None = None
) -> CheckResult:
    from agents.backup.maintenance import prune

    cfg = config.backup
    if cfg is None:
        raise BackupError("no backup section in the config")
    started_at = datetime.now(UTC)
    start = time.monotonic()
    report = prune(
        open_repository(cfg),
        cfg.prune.repack_threshold_percent,
        dry_run,
        cfg.compression_level,
        cfg.pack_size,
        cfg.prune.delete_old_versions,
        progress,
    )
    verb = "would reclaim" if dry_run else "reclaimed"
    summary = (
        f"{verb} {report.bytes_reclaimed} bytes: {report.packs_deleted} pack(s) deleted,"
        f" {report.packs_repacked} repacked into {report.packs_written}"
    )
    if report.locked:
        summary += f"; {len(report.locked)} pack(s) under Object Lock kept"
    return CheckResult(
        name="prune",
        kind="prune",
        host=config.host,
        status=Status.OK,
        severity=Severity.MAJOR,
        summary=summary,
        details=PruneDetails(
            bytes_reclaimed=report.bytes_reclaimed,
            packs_before=report.packs_before,
            packs_deleted=report.packs_deleted,
            packs_repacked=report.packs_repacked,
            packs_written=report.packs_written,
            locked=report.locked[:50],
            snapshots=report.snapshots,
            dry_run=dry_run,
        ).to_details(),
        duration_seconds=time.monotonic() - start,
        started_at=started_at,
    )
