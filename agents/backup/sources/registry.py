"""The registry of data-source kinds: the one place that maps a config's `kind` to code.

A kind's implementation is the `SOURCE` class of the module named after it in this
package (`kind: postgres` -> `agents.backup.sources.postgres`), imported on first use:
the database drivers cost start-up time that file backups never need. `register`
adds a kind from elsewhere (tests, plugins).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from agents.backup.sources import SourceError
from agents.backup.sources.base import DataSource

# the order sweeps and listings go through the built-in kinds
BUILT_IN = ("files", "postgres", "mysql", "sqlite")
_NOT_KINDS = {"base", "registry"}
_classes: dict[str, type[DataSource]] = {}


def register(source_class: type[DataSource]) -> type[DataSource]:
    """Make `source_class` the implementation of its `kind` (usable as a decorator)."""
    _classes[source_class.kind] = source_class
    return source_class


def unregister(kind: str) -> None:
    """Forget a registered kind (tests that registered one clean up with this)."""
    _classes.pop(kind, None)


def source_class(kind: str) -> type[DataSource]:
    """The implementation of a kind; SourceError when no module provides it."""
    if kind not in _classes:
        if not kind.isidentifier() or kind in _NOT_KINDS:
            raise SourceError(f"unknown source kind {kind!r}")
        try:
            module = importlib.import_module(f"{__package__}.{kind}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{kind}":
                raise
            raise SourceError(f"unknown source kind {kind!r}") from None
        _classes[kind] = module.SOURCE
    return _classes[kind]


def data_source(config_source: Any) -> DataSource:
    """The data source for one configured source (`backup.sources[]`)."""
    return source_class(config_source.kind)(config_source)  # type: ignore[call-arg]


def kinds() -> tuple[str, ...]:
    """Every kind known: the built-in ones, modules added to this package, registered."""
    package = importlib.import_module(__package__ or "agents.backup.sources")
    found = [m.name for m in pkgutil.iter_modules(package.__path__) if m.name not in _NOT_KINDS]
    extra = sorted((set(found) | set(_classes)) - set(BUILT_IN))
    return BUILT_IN + tuple(extra)
