"""Retries as a wrapper around any storage backend (restic's `backend/retry`).

A backend says which of its failures are worth another try by marking the error it
raises `transient` (throttling, 5xx, a dropped connection, a body cut short); every
other error (missing object, access denied, a bad key) fails at once. `RetryingStorage`
runs each operation of the backend it wraps again on a transient failure, with
exponential backoff and jitter, up to a number of attempts; the last failure is
raised as the backend raised it, so the one-line message is the backend's.

An operation made of several requests (an S3 multipart upload, a paged listing, a
batch delete and its verification) retries each request itself with `retry_call`, the
same policy, so that a failure late in a long operation does not start it over (minio-go
does the same under restic's retry backend); a failure that used up its attempts is
final and not retried again around it, so attempts never multiply.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import BinaryIO, TypeVar

from agents.backup.storage.base import ObjectInfo, ObjectKind, Storage

T = TypeVar("T")
E = TypeVar("E", bound=Exception)

_TRANSIENT = "transient"


def transient(error: E) -> E:
    """Mark a backend's error as worth another try; returns it for `raise transient(...)`.

    A mark rather than a subclass: the error that finally reaches people keeps its type
    (`StorageError`), which results report by name."""
    setattr(error, _TRANSIENT, True)
    return error


def is_transient(exc: BaseException) -> bool:
    """True for an error a backend marked as worth another try (and not yet retried)."""
    return getattr(exc, _TRANSIENT, False) is True


def _settled(exc: Exception) -> Exception:
    """A transient error that used up its attempts: final, so that an operation retried
    around a retried request does not multiply the attempts."""
    setattr(exc, _TRANSIENT, False)
    return exc


def backoff(attempt: int) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): exponential from
    0.1 s, capped at 20 s, with jitter so that many clients do not retry in step."""
    return min(20.0, 0.1 * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)


def retry_call(fn: Callable[[], T], attempts: int) -> T:
    """Run fn, again after a backoff on each transient failure, at most `attempts` times;
    the last failure (or the first that is not transient) is raised as it is."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if attempt == attempts:
                raise _settled(exc) from None
        time.sleep(backoff(attempt))
    raise AssertionError("unreachable")


class RetryingStorage:
    """Any backend, with each operation retried on transient failures."""

    def __init__(self, inner: Storage, attempts: int) -> None:
        self.inner = inner
        self.attempts = max(1, attempts)
        self.url = inner.url

    def put(self, key: str, data: bytes, kind: ObjectKind = ObjectKind.META) -> None:
        """Store an object; a retry writes it whole again (writes are idempotent)."""
        retry_call(lambda: self.inner.put(key, data, kind), self.attempts)

    @property
    def spool(self) -> Callable[[], BinaryIO] | None:
        """The backend's spool for packs being written, if it has one (see put_file)."""
        return getattr(self.inner, "spool", None)

    def put_file(self, key: str, handle: BinaryIO, kind: ObjectKind = ObjectKind.DATA) -> None:
        """Store a file made by `spool`; a retry stores it whole again."""
        retry_call(lambda: self.inner.put_file(key, handle, kind), self.attempts)  # type: ignore[attr-defined]

    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        """Read an object or a byte range of it; raises NotFound at once."""
        return retry_call(lambda: self.inner.get(key, start, length), self.attempts)

    def stream(self, key: str, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        """A byte range in blocks; a stream cut by a transient failure is resumed where it
        stopped (a new ranged request for the rest), so no byte is given twice or left
        out. Attempts count failures in a row: a stream that keeps advancing goes on."""
        done = 0
        failures = 0
        while True:
            try:
                rest = None if length is None else length - done
                for block in self.inner.stream(key, start + done, rest):
                    done += len(block)
                    failures = 0
                    yield block
                return
            except Exception as exc:
                if not is_transient(exc):
                    raise
                failures += 1
                if failures >= self.attempts:
                    raise _settled(exc) from None
            time.sleep(backoff(failures))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object under prefix; a listing that fails part-way starts again and
        skips the keys already given, so none is given twice or left out."""
        seen: set[str] = set()
        for attempt in range(1, self.attempts + 1):
            try:
                for info in self.inner.list(prefix):
                    if info.key not in seen:
                        seen.add(info.key)
                        yield info
                return
            except Exception as exc:
                if not is_transient(exc):
                    raise
                if attempt == self.attempts:
                    raise _settled(exc) from None
            time.sleep(backoff(attempt))

    def delete(self, keys: list[str], verify: bool = True) -> None:
        """Remove objects and verify they are gone; a retry deletes them all again
        (deleting a missing object is fine)."""
        retry_call(lambda: self.inner.delete(keys, verify), self.attempts)

    def stat(self, key: str) -> ObjectInfo:
        """Size of one object; raises NotFound at once."""
        return retry_call(lambda: self.inner.stat(key), self.attempts)

    def retention(self, key: str) -> datetime | None:
        """The object's lock retain-until date, if any."""
        return retry_call(lambda: self.inner.retention(key), self.attempts)

    def delete_versions(self, keys: list[str]) -> None:
        """Remove every stored version of the keys."""
        retry_call(lambda: self.inner.delete_versions(keys), self.attempts)

    def leftovers(self) -> list[str]:
        """Incomplete uploads a failed run left behind."""
        return retry_call(self.inner.leftovers, self.attempts)
