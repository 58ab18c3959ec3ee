"""Storage backends: one small interface (put, get a range, list by prefix, delete, stat).

The repository knows nothing of S3 or directories; a backend knows nothing of packs
or snapshots. Both backends pass the same test suite (tests/integration/test_storage.py).
The repository URL picks the backend: `/path` or `file:///path` (local), `s3://bucket/prefix`;
S3 comes wrapped in `RetryingStorage` (storage/retry.py), which retries its transient failures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agents.backup.storage.base import ObjectInfo, ObjectKind, S3Endpoint, Storage

if TYPE_CHECKING:  # imported where used: a local repository needs no config models
    from agents.config import S3Config

__all__ = ["ObjectInfo", "ObjectKind", "S3Endpoint", "Storage", "open_s3_reader", "open_storage"]


def open_storage(url: str, s3: S3Config | None = None) -> Storage:
    """The backend for a repository URL; S3 with its requests retried (`max_attempts`).

    The local backend is not wrapped: none of its failures is transient."""
    if url.startswith("s3://"):
        from agents.backup.storage.retry import RetryingStorage
        from agents.backup.storage.s3 import S3Storage
        from agents.config import S3Config

        bucket, prefix = _bucket_and_prefix(url)
        config = s3 or S3Config()
        return RetryingStorage(S3Storage(bucket, prefix, config), config.max_attempts)
    from agents.backup.storage.local import LocalStorage

    path = url[7:] if url.startswith("file://") else url
    return LocalStorage(path)


def open_s3_reader(url: str, endpoint: S3Endpoint, attempts: int) -> Storage:
    """An S3 repository's storage for listing and reading only, made without the config
    models (an early unlock reads the key objects before they load), with retries."""
    from agents.backup.storage.retry import RetryingStorage
    from agents.backup.storage.s3 import S3Storage

    bucket, prefix = _bucket_and_prefix(url)
    return RetryingStorage(S3Storage.reader(bucket, prefix, endpoint, attempts), attempts)


def _bucket_and_prefix(url: str) -> tuple[str, str]:
    bucket, _, prefix = url[5:].partition("/")
    return bucket, prefix.strip("/")
