"""The data-source registry: every configured kind has an implementation, and a new kind
is one class that goes through backup and restore without touching anything else."""

from __future__ import annotations

import hashlib
import json
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from agents.backup.recovery import restore_database
from agents.backup.runner import init_repository, open_repository, run_backup
from agents.backup.sources import DatabaseFacts, DumpFacts, SourceDump, SourceError, Store
from agents.backup.sources.base import DatabaseSource, Dump, RestoreOptions
from agents.backup.sources.registry import (
    data_source,
    kinds,
    register,
    source_class,
    unregister,
)
from agents.config import Config, Source, parse_config

PROTOCOL = (
    "kind",
    "chunking",
    "holds_databases",
    "accepts_sql_assertions",
    "paths",
    "tolerates_unreadable",
    "back_up",
    "restore",
    "verify",
    "scratch_target",
    "scratch_databases",
    "drop_scratch",
)


def configured_kinds() -> list[str]:
    """Every `kind` the config accepts under backup.sources[]."""
    union = typing.get_args(Source)[0]
    return [typing.get_args(m.model_fields["kind"].annotation)[0] for m in typing.get_args(union)]


@pytest.mark.parametrize("kind", configured_kinds())
def test_every_configured_kind_has_an_implementation(kind: str) -> None:
    implementation = source_class(kind)
    assert implementation.kind == kind
    assert kind in kinds()
    for name in PROTOCOL:
        assert hasattr(implementation, name), f"{kind} lacks {name}"
    assert implementation.chunking in ("files", "dumps")


def test_unknown_kind_is_one_line_error() -> None:
    with pytest.raises(SourceError, match="unknown source kind 'mongodb'"):
        source_class("mongodb")
    with pytest.raises(SourceError, match="unknown source kind"):
        source_class("registry")


def test_database_facts_read_back_as_recorded() -> None:
    recorded = {
        "tables": {"public.a": 3, "public.b": 10_000_000},
        "estimated_tables": ["public.b"],
        "schema_fingerprint": "f" * 64,
        "dump_bytes": 123,
        "dump_sha256": None,
        "dump_path": "db/app.pgdir",
        "format": "directory",
    }
    facts = DatabaseFacts.from_dict(recorded)
    assert facts.dump == DumpFacts(123, None, "db/app.pgdir", "directory")
    assert facts.to_dict() == recorded
    assert list(facts.to_dict()) == list(recorded)  # same JSON, key order included
    assert DatabaseFacts.of_snapshot({}, "app") == DatabaseFacts()


# --- a new kind: one class, registered here instead of a module in the package --------


@dataclass(frozen=True)
class KeyValueConfig:
    """What a config model for the new kind would hold."""

    name: str
    path: Path
    kind: str = "keyvalue"
    hooks: None = None


def _facts(data: dict[str, str]) -> DatabaseFacts:
    return DatabaseFacts(
        tables={"keys": len(data)},
        schema_fingerprint=hashlib.sha256("\n".join(sorted(data)).encode()).hexdigest(),
    )


class KeyValueSource(DatabaseSource):
    """A toy key-value store kept as one JSON file (think of a Redis RDB)."""

    kind: ClassVar[str] = "keyvalue"

    def dump(self, store: Store, workdir: Path) -> SourceDump:
        data = json.loads(self.config.path.read_text())
        with open(self.config.path, "rb") as handle:
            stored = store("store.json", handle)
        dump = DumpFacts(stored.size, stored.sha256, stored.entry.path, "json")
        return SourceDump([stored.entry], "1.0", {"store": _facts(data).with_dump(dump)})

    def restore(
        self, dump: Dump, target: str, workdir: Path, options: RestoreOptions
    ) -> DatabaseFacts:
        path = Path(target)
        dump.write(dump.entries[0], path)
        return _facts(json.loads(path.read_text()))


@pytest.fixture
def keyvalue() -> Iterator[type[KeyValueSource]]:
    register(KeyValueSource)
    yield KeyValueSource
    unregister("keyvalue")


def test_a_new_kind_backs_up_and_restores(keyvalue: type[KeyValueSource], tmp_path: Path) -> None:
    key = tmp_path / "repo.key"
    key.write_text("correct horse battery staple\n")
    key.chmod(0o600)
    config: Config = parse_config(
        f"""
host: test-host
state_dir: {tmp_path / "state"}
backup:
  repository: "{tmp_path / "repo"}"
  password_file: {key}
  sources: []
"""
    )
    assert config.backup is not None
    store = tmp_path / "store.json"
    store.write_text(json.dumps({"a": "1", "b": "2", "c": "3"}))
    source = KeyValueConfig(name="kv", path=store)
    config.backup.sources.append(source)  # type: ignore[arg-type]
    assert type(data_source(source)) is KeyValueSource
    assert "keyvalue" in kinds()

    init_repository(config.backup, config.host)
    result = run_backup(config)
    assert result.ok, result.summary
    repo = open_repository(config.backup)
    snap = repo.find_snapshot("latest")
    assert snap.source_kind == "keyvalue"
    assert snap.facts["kind"] == "keyvalue"
    assert snap.facts["databases"]["store"]["tables"] == {"keys": 3}

    recovery = restore_database(
        repo, snap, "store", str(tmp_path / "restored.json"), source, tmp_path / "w"
    )
    assert recovery.ok, recovery.problems
    assert json.loads((tmp_path / "restored.json").read_text()) == json.loads(store.read_text())
