"""A PostgreSQL dump streamed into pg_restore, the archive head it reads, the facts it counts.

Against the machine's real PostgreSQL server and tools: dumps come from pg_dump through
a pipe, as a backup takes them.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from agents.backup.errors import BackupError
from agents.backup.recovery import restore_database
from agents.backup.runner import open_repository, run_backup
from agents.backup.sources import SourceError
from agents.backup.sources.pg_archive import HeadReader
from agents.backup.sources.postgres import inspect, restore_stream, table_facts
from tests.integration.test_database_sources import fill_postgres, pg_config, table_hashes
from tests.support import services


def pg_dump(dsn: str, *options: str) -> bytes:
    """A dump as the backup takes it: through a pipe, so no data offsets are recorded."""
    argv = ["pg_dump", f"--dbname={dsn}", "--format=custom", "--compress=0", *options]
    return subprocess.run(argv, capture_output=True, check=True).stdout


def pieces(data: bytes, size: int = 8192) -> Iterator[bytes]:
    """The dump as the repository hands it back: chunk by chunk."""
    return (data[i : i + size] for i in range(0, len(data), size))


def listing(path: Path, *options: str) -> list[str]:
    """pg_restore's table of contents of an archive file, comments left out."""
    argv = ["pg_restore", "--list", *options, str(path)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line and not line.startswith(";")]


@pytest.fixture
def target() -> Iterator[str]:
    name = f"opsagent_r_{uuid.uuid4().hex[:10]}"
    base = services.PG_ADMIN_DSN.rsplit("/", 1)[0]
    with psycopg.connect(services.PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'create database "{name}"')
    yield f"{base}/{name}"
    with psycopg.connect(services.PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'drop database if exists "{name}" with (force)')


def test_archive_head_is_read_as_pg_restore_reads_it(
    pg_database: services.Database, tmp_path: Path
) -> None:
    fill_postgres(pg_database.dsn, clients=20, invoices=300)
    dump = pg_dump(pg_database.dsn)
    reader = HeadReader()
    for data in pieces(dump, 100):  # the head is read whatever the pieces' size
        if reader.feed(data):
            break
    head = reader.head
    assert head is not None
    whole, prefix = tmp_path / "whole.pgdump", tmp_path / "head.pgdump"
    whole.write_bytes(dump)
    prefix.write_bytes(dump[: head.toc_end])
    assert listing(prefix) == listing(whole)  # the head holds every item's definition
    assert dump[head.toc_end] == 1  # the first data block starts right after it
    assert head.post_data_items == len(listing(whole, "--section=post-data")) > 1


def test_what_is_no_custom_archive_has_no_head() -> None:
    for data in (b"PGDMP\x01\x63\x00" + bytes(100), b"toc.dat" + bytes(600), bytes(4096)):
        reader = HeadReader()
        assert reader.feed(data) and reader.head is None
    assert not HeadReader().feed(b"PGDMP\x01\x0e")  # a head cut short asks for more


def test_streamed_restore_with_parallel_post_data_is_faithful(
    pg_database: services.Database, target: str, tmp_path: Path
) -> None:
    fill_postgres(pg_database.dsn, clients=30, invoices=800)
    restore_stream(pieces(pg_dump(pg_database.dsn)), target, None, tmp_path, jobs=2)
    assert table_hashes(target) == table_hashes(pg_database.dsn)
    assert inspect(target) == inspect(pg_database.dsn)  # same counts, same schema
    assert list(tmp_path.iterdir()) == []  # the head file is gone


def test_archive_read_from_a_file_when_its_head_is_unknown(
    pg_database: services.Database, target: str, tmp_path: Path
) -> None:
    """A tar-format archive has no head this reader knows: it is restored from a file
    (in one job: pg_restore restores tar archives in no other way)."""
    fill_postgres(pg_database.dsn, clients=5, invoices=50)
    dump = pg_dump(pg_database.dsn, "--format=tar")
    restore_stream(pieces(dump), target, None, tmp_path, jobs=1)
    assert table_hashes(target) == table_hashes(pg_database.dsn)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_failing_restore_is_one_line_and_leaves_no_file(
    pg_database: services.Database, target: str, tmp_path: Path, jobs: int
) -> None:
    fill_postgres(pg_database.dsn, clients=5, invoices=400)
    dump = pg_dump(pg_database.dsn)
    with pytest.raises(SourceError) as cut:
        restore_stream(pieces(dump[: len(dump) // 2]), target, None, tmp_path, jobs=jobs)
    assert str(cut.value).startswith("pg_restore failed: ") and "\n" not in str(cut.value)
    missing = target.rsplit("/", 1)[0] + "/opsagent_no_such_database"
    with pytest.raises(SourceError) as absent:
        restore_stream(pieces(dump), missing, None, tmp_path, jobs=jobs)
    assert "opsagent_no_such_database" in str(absent.value) and "\n" not in str(absent.value)
    assert list(tmp_path.iterdir()) == []


def test_a_dump_that_cannot_be_read_stops_pg_restore(
    pg_database: services.Database, target: str, tmp_path: Path
) -> None:
    fill_postgres(pg_database.dsn, clients=5, invoices=400)
    dump = pg_dump(pg_database.dsn)

    def damaged() -> Iterator[bytes]:
        yield from pieces(dump[: len(dump) // 2])
        raise SourceError("blob abc in pack def fails authentication")

    with pytest.raises(SourceError, match="fails authentication"):
        restore_stream(damaged(), target, None, tmp_path, jobs=2)
    assert list(tmp_path.iterdir()) == []


def test_row_counts_of_many_tables_in_batches(pg_database: services.Database) -> None:
    """More tables than one counting statement takes, each with its own count."""
    with psycopg.connect(pg_database.dsn, autocommit=True) as conn:
        conn.execute(
            "do $$ begin for i in 0..520 loop"
            " execute format('create table t%s as select generate_series(1, %s) x', i, i % 7);"
            " end loop; end $$"
        )
        conn.execute('create schema "odd ""name"""; create table "odd ""name""".t as select 1 x')
        facts = table_facts(conn, exact_below=None)
    assert facts["estimated_tables"] == []
    assert facts["tables"] == {f"public.t{i}": i % 7 for i in range(521)} | {'odd "name".t': 1}


def test_a_database_the_failed_restore_created_is_dropped(
    pg_database: services.Database, tmp_path: Path
) -> None:
    """A damaged pack stops the restore halfway: the database it created goes with it,
    so no half-restored copy passes for one (and the next --create is not refused)."""
    fill_postgres(pg_database.dsn, clients=20, invoices=3000)
    config = pg_config(tmp_path, pg_database.dsn, globals="false")
    assert run_backup(config).ok
    assert config.backup is not None
    packs = sorted(p for p in (tmp_path / "repo" / "data").rglob("*") if p.is_file())
    victim = max(packs, key=lambda p: p.stat().st_size)
    raw = bytearray(victim.read_bytes())
    raw[len(raw) * 2 // 3] ^= 0x40
    victim.write_bytes(bytes(raw))
    repo = open_repository(config.backup)
    snap = repo.find_snapshot("latest")
    name = f"opsagent_r_{uuid.uuid4().hex[:10]}"
    target = services.PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    source = config.backup.sources[0]
    with pytest.raises(BackupError, match="fails authentication") as failed:
        restore_database(repo, snap, pg_database.name, target, source, tmp_path / "w", True)
    assert "\n" not in str(failed.value)
    with psycopg.connect(services.PG_ADMIN_DSN) as admin:
        left = admin.execute("select 1 from pg_database where datname = %s", (name,)).fetchone()
    assert left is None
    assert list((tmp_path / "w").iterdir()) == []
