"""The backup job: each configured source into its own snapshot, one result per source.

A broken source never hides a good one: each yields its own CheckResult, and the
run's result sums them up. A source's snapshot is saved only after its packs and
index are stored (the repository's commit order), so a failure or a kill leaves no
partial snapshot behind.
"""

from __future__ import annotations

import getpass
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from agents import __version__
from agents.backup.archiver import Archiver, ProgressFn
from agents.backup.errors import BackupError
from agents.backup.repository import Repository
from agents.backup.snapshot import Snapshot
from agents.backup.storage import open_storage
from agents.config import BackupConfig, Config, FilesSource, resolve_secret
from agents.results import CheckResult, Severity, Status, one_line

log = logging.getLogger("opsagent.backup")

Emit = Callable[[CheckResult], None]


def repository_password(cfg: BackupConfig) -> str:
    password = resolve_secret(cfg.password, cfg.password_file)
    if not password:
        raise BackupError("no repository password: set backup.password_file or backup.password")
    return password


def open_repository(cfg: BackupConfig) -> Repository:
    return Repository.open(open_storage(cfg.repository, cfg.s3), repository_password(cfg))


def init_repository(cfg: BackupConfig, host: str) -> Repository:
    storage = open_storage(cfg.repository, cfg.s3)
    return Repository.init(storage, repository_password(cfg), host, getpass.getuser())


def run_backup(
    config: Config,
    only: list[str] | None = None,
    tags: list[str] | None = None,
    when: datetime | None = None,
    emit: Emit = lambda r: None,
    should_stop: Callable[[], bool] = lambda: False,
    progress: ProgressFn | None = None,
) -> CheckResult:
    """Back up the configured sources (or `only` those); returns the run's result."""
    cfg = config.backup
    if cfg is None:
        raise BackupError("no backup section in the config")
    sources = [s for s in cfg.sources if only is None or s.name in only]
    unknown = sorted(set(only or ()) - {s.name for s in cfg.sources})
    if unknown:
        raise BackupError(f"no source named {', '.join(unknown)} in the config")
    if not sources:
        raise BackupError("no backup sources configured")
    started_at = datetime.now(UTC)
    start = time.monotonic()
    repo = open_repository(cfg)
    results: list[CheckResult] = []
    with repo.lock(exclusive=False):
        repo.load_index()
        previous = repo.snapshots()
        for source in sources:
            result = _backup_source(
                repo, config, source, previous, tags or [], when, should_stop, progress
            )
            results.append(result)
            emit(result)
            if should_stop():
                break
    snapshots = len(repo.snapshot_ids())
    repository_bytes = sum(info.size for info in repo.storage.list("data/"))
    failed = [r for r in results if not r.ok]
    details: dict[str, Any] = {
        "sources": {r.details.get("source", r.name): r.status.value for r in results},
        "bytes_added": sum(int(r.details.get("bytes_added", 0)) for r in results),
        "bytes": sum(int(r.details.get("bytes", 0)) for r in results),
        "snapshots": snapshots,
        "repository_bytes": repository_bytes,
        "repository": repo.storage.url,
    }
    if failed:
        summary = "; ".join(f"{r.details.get('source', r.name)}: {r.summary}" for r in failed)
        status = Status.ERROR if all(r.status is Status.ERROR for r in failed) else Status.FAILED
    else:
        summary = f"{len(results)} source(s) backed up, {details['bytes_added']} bytes added"
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


def _backup_source(
    repo: Repository,
    config: Config,
    source: Any,
    previous: list[Snapshot],
    tags: list[str],
    when: datetime | None,
    should_stop: Callable[[], bool],
    progress: ProgressFn | None,
) -> CheckResult:
    started_at = datetime.now(UTC)
    start = time.monotonic()
    name = f"backup/{source.name}"

    def result(status: Status, summary: str, details: dict[str, Any]) -> CheckResult:
        return CheckResult(
            name=name,
            kind="backup_source",
            host=config.host,
            status=status,
            severity=Severity.CRITICAL,
            summary=summary,
            details={"source": source.name, "source_kind": source.kind, **details},
            duration_seconds=time.monotonic() - start,
            started_at=started_at,
        )

    if not isinstance(source, FilesSource):
        return result(
            Status.ERROR, f"source kind {source.kind} is not supported by this agent version", {}
        )
    parents = [s for s in previous if s.host == config.host and s.source == source.name]
    parent = parents[-1] if parents else None
    assert config.backup is not None
    try:
        with repo.writer(config.backup.compression_level, config.backup.pack_size) as writer:
            archiver = Archiver(repo, writer, progress, should_stop)
            archived = archiver.archive(
                source.paths, source.exclude, source.one_file_system, parent
            )
            stats = writer.flush()
    except (BackupError, OSError, InterruptedError) as exc:
        return result(Status.ERROR, one_line(exc), {})
    warnings = archived.warnings + [f"unreadable: {u}" for u in archived.unreadable]
    snapshot = repo.save_snapshot(
        Snapshot(
            id="",
            time=when or datetime.now(UTC),
            host=config.host,
            source=source.name,
            source_kind=source.kind,
            paths=tuple(str(p.absolute()) for p in source.paths),
            tree=tuple(archived.tree),
            tags=tuple(tags),
            parent=parent.id if parent else None,
            stats={
                "files": archived.files,
                "dirs": archived.dirs,
                "bytes": archived.bytes,
                "bytes_read": archived.bytes_read,
                "files_reused": archived.files_reused,
                "bytes_added": stats.bytes_new,
                "bytes_stored": stats.bytes_stored,
                "blobs_new": stats.blobs_new,
                "duration_seconds": round(time.monotonic() - start, 3),
            },
            facts={"kind": "files", "files": archived.files, "bytes": archived.bytes},
            warnings=tuple(warnings),
            program_version=__version__,
        )
    )
    details = {"snapshot": snapshot.id, **snapshot.stats, "warnings": warnings[:50]}
    summary = (
        f"snapshot {snapshot.short_id}: {archived.files} files, {archived.bytes} bytes,"
        f" {stats.bytes_new} new"
    )
    if archived.unreadable and not source.tolerate_unreadable:
        return result(
            Status.FAILED,
            f"{len(archived.unreadable)} unreadable file(s), first {archived.unreadable[0]}"
            f" (snapshot {snapshot.short_id} saved without them)",
            details,
        )
    if warnings:
        summary += f", {len(warnings)} warning(s)"
    return result(Status.OK, summary, details)
