"""The details of each kind of result, as typed records, and the map from kind to record."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict

from agents.records.base import Details, Number, Record
from agents.results import CheckResult


class DiskDetails(Details):
    """A `disk` check: the file system's size and free space, and its fill forecast."""

    path: str | None = None
    total_bytes: int | None = None
    free_bytes: int | None = None
    free_percent: Number | None = None
    hours_to_full: Number | None = None  # only once the forecast has enough samples


class CommandDetails(Details):
    """A `command` check: exit code and the tail of the output."""

    exit_code: int | None = None
    output: str | None = None


class TcpDetails(Details):
    """A `tcp` check: connect time, or what the server answered when it did not match."""

    connect_seconds: Number | None = None
    received: str | None = None


class HttpDetails(Details):
    """An `http` check: status code, latency and days left on the TLS certificate."""

    status_code: int | None = None
    latency_seconds: Number | None = None
    cert_days_left: Number | None = None


class FileAgeDetails(Details):
    """A `file_age` check: the newest matching file and its age."""

    newest: str | None = None
    age_seconds: Number | None = None


class ProcessDetails(Details):
    """A `process` check: the matched processes and what they use."""

    count: int | None = None
    pids: list[int] | None = None
    cpu_seconds: Number | None = None
    rss_bytes: int | None = None


class QueryDetails(Details):
    """A `postgres` or `mysql` check: the value the query returned and its time."""

    value: bool | int | float | str | None = None
    query_seconds: Number | None = None


class FreshnessDetails(Details):
    """A `job_freshness` result: the job watched, its limit and its last success's age."""

    job: str | None = None
    limit_seconds: Number | None = None
    age_seconds: Number | None = None


class BackupSourceDetails(Details):
    """One source's backup (`backup_source`): its snapshot and the snapshot's stats."""

    source: str | None = None
    source_kind: str | None = None
    snapshot: str | None = None
    files: int | None = None
    dirs: int | None = None
    bytes: int | None = None
    bytes_read: int | None = None
    files_reused: int | None = None
    bytes_added: int | None = None
    bytes_stored: int | None = None
    blobs_new: int | None = None
    duration_seconds: Number | None = None
    warnings: list[str] | None = None


class BackupDetails(Details):
    """The `backup` job: each source's outcome, the totals and the repository's size."""

    sources: dict[str, str] | None = None
    bytes_added: int | None = None
    bytes: int | None = None
    snapshots: int | None = None
    repository_bytes: int | None = None
    logical_bytes: int | None = None
    repository: str | None = None
    damaged: list[str] | None = None


class RepositoryHealthDetails(Details):
    """The repository as a backup saw it (`backup_repository`): damage and recovery."""

    repository: str | None = None
    damaged: list[str] | None = None
    recovered_packs: int | None = None


class RestoreStep(Record):
    """One step of a restore test: its outcome, time and what it found."""

    model_config = ConfigDict(frozen=True, extra="allow")

    name: str
    ok: bool
    summary: str = ""
    seconds: Number = 0
    details: dict[str, Any] | None = None


class RestoreTestDetails(Details):
    """The `restore_test` job: the steps, RTO and RPO, and a kept sandbox."""

    run_id: str | None = None
    snapshots: dict[str, str] | None = None
    sources: dict[str, dict[str, Any]] | None = None
    steps: list[RestoreStep] | None = None
    rto_seconds: Number | None = None
    rpo_seconds: Number | None = None
    sandbox: str | None = None
    kept_until: str | None = None
    coverage: Number | None = None
    sandbox_host: str | None = None


class ForgetDetails(Details):
    """The `forget` job: snapshots kept and removed, and those Object Lock kept."""

    kept: int | None = None
    removed: int | None = None
    locked: int | None = None


class PruneDetails(Details):
    """The `prune` job: what it reclaimed and the packs it deleted or repacked."""

    bytes_reclaimed: int | None = None
    packs_before: int | None = None
    packs_deleted: int | None = None
    packs_repacked: int | None = None
    packs_written: int | None = None
    locked: list[str] | None = None
    snapshots: int | None = None
    dry_run: bool | None = None


class OutboxDetails(Details):
    """The agent's case upkeep (`outbox`): new breaches and notifications delivered."""

    breaches: int | None = None
    delivered: int | None = None
    failed: int | None = None
    backlog: int | None = None


DETAILS_BY_KIND: dict[str, type[Details]] = {
    "disk": DiskDetails,
    "command": CommandDetails,
    "tcp": TcpDetails,
    "http": HttpDetails,
    "file_age": FileAgeDetails,
    "process": ProcessDetails,
    "postgres": QueryDetails,
    "mysql": QueryDetails,
    "job_freshness": FreshnessDetails,
    "backup_source": BackupSourceDetails,
    "backup": BackupDetails,
    "backup_repository": RepositoryHealthDetails,
    "restore_test": RestoreTestDetails,
    "forget": ForgetDetails,
    "prune": PruneDetails,
    "outbox": OutboxDetails,
}


def details_of(result: CheckResult) -> Details | dict[str, Any]:
    """The result's details as the record of its kind; a kind this version does not
    know keeps its plain dict."""
    model = DETAILS_BY_KIND.get(result.kind)
    return model.of(result) if model is not None else dict(result.details)
