"""The documents the backup, restore and restore-test commands print with `--json`.

The backup room builds them (each report's `record()`, or a function next to it) and the
command line prints `to_dict()`, so each document has one schema, in docs/json.md.
"""

from __future__ import annotations

from typing import Any, Self

from agents.records.base import Number, Record
from agents.results import CheckResult


class JobResult(Record):
    """A check's or job's result as printed and as the state database stores it."""

    name: str
    kind: str
    host: str
    status: str
    severity: str
    summary: str
    details: dict[str, Any]
    duration_seconds: Number
    started_at: str
    fingerprint: str

    @classmethod
    def of(cls, result: CheckResult) -> Self:
        """The result's JSON object as this record."""
        return cls.model_validate(result.to_dict())


class BackupRun(Record):
    """`opsagent backup run --json`: the `backup` job's result, each source's
    `backup_source` result, and the `backup_repository` result (null when the backup
    did not get as far as the repository's health)."""

    run: JobResult
    sources: list[JobResult]
    repository: JobResult | None

    @classmethod
    def of(cls, run: CheckResult, emitted: list[CheckResult]) -> Self:
        """The run's result and the results it emitted on the way, sorted by kind."""
        health = [r for r in emitted if r.kind == "backup_repository"]
        return cls(
            run=JobResult.of(run),
            sources=[JobResult.of(r) for r in emitted if r.kind == "backup_source"],
            repository=JobResult.of(health[0]) if health else None,
        )


class SnapshotSummary(Record):
    """`opsagent backup snapshots --json` (a list, oldest first) and `backup show --json`:
    a snapshot's manifest without its tree."""

    time: str
    host: str
    source: str
    source_kind: str
    paths: list[str]
    tags: list[str]
    parent: str | None
    stats: dict[str, Any]
    facts: dict[str, Any]
    warnings: list[str]
    program_version: str
    repaired_from: str | None
    id: str
    short_id: str


class SnapshotEntry(Record):
    """One file, directory, link or node of a snapshot: a name that is not UTF-8 keeps
    its bytes as `\\udcNN` escapes; `mode` is octal text (`0o644`)."""

    path: str
    type: str
    size: int
    mode: str


class SnapshotFiles(SnapshotSummary):
    """`opsagent backup show --ls --json`: the snapshot's manifest and every entry of
    its tree."""

    entries: list[SnapshotEntry]


class RepositoryCheck(Record):
    """`opsagent backup check --json`: what was checked and read, the errors and
    warnings, and each damaged pack with the snapshots (short ids) that use it."""

    ok: bool
    snapshots: int
    packs: int
    packs_read: int
    bytes_read: int
    errors: list[str]
    warnings: list[str]
    bad_packs: dict[str, list[str]]


class KeyRow(Record):
    """`opsagent backup key list --json` (a list, oldest first): a key file, and whether
    this config's password opened it (`current`)."""

    id: str
    created: str | None
    host: str | None
    user: str | None
    label: str | None
    current: bool


class RetentionDecision(Record):
    """One snapshot's retention decision: kept (with the rules that keep it), removed,
    or kept under Object Lock."""

    id: str
    short_id: str
    time: str
    host: str
    source: str
    keep: bool
    reasons: list[str]
    removed: bool
    locked: bool


class ForgetRun(Record):
    """`opsagent backup forget [--dry-run] --json` (by the retention policy): every
    snapshot's decision and the job's summary."""

    dry_run: bool
    snapshots: list[RetentionDecision]
    summary: str


class ForgetSnapshotsPlan(Record):
    """`opsagent backup forget --dry-run SNAPSHOT_IDS --json`: the snapshots (full ids)
    the named ones resolve to."""

    dry_run: bool
    would_remove: list[str]


class ForgetSnapshots(Record):
    """`opsagent backup forget SNAPSHOT_IDS --json`: the snapshots removed, and those
    kept because Object Lock retention holds them."""

    dry_run: bool
    removed: list[str]
    locked: list[str]


class IndexRepairReport(Record):
    """`opsagent backup repair index --json`: packs and blobs in the new index, the old
    index files it replaced, packs that could not be read (id: why) and damaged blobs
    left out."""

    packs: int
    blobs: int
    index_files_replaced: int
    unreadable_packs: dict[str, str]
    damaged_blobs: int


class PacksRepairReport(Record):
    """`opsagent backup repair packs --json`: the packs rewritten, blobs kept, damaged
    blobs left out, and the new packs written."""

    packs: list[str]
    salvaged_blobs: int
    lost_blobs: list[str]
    written: list[str]


class SnapshotRepairRow(Record):
    """A snapshot that needed lost data: its replacement (null in a dry run) and what
    it lost."""

    snapshot: str
    replacement: str | None
    lost: list[str]


class SnapshotsRepairReport(Record):
    """`opsagent backup repair snapshots [--dry-run] --json`: the snapshots rewritten
    and those whose own manifest is damaged."""

    dry_run: bool
    repaired: list[SnapshotRepairRow]
    damaged_objects: list[str]


class FilesRestorePlan(Record):
    """`opsagent restore --dry-run --json` (files): the snapshot, how many entries and
    bytes would be restored."""

    snapshot: str
    entries: int
    bytes: int


class DamagedFile(Record):
    """A file whose data could not all be read: why, and the `.damaged` file written
    (empty when none could be made)."""

    path: str
    reason: str
    written_as: str


class FilesRestore(Record):
    """`opsagent restore --json` (files): what was restored into `target`, and every
    path refused, kept, in error or damaged."""

    snapshot: str
    target: str
    files: int
    dirs: int
    symlinks: int
    specials: int
    bytes: int
    refused: list[str]
    skipped_existing: list[str]
    errors: list[str]
    warnings: list[str]
    damaged: list[DamagedFile]


class DatabaseRestorePlan(Record):
    """`opsagent restore --database NAME --dry-run --json`: the dump files that would be
    restored, and the last good restore test's time as an estimate (null: none yet)."""

    snapshot: str
    database: str
    target: str
    dump_files: list[str]
    bytes: int
    expected_seconds: Number | None


class TableRowCounts(Record):
    """One table's rows at backup time and once restored (null: the table is absent)."""

    table: str
    expected: int | None
    restored: int | None


class SchemaFingerprints(Record):
    """The schema fingerprint recorded at backup time and the restored one's."""

    expected: str | None
    restored: str | None


class DatabaseRestore(Record):
    """`opsagent restore --database NAME --json`: the restore's time, each table's rows
    and the schema compared with the facts recorded at backup time."""

    snapshot: str
    database: str
    target: str
    seconds: Number
    ok: bool
    problems: list[str]
    tables: list[TableRowCounts]
    schema_fingerprint: SchemaFingerprints


class PlannedSnapshot(Record):
    """A snapshot the next restore test will restore."""

    source: str
    id: str
    time: str
    bytes: int | None


class PlanSandbox(Record):
    """Where the restore test restores."""

    kind: str
    root: str


class PlanVerify(Record):
    """What the restore test verifies: SQL checks, commands, and how often every byte
    is read."""

    sql: int
    commands: int
    data_full_every: str


class RestoreTestPlan(Record):
    """`opsagent restore-test plan --json`: when the next restore test runs, the
    snapshots it will test, what stops a source being tested, and its rules."""

    next_run: str | None
    snapshots: list[PlannedSnapshot]
    problems: list[str]
    snapshot_rule: str
    sandbox: PlanSandbox
    verify: PlanVerify
    max_rto: str | None
    max_rpo: str | None
