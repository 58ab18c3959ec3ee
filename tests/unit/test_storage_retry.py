"""RetryingStorage: transient failures retried with backoff, others at once, listings resumed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from agents.backup.errors import NotFound, StorageError
from agents.backup.storage import ObjectInfo, ObjectKind, open_storage
from agents.backup.storage.local import LocalStorage
from agents.backup.storage.retry import (
    RetryingStorage,
    backoff,
    is_transient,
    retry_call,
    transient,
)


class Flaky:
    """A backend whose calls fail transiently a given number of times first."""

    url = "flaky://"

    def __init__(self, failures: int, error: StorageError | None = None) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error or transient(StorageError(f"flaky: try {self.calls} failed"))

    def put(self, key: str, data: bytes, kind: ObjectKind = ObjectKind.META) -> None:
        self._maybe_fail()

    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        self._maybe_fail()
        return b"data"

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        self.calls += 1
        yield ObjectInfo("a", 1)
        yield ObjectInfo("b", 1)
        if self.calls <= self.failures:
            raise transient(StorageError("flaky: listing cut"))
        yield ObjectInfo("c", 1)

    def delete(self, keys: list[str], verify: bool = True) -> None:
        self._maybe_fail()

    def stat(self, key: str) -> ObjectInfo:
        self._maybe_fail()
        return ObjectInfo(key, 4)

    def retention(self, key: str) -> datetime | None:
        self._maybe_fail()
        return None

    def delete_versions(self, keys: list[str]) -> None:
        self._maybe_fail()

    def leftovers(self) -> list[str]:
        self._maybe_fail()
        return []


@pytest.fixture(autouse=True)
def _no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waits: list[float] = []
    monkeypatch.setattr("agents.backup.storage.retry.time.sleep", waits.append)
    return waits


def test_transient_failures_are_retried_with_backoff(_no_sleep: list[float]) -> None:
    inner = Flaky(failures=2)
    storage = RetryingStorage(inner, attempts=3)
    assert storage.get("k") == b"data"
    assert inner.calls == 3
    assert len(_no_sleep) == 2 and 0.05 <= _no_sleep[0] <= 0.15 and 0.1 <= _no_sleep[1] <= 0.3


def test_the_last_transient_failure_is_raised_as_the_backend_raised_it() -> None:
    inner = Flaky(failures=5)
    with pytest.raises(StorageError) as info:
        RetryingStorage(inner, attempts=3).put("k", b"x")
    assert type(info.value) is StorageError
    assert str(info.value) == "flaky: try 3 failed"
    assert inner.calls == 3


def test_other_failures_are_not_retried() -> None:
    inner = Flaky(failures=5, error=NotFound("flaky: k does not exist"))
    with pytest.raises(NotFound):
        RetryingStorage(inner, attempts=8).stat("k")
    assert inner.calls == 1
    denied = Flaky(failures=5, error=StorageError("flaky: access denied"))
    with pytest.raises(StorageError):
        RetryingStorage(denied, attempts=8).delete(["k"])
    assert denied.calls == 1


def test_every_operation_is_retried() -> None:
    storage = RetryingStorage(Flaky(failures=0), attempts=2)
    for call in (
        lambda: storage.put("k", b"x"),
        lambda: storage.delete(["k"]),
        lambda: storage.stat("k"),
        lambda: storage.retention("k"),
        lambda: storage.delete_versions(["k"]),
        storage.leftovers,
    ):
        storage.inner = Flaky(failures=1)  # type: ignore[assignment]
        call()
        assert storage.inner.calls == 2  # type: ignore[attr-defined]


def test_a_listing_cut_short_resumes_without_duplicates() -> None:
    inner = Flaky(failures=2)
    listed = [info.key for info in RetryingStorage(inner, attempts=3).list("")]
    assert listed == ["a", "b", "c"]
    assert inner.calls == 3


def test_a_retried_request_is_not_retried_again_around_it() -> None:
    calls = 0

    def request() -> None:
        nonlocal calls
        calls += 1
        raise transient(StorageError("store: cannot read x: SlowDown"))

    with pytest.raises(StorageError) as info:
        retry_call(lambda: retry_call(request, 3), 4)
    assert calls == 3, "attempts never multiply"
    assert not is_transient(info.value)


def test_backoff_grows_and_is_capped() -> None:
    assert 0.05 <= backoff(1) <= 0.15
    assert 0.2 <= backoff(3) <= 0.6
    assert 10.0 <= backoff(30) <= 30.0


def test_marks() -> None:
    assert is_transient(transient(StorageError("x")))
    assert not is_transient(StorageError("x"))
    assert not is_transient(ValueError("x"))


def test_local_storage_is_not_wrapped_and_has_no_lock_or_versions(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path / "repo"))
    assert isinstance(storage, LocalStorage)
    storage.put("data/x", b"x")
    assert storage.retention("data/x") is None
    storage.delete_versions(["data/x"])
    assert storage.get("data/x") == b"x"


class CutStream(Flaky):
    """A backend whose streams break off after `cut` bytes, transiently, `failures` times."""

    def __init__(self, body: bytes, cut: int, failures: int, error: StorageError | None = None):
        super().__init__(failures, error)
        self.body = body
        self.cut = cut
        self.asked: list[tuple[int, int]] = []

    def stream(self, key: str, start: int, length: int) -> Iterator[bytes]:
        self.asked.append((start, length))
        self.calls += 1
        end = start + length
        if self.calls <= self.failures:
            end = min(end, start + self.cut)
        for at in range(start, end, 7):
            yield self.body[at : min(at + 7, end)]
        if end < start + length:
            raise self.error or transient(StorageError("cut"))


def test_a_cut_stream_resumes_where_it_stopped(_no_sleep: list[float]) -> None:
    body = bytes(range(100))
    inner = CutStream(body, cut=30, failures=3)
    storage = RetryingStorage(inner, attempts=2)  # failures in a row, not in all
    assert b"".join(storage.stream("k", 10, 85)) == body[10:95]
    assert inner.asked == [(10, 85), (40, 55), (70, 25)]


def test_a_stream_failing_in_a_row_gives_up_and_other_errors_at_once(
    _no_sleep: list[float],
) -> None:
    inner = CutStream(bytes(100), cut=0, failures=10)
    with pytest.raises(StorageError, match="cut"):
        list(RetryingStorage(inner, attempts=3).stream("k", 0, 100))
    assert len(inner.asked) == 3
    denied = CutStream(bytes(100), cut=20, failures=10, error=StorageError("denied"))
    with pytest.raises(StorageError, match="denied"):
        list(RetryingStorage(denied, attempts=3).stream("k", 0, 100))
    assert len(denied.asked) == 1
