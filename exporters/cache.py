"""The scrape cache: one collection shared by every scrape that arrives within a second,
so a burst of scrapes (or an expensive collector, such as the case store's) costs one
collection, not one each."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.registry import Collector


class SharedCollection(Collector):
    """Serves one collection to every scrape within `max_age` seconds: concurrent
    scrapes wait for the collection under way instead of each paying for their own."""

    def __init__(self, inner: Collector, max_age: float = 1.0) -> None:
        self.inner = inner
        self.max_age = max_age
        self._lock = threading.Lock()
        self._cached: list[Any] = []
        self._at = 0.0

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        with self._lock:
            if time.monotonic() - self._at > self.max_age:
                self._cached = list(self.inner.collect())
                self._at = time.monotonic()
            families = self._cached
        yield from families
