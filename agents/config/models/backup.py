"""The `backup` section: repository, S3, sources (one model per kind), retention, prune."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from agents.config.fields import Duration, Model, Size, TimeZone, preset, refuse_duplicates
from agents.config.models.schedule import Schedule
from agents.config.secrets import SecretFile, SecretRef, no_inline_password


class Hooks(Model):
    before: list[str] | None = Field(
        default=None, description="Runs before; a failure skips the source (no snapshot)."
    )
    after: list[str] | None = Field(default=None, description="Runs after a successful backup.")
    on_failure: list[str] | None = Field(default=None, description="Runs after a failed backup.")
    timeout: Duration = Field(default=timedelta(minutes=5), description="Each hook's time limit.")


class SourceBase(Model):
    name: str = Field(
        min_length=1,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Unique source name (snapshots, metrics, cases).",
    )
    hooks: Hooks | None = Field(
        default=None, description="Commands before/after the backup of this source."
    )


class FilesSource(SourceBase):
    kind: Literal["files"] = Field(description="`files`.")
    paths: list[Path] = Field(
        min_length=1,
        description="Directories and files to back up; one inside another is walked once.",
    )
    exclude: list[str] = Field(default=[], description="Glob patterns to leave out.")
    one_file_system: bool = Field(default=False, description="Do not cross mount points.")
    tolerate_unreadable: bool = Field(
        default=False,
        description="Record unreadable files and directories as warnings instead of failing.",
    )


class PostgresSource(SourceBase):
    kind: Literal["postgres"] = Field(description="`postgres`.")
    dsn: str = Field(description="postgresql:// DSN without a password.")
    password_file: SecretFile | None = Field(default=None, description="File holding the password.")
    password: SecretRef | None = Field(default=None, description="The password as `${ENV_VAR}`.")
    databases: list[str] | Literal["all"] | None = Field(
        default=None, description="Databases to dump (default: all but templates)."
    )
    format: Literal["custom", "directory"] = Field(
        default="custom", description="pg_dump format: custom or directory."
    )
    globals: bool = Field(
        default=True, description="Also dump roles and tablespaces (pg_dumpall -g)."
    )
    exact_counts_below_rows: int = Field(
        default=10_000_000, ge=0, description="Exact row counts under this size; estimates above."
    )
    pg_bin_dir: Path | None = Field(
        default=None, description="Directory of pg_dump/pg_restore matching the server."
    )

    _dsn = field_validator("dsn")(lambda cls, v: no_inline_password(v))


class MysqlSource(SourceBase):
    kind: Literal["mysql"] = Field(description="`mysql` (MySQL and MariaDB).")
    host: str = Field(default="127.0.0.1", description="Server host.")
    port: int = Field(default=3306, ge=1, le=65535, description="Server port.")
    user: str = Field(default="root", description="User.")
    option_file: Path | None = Field(default=None, description="A my.cnf-style option file.")
    password_file: SecretFile | None = Field(default=None, description="File holding the password.")
    password: SecretRef | None = Field(default=None, description="The password as `${ENV_VAR}`.")
    databases: list[str] | Literal["all"] = Field(default="all", description="`all` or a list.")
    exact_counts_below_rows: int = Field(
        default=10_000_000, ge=0, description="Exact row counts under this size."
    )


class SqliteSource(SourceBase):
    kind: Literal["sqlite"] = Field(
        description="`sqlite` (online backup API: consistent while in use)."
    )
    path: Path = Field(description="The database file.")


Source = Annotated[
    FilesSource | PostgresSource | MysqlSource | SqliteSource, Field(discriminator="kind")
]


class ObjectLock(Model):
    mode: Literal["GOVERNANCE", "COMPLIANCE"] = Field(description="GOVERNANCE or COMPLIANCE.")
    days: int = Field(ge=1, description="Retention in days from the write.")


class S3Config(Model):
    endpoint_url: str | None = Field(
        default=None, description="Non-AWS endpoint (MinIO, Ceph, R2, B2); null for AWS."
    )
    region: str = Field(default="us-east-1", description="Bucket region.")
    path_style: bool = Field(
        default=False, description="Path-style addressing (most non-AWS stores)."
    )
    storage_class: str | None = Field(
        default=None, description="Storage class for packs (index and snapshots stay warm)."
    )
    sse: Literal["AES256", "aws:kms"] | None = Field(
        default=None, description="Server-side encryption: AES256 or aws:kms."
    )
    kms_key_id: str | None = Field(default=None, description="KMS key for aws:kms.")
    object_lock: ObjectLock | None = Field(
        default=None, description="Object Lock retention set on every object written."
    )
    tags: dict[str, str] = Field(default={}, description="Tags set on every object written.")
    access_key_id_file: SecretFile | None = Field(
        default=None, description="File holding the access key id (default: boto3's chain)."
    )
    secret_access_key_file: SecretFile | None = Field(
        default=None, description="File holding the secret key."
    )
    access_key_id: SecretRef | None = Field(
        default=None, description="Access key id as `${ENV_VAR}`."
    )
    secret_access_key: SecretRef | None = Field(
        default=None, description="Secret key as `${ENV_VAR}`."
    )
    multipart_threshold: Size = Field(
        default=64 * 2**20, description="Objects larger than this are uploaded in parts."
    )
    multipart_chunk_size: Size = Field(default=16 * 2**20, description="Part size.")
    max_concurrency: int = Field(
        default=4, ge=1, le=64, description="Parallel uploads and downloads."
    )
    max_attempts: int = Field(
        default=8, ge=1, description="Attempts per request (exponential backoff) before failing."
    )
    connect_timeout: Duration = Field(
        default=timedelta(seconds=10), description="Connection timeout."
    )
    read_timeout: Duration = Field(default=timedelta(seconds=60), description="Read timeout.")

    @field_validator("storage_class")
    @classmethod
    def _known_class(cls, value: str | None) -> str | None:
        known = {
            "STANDARD",
            "STANDARD_IA",
            "ONEZONE_IA",
            "INTELLIGENT_TIERING",
            "REDUCED_REDUNDANCY",
            "GLACIER",
            "GLACIER_IR",
            "DEEP_ARCHIVE",
        }
        if value is not None and value not in known:
            raise ValueError(f"must be one of {', '.join(sorted(known))}, got {value!r}")
        return value


class Retention(Model):
    keep_last: int | None = Field(default=None, ge=0, description="Keep the newest N snapshots.")
    keep_hourly: int | None = Field(
        default=None,
        ge=0,
        description="Keep the newest snapshot of each of the last N hours that have one.",
    )
    keep_daily: int | None = Field(default=None, ge=0, description="... of the last N days.")
    keep_weekly: int | None = Field(default=None, ge=0, description="... of the last N ISO weeks.")
    keep_monthly: int | None = Field(default=None, ge=0, description="... of the last N months.")
    keep_yearly: int | None = Field(default=None, ge=0, description="... of the last N years.")
    keep_within: Duration | None = Field(
        default=None, description="Keep every snapshot younger than this (calendar-aware)."
    )
    keep_within_hourly: Duration | None = Field(
        default=None, description="Keep one per hour within this window."
    )
    keep_within_daily: Duration | None = Field(
        default=None, description="One per day within this window."
    )
    keep_within_weekly: Duration | None = Field(
        default=None, description="One per week within this window."
    )
    keep_within_monthly: Duration | None = Field(
        default=None, description="One per month within this window."
    )
    keep_within_yearly: Duration | None = Field(
        default=None, description="One per year within this window."
    )
    keep_tags: list[list[str]] = Field(
        default=[], description="Snapshots with any of these tags are always kept."
    )
    timezone: TimeZone = Field(
        default="UTC", description="Time zone that defines days, weeks, months."
    )

    @model_validator(mode="after")
    def _not_empty(self) -> Retention:
        rules = self.model_dump(exclude={"timezone", "keep_tags"})
        if not any(v for v in rules.values()) and not self.keep_tags:
            raise ValueError("an empty retention policy would remove every snapshot; give a rule")
        return self


class PruneConfig(Model):
    schedule: Schedule | None = Field(
        default=preset(Schedule, weekly_on="sunday", at="04:00"),
        description="When prune runs (weekly by default; null: only by command).",
    )
    repack_threshold_percent: float = Field(
        default=20, ge=0, le=100, description="Repack a pack when more than this is unused."
    )
    delete_old_versions: bool = Field(
        default=False, description="On versioned buckets, also delete noncurrent versions."
    )


class BackupConfig(Model):
    repository: str = Field(description="`/path`, `file:///path` or `s3://bucket/prefix`.")
    s3: S3Config = Field(
        default=preset(S3Config), description="S3 endpoint, credentials and object settings."
    )
    password_file: SecretFile | None = Field(
        default=None, description="File holding the repository password (mode 0600)."
    )
    password: SecretRef | None = Field(
        default=None, description="The repository password as `${ENV_VAR}`."
    )
    compression_level: int = Field(
        default=3,
        ge=-7,
        le=22,
        description="zstd level (-7..22); skipped for data it does not shrink.",
    )
    pack_size: Size = Field(default=16 * 2**20, description="Target size of pack files.")
    cache_dir: Path | None = Field(
        default=None, description="Scratch space for dumps (default: state_dir/tmp)."
    )
    schedule: Schedule | None = Field(
        default=preset(Schedule, daily_at="02:00"),
        description="When the daily backup runs (null: only by command).",
    )
    sources: list[Source] = Field(
        default=[], description="What to back up; each is one of the kinds below."
    )
    retention: Retention | None = Field(
        default=None, description="Which snapshots to keep (applied after each backup)."
    )
    prune: PruneConfig = Field(
        default=preset(PruneConfig), description="When and how unreferenced data is deleted."
    )
    # how long a job waits for another process's conflicting lock (a prune while a
    # backup runs) before it fails
    lock_wait: Duration = Field(
        default=timedelta(minutes=10),
        description="How long a job waits for another process's conflicting lock.",
    )
    local_cache: bool = Field(
        default=True,
        description="Keep copies of an S3 repository's index files, snapshots and trees "
        "in state_dir/cache (never used by check or the restore test).",
    )

    @field_validator("repository")
    @classmethod
    def _repository_url(cls, value: str) -> str:
        if value.startswith("s3://"):
            if len(value[5:].split("/", 1)[0]) < 3:
                raise ValueError(f"expected s3://BUCKET[/PREFIX], got {value!r}")
        elif value.startswith("file://"):
            if not value[7:].startswith("/"):
                raise ValueError(f"file:// URLs take an absolute path, got {value!r}")
        elif "://" in value:
            raise ValueError(f"expected a path, file:///path or s3://bucket/prefix, got {value!r}")
        return value

    @field_validator("sources")
    @classmethod
    def _unique_sources(cls, sources: list[Any]) -> list[Any]:
        refuse_duplicates([s.name for s in sources], "source")
        return sources
