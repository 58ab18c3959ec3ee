"""Database sources against the real PostgreSQL and MariaDB servers of this machine."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from agents.backup.recovery import restore_database
from agents.backup.runner import init_repository, open_repository, run_backup
from agents.config import Config, parse_config
from tests.support import services

PG_SCHEMA = """
create sequence invoice_numbers start 1000;
create table clients (id serial primary key, name text not null, notes text);
create table invoices (
    id bigserial primary key,
    client_id int references clients(id),
    number int default nextval('invoice_numbers'),
    amount numeric(12, 2),
    body text,
    scan bytea,
    updated_at timestamptz default now()
);
create table audit (id serial primary key, invoice_id bigint, action text);
create view big_invoices as select * from invoices where amount > 500;
create function invoice_total(c int) returns numeric language sql stable
    as $$ select coalesce(sum(amount), 0) from invoices where client_id = c $$;
create function audit_insert() returns trigger language plpgsql as $$
begin insert into audit (invoice_id, action) values (new.id, 'insert'); return new; end $$;
create trigger invoices_audit after insert on invoices for each row execute function audit_insert();
create table empty_table (x int);
"""


def fill_postgres(dsn: str, clients: int = 200, invoices: int = 5000) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(PG_SCHEMA)
        conn.execute(
            "insert into clients (name, notes) select 'client ' || i, repeat('note ', i %% 50)"
            " from generate_series(1, %s) i",
            (clients,),
        )
        conn.execute(
            "insert into invoices (client_id, amount, body, scan)"
            " select 1 + i %% %s, (i * 37 %% 1000)::numeric,"
            " (select string_agg(md5(i::text || '-' || j::text), ' ')"
            "  from generate_series(1, 12) j),"
            " decode(repeat(md5(i::text), 8), 'hex') from generate_series(1, %s) i",
            (clients, invoices),
        )


def table_hashes(dsn: str) -> dict[str, str]:
    """An ordered hash of each table's rows."""
    out = {}
    with psycopg.connect(dsn) as conn:
        tables = conn.execute(
            "select tablename from pg_tables where schemaname='public' order by 1"
        ).fetchall()
        for (table,) in tables:
            digest = hashlib.sha256()
            for row in conn.execute(f'select * from "{table}" order by 1'):
                digest.update(repr(row).encode())
            out[table] = digest.hexdigest()
    return out


def pg_config(tmp_path: Path, dsn: str, extra_sources: str = "", **source: str) -> Config:
    key = tmp_path / "repo.key"
    key.write_text("pw\n")
    options = "".join(f", {k}: {v}" for k, v in source.items())
    text = f"""
host: db-host
state_dir: {tmp_path / "state"}
backup:
  repository: {tmp_path / "repo"}
  password_file: {key}
  sources:
    - {{name: app-db, kind: postgres, dsn: "{dsn}"{options}}}
{extra_sources}
"""
    path = tmp_path / "config.yml"
    path.write_text(text)
    config = parse_config(text, str(path))
    assert config.backup is not None
    if not (tmp_path / "repo").exists():
        init_repository(config.backup, config.host)
    return config


@pytest.fixture
def pg_target() -> Iterator[str]:
    name = f"opsagent_r_{uuid.uuid4().hex[:10]}"
    base = services.PG_ADMIN_DSN.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(services.PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'drop database if exists "{name}" with (force)')


def test_postgres_round_trip_with_facts(
    pg_database: services.Database, pg_target: str, tmp_path: Path
) -> None:
    fill_postgres(pg_database.dsn)
    config = pg_config(tmp_path, pg_database.dsn)
    result = run_backup(config)
    assert result.ok, result.summary
    assert config.backup is not None
    repo = open_repository(config.backup)
    snap = repo.find_snapshot("latest", source="app-db")
    facts = snap.facts["databases"][pg_database.name]
    assert facts["tables"] == {
        "public.audit": 5000,
        "public.clients": 200,
        "public.empty_table": 0,
        "public.invoices": 5000,
    }
    assert snap.facts["server_version"].startswith("15.")
    paths = {e.path for e in repo.read_tree(snap)}
    assert paths == {"app-db", f"app-db/{pg_database.name}.pgdump", "app-db/globals.sql"}
    assert len(facts["schema_fingerprint"]) == 64 and len(facts["dump_sha256"]) == 64
    assert facts["dump_bytes"] > 1_000_000

    recovery = restore_database(
        repo,
        snap,
        pg_database.name,
        pg_target,
        config.backup.sources[0],
        tmp_path / "w",
        create=True,
    )
    assert recovery.ok, recovery.problems
    assert table_hashes(pg_target) == table_hashes(pg_database.dsn)
    with psycopg.connect(pg_target) as conn:
        assert conn.execute("select last_value from invoice_numbers").fetchone() == (5999,)
        assert conn.execute("select count(*) from big_invoices").fetchone()[0] > 0
        assert conn.execute("select invoice_total(1)").fetchone()[0] > 0
        conn.execute("insert into invoices (client_id, amount) values (1, 1)")
        assert conn.execute("select count(*) from audit").fetchone() == (5001,)  # trigger works


def test_large_tables_get_flagged_estimates(pg_database: services.Database, tmp_path: Path) -> None:
    fill_postgres(pg_database.dsn, clients=50, invoices=3000)
    with psycopg.connect(pg_database.dsn, autocommit=True) as conn:
        conn.execute("analyze")
    config = pg_config(tmp_path, pg_database.dsn, exact_counts_below_rows="1000")
    assert run_backup(config).ok
    assert config.backup is not None
    snap = open_repository(config.backup).find_snapshot("latest")
    facts = snap.facts["databases"][pg_database.name]
    assert sorted(facts["estimated_tables"]) == ["public.audit", "public.invoices"]
    assert facts["tables"]["public.clients"] == 50  # small tables stay exact
    assert abs(facts["tables"]["public.invoices"] - 3000) <= 300


def test_directory_format(pg_database: services.Database, pg_target: str, tmp_path: Path) -> None:
    fill_postgres(pg_database.dsn, clients=10, invoices=200)
    config = pg_config(tmp_path, pg_database.dsn, format="directory")
    assert run_backup(config).ok
    assert config.backup is not None
    repo = open_repository(config.backup)
    snap = repo.find_snapshot("latest")
    paths = {e.path for e in repo.read_tree(snap)}
    assert f"app-db/{pg_database.name}.pgdir/toc.dat" in paths
    recovery = restore_database(
        repo,
        snap,
        pg_database.name,
        pg_target,
        config.backup.sources[0],
        tmp_path / "w",
        create=True,
    )
    assert recovery.ok, recovery.problems
    assert table_hashes(pg_target) == table_hashes(pg_database.dsn)
    assert list((tmp_path / "state" / "tmp").iterdir()) == []  # the temporary copy is gone


def test_changes_between_backups_are_reflected(
    pg_database: services.Database, pg_target: str, tmp_path: Path
) -> None:
    fill_postgres(pg_database.dsn, clients=20, invoices=500)
    config = pg_config(tmp_path, pg_database.dsn)
    assert run_backup(config).ok
    with psycopg.connect(pg_database.dsn, autocommit=True) as conn:
        conn.execute("delete from invoices where id <= 100")
        conn.execute("alter table clients add column email text")
    assert run_backup(config).ok
    assert config.backup is not None
    repo = open_repository(config.backup)
    first, second = [s for s in repo.snapshots() if s.source == "app-db"]
    tables_first = first.facts["databases"][pg_database.name]["tables"]
    tables_second = second.facts["databases"][pg_database.name]["tables"]
    assert tables_first["public.invoices"] == 500 and tables_second["public.invoices"] == 400
    assert (
        first.facts["databases"][pg_database.name]["schema_fingerprint"]
        != second.facts["databases"][pg_database.name]["schema_fingerprint"]
    )
    recovery = restore_database(
        repo,
        first,
        pg_database.name,
        pg_target,
        config.backup.sources[0],
        tmp_path / "w",
        create=True,
    )
    assert recovery.ok
    with psycopg.connect(pg_target) as conn:
        assert conn.execute("select count(*) from invoices").fetchone() == (500,)


def test_restore_refuses_non_empty_target_and_detects_drift(
    pg_database: services.Database, pg_target: str, tmp_path: Path
) -> None:
    fill_postgres(pg_database.dsn, clients=10, invoices=100)
    config = pg_config(tmp_path, pg_database.dsn)
    assert run_backup(config).ok
    config_file = str(tmp_path / "config.yml")
    cmd = [
        sys.executable,
        "-m",
        "agents",
        "restore",
        "latest",
        "--source",
        "app-db",
        "--database",
        pg_database.name,
        "--to",
        pg_target,
        "--config",
        config_file,
    ]
    first = subprocess.run([*cmd, "--create"], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert "schema fingerprint: matches" in first.stdout
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 3
    name = pg_target.rsplit("/", 1)[1]
    assert again.stderr == (
        f"opsagent: target database {name} is not empty (9 relations); use --force\n"
    )
    forced = subprocess.run([*cmd, "--force", "--json"], capture_output=True, text=True)
    assert forced.returncode == 0, forced.stderr


def test_day_two_dedup(pg_database: services.Database, tmp_path: Path) -> None:
    fill_postgres(pg_database.dsn, clients=100, invoices=20000)
    config = pg_config(tmp_path, pg_database.dsn)
    first = run_backup(config)
    assert first.ok
    with psycopg.connect(pg_database.dsn, autocommit=True) as conn:
        conn.execute("update invoices set amount = amount + 1 where id % 100 = 0")  # 1 %
    second = run_backup(config)
    assert second.ok
    assert config.backup is not None
    repo = open_repository(config.backup)
    snap = repo.find_snapshot("latest", source="app-db")
    dump_bytes = snap.facts["databases"][pg_database.name]["dump_bytes"]
    added = second.details["bytes_added"]
    assert dump_bytes > 10_000_000
    # 1 % of rows scattered through the table: a file-sized chunker would add the
    # whole dump again; dump-sized chunks add a fraction
    assert added < 0.3 * dump_bytes, f"day two added {added} of a {dump_bytes}-byte dump"


def test_postgres_down_and_missing_pg_dump(tmp_path: Path) -> None:
    port = services.free_port()
    config = pg_config(tmp_path, f"postgresql://postgres@127.0.0.1:{port}/app")
    result = run_backup(config)
    assert not result.ok
    assert result.summary == (
        f"app-db: postgres app-db: cannot connect to 127.0.0.1:{port}: connection refused"
    )
    empty = tmp_path / "nobin"
    empty.mkdir()
    other = tmp_path / "other"
    other.mkdir()
    config = pg_config(other, services.PG_ADMIN_DSN, pg_bin_dir=str(empty))
    result = run_backup(config)
    assert result.summary == (
        "app-db: postgres app-db: pg_dump is not installed (install postgresql-client)"
    )


def test_old_pg_dump_is_refused(pg_database: services.Database, tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "pg_dump"
    fake.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n")
    fake.chmod(0o755)
    config = pg_config(tmp_path, pg_database.dsn, pg_bin_dir=str(bindir))
    result = run_backup(config)
    assert result.summary == (
        "app-db: postgres app-db: pg_dump 9 is older than the server (15); install"
        " postgresql-client-15 or set pg_bin_dir"
    )


def test_postgres_wrong_password(tmp_path: Path) -> None:
    cluster = services.start_password_cluster()
    try:
        secret = tmp_path / "pg.pass"
        secret.write_text("wrong-password\n")
        config = pg_config(tmp_path, cluster.dsn, password_file=str(secret))
        result = run_backup(config)
        assert result.summary == (
            f'app-db: postgres app-db: authentication failed for user "postgres" at'
            f" 127.0.0.1:{cluster.port}"
        )
        secret.write_text(cluster.password + "\n")
        assert run_backup(config).ok
    finally:
        cluster.stop()


def test_killed_dump_commits_nothing_and_other_sources_continue(
    pg_database: services.Database, tmp_path: Path
) -> None:
    fill_postgres(pg_database.dsn, clients=50, invoices=20000)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    wrapper = bindir / "pg_dump"
    wrapper.write_text(
        "#!/bin/sh\n"
        'case "$*" in *--schema-only*|*--version*) exec /usr/bin/pg_dump "$@";; esac\n'
        '/usr/bin/pg_dump "$@" | head -c 200000\n'
        "kill -9 $$\n"
    )
    wrapper.chmod(0o755)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("still backed up\n")
    extra = f'    - {{name: docs, kind: files, paths: ["{docs}"]}}'
    config = pg_config(tmp_path, pg_database.dsn, extra_sources=extra, pg_bin_dir=str(bindir))
    result = run_backup(config)
    assert not result.ok
    assert result.details["sources"] == {"app-db": "error", "docs": "ok"}
    assert "pg_dump failed: killed by signal 9" in result.summary
    assert config.backup is not None
    repo = open_repository(config.backup)
    assert [s.source for s in repo.snapshots()] == ["docs"]


def test_before_hook_failure_fails_the_source(
    pg_database: services.Database, tmp_path: Path
) -> None:
    marker = tmp_path / "on-failure-ran"
    hooks = f"{{before: ['echo frozen; exit 4'], on_failure: ['touch {marker}']}}"
    config = pg_config(tmp_path, pg_database.dsn, hooks=hooks)
    result = run_backup(config)
    assert result.summary == "app-db: before hook failed (exit 4): echo frozen; exit 4: frozen"
    assert marker.exists()


MYSQL_SCHEMA = [
    "create table customers (id int primary key auto_increment, name varchar(100),"
    " photo longblob, notes text) engine=innodb",
    "create table orders (id int primary key auto_increment, customer_id int, total"
    " decimal(10,2), note varchar(200)) engine=innodb",
    "create table order_log (id int primary key auto_increment, order_id int) engine=innodb",
    "create trigger orders_log after insert on orders for each row"
    " insert into order_log (order_id) values (new.id)",
    "create procedure customer_count(out n int) select count(*) into n from customers",
    "create view big_orders as select * from orders where total > 50",
]


def mysql_table_hash(database: str, table: str) -> str:
    digest = hashlib.sha256()
    with services.mysql_connect(database) as conn, conn.cursor() as cur:
        cur.execute(f"select * from `{table}` order by id")
        for row in cur.fetchall():
            digest.update(repr(row).encode())
    return digest.hexdigest()


def test_mysql_round_trip_with_facts(mysql_database: services.Database, tmp_path: Path) -> None:
    with services.mysql_connect(mysql_database.name) as conn, conn.cursor() as cur:
        for statement in MYSQL_SCHEMA:
            cur.execute(statement)
        for i in range(300):
            cur.execute(
                "insert into customers (name, photo, notes) values (%s, %s, %s)",
                (f"cust '{i}'),(", os.urandom(2000), "line\nbreak ),( " * (i % 5)),
            )
        for i in range(1200):
            cur.execute(
                "insert into orders (customer_id, total, note) values (%s, %s, %s)",
                (1 + i % 300, i % 100, f"o{i}"),
            )
    key = tmp_path / "repo.key"
    key.write_text("pw\n")
    text = f"""
state_dir: {tmp_path / "state"}
backup:
  repository: {tmp_path / "repo"}
  password_file: {key}
  sources: [{{name: shop, kind: mysql, host: {services.MYSQL_HOST}, port: {services.MYSQL_PORT},
              user: root, databases: [{mysql_database.name}]}}]
"""
    config = parse_config(text)
    assert config.backup is not None
    init_repository(config.backup, config.host)
    result = run_backup(config)
    assert result.ok, result.summary
    repo = open_repository(config.backup)
    snap = repo.find_snapshot("latest")
    facts = snap.facts["databases"][mysql_database.name]
    assert facts["tables"] == {"customers": 300, "orders": 1200, "order_log": 1200}
    target_name = f"opsagent_r_{uuid.uuid4().hex[:8]}"
    target = f"mysql://root@{services.MYSQL_HOST}:{services.MYSQL_PORT}/{target_name}"
    try:
        recovery = restore_database(
            repo,
            snap,
            mysql_database.name,
            target,
            config.backup.sources[0],
            tmp_path / "w",
            create=True,
        )
        assert recovery.ok, recovery.problems
        for table in ("customers", "orders", "order_log"):
            assert mysql_table_hash(target_name, table) == mysql_table_hash(
                mysql_database.name, table
            )
        with services.mysql_connect(target_name) as conn, conn.cursor() as cur:
            cur.execute("call customer_count(@n)")
            cur.execute("select @n")
            assert cur.fetchone() == (300,)
            cur.execute("select count(*) from big_orders")
            assert cur.fetchone()[0] > 0
            cur.execute("insert into orders (customer_id, total) values (1, 99)")
            cur.execute("select count(*) from order_log")
            assert cur.fetchone() == (1201,)  # the trigger came back too
    finally:
        with services.mysql_connect() as conn, conn.cursor() as cur:
            cur.execute(f"drop database if exists `{target_name}`")


def test_mysql_wrong_password_and_down(tmp_path: Path) -> None:
    user = f"opsagent_{uuid.uuid4().hex[:6]}"
    with services.mysql_connect() as conn, conn.cursor() as cur:
        cur.execute(f"create user '{user}'@'%' identified by 'right'")
        cur.execute(f"create user '{user}'@'localhost' identified by 'right'")
    try:
        secret = tmp_path / "my.pass"
        secret.write_text("wrong\n")
        key = tmp_path / "repo.key"
        key.write_text("pw\n")
        port = services.free_port()
        text = f"""
state_dir: {tmp_path / "state"}
backup:
  repository: {tmp_path / "repo"}
  password_file: {key}
  sources:
    - {{name: shop, kind: mysql, host: 127.0.0.1, port: {services.MYSQL_PORT}, user: {user},
        password_file: {secret}}}
    - {{name: down, kind: mysql, host: 127.0.0.1, port: {port}}}
"""
        config = parse_config(text)
        assert config.backup is not None
        init_repository(config.backup, config.host)
        results: list = []
        run = run_backup(config, emit=results.append)
        summaries = {r.details["source"]: r.summary for r in results if r.kind == "backup_source"}
        assert summaries == {
            "shop": f'mysql shop: access denied for user "{user}" at 127.0.0.1:'
            f"{services.MYSQL_PORT}",
            "down": f"mysql down: cannot connect to 127.0.0.1:{port}: connection refused",
        }
        assert not run.ok
    finally:
        with services.mysql_connect() as conn, conn.cursor() as cur:
            cur.execute(f"drop user if exists '{user}'@'%'")
            cur.execute(f"drop user if exists '{user}'@'localhost'")


def test_sqlite_backup_is_consistent_while_written(tmp_path: Path) -> None:
    db = tmp_path / "app.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("create table events (batch int, n int)")
    conn.commit()
    stop = threading.Event()

    def writer() -> None:
        w = sqlite3.connect(db, timeout=30)
        batch = 0
        while not stop.is_set():
            with w:
                w.executemany("insert into events values (?, ?)", [(batch, i) for i in range(10)])
            batch += 1
        w.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        key = tmp_path / "repo.key"
        key.write_text("pw\n")
        text = f"""
state_dir: {tmp_path / "state"}
backup:
  repository: {tmp_path / "repo"}
  password_file: {key}
  sources: [{{name: app, kind: sqlite, path: {db}}}]
"""
        config = parse_config(text)
        assert config.backup is not None
        init_repository(config.backup, config.host)
        results = [run_backup(config) for _ in range(3)]
    finally:
        stop.set()
        thread.join()
    assert all(r.ok for r in results)
    repo = open_repository(config.backup)
    for snap in repo.snapshots():
        rows = snap.facts["databases"]["app.sqlite"]["tables"]["events"]
        assert rows % 10 == 0 and rows > 0  # whole transactions only
        target = tmp_path / f"restored-{snap.short_id}.sqlite"
        recovery = restore_database(
            repo, snap, "app.sqlite", str(target), config.backup.sources[0], tmp_path / "w"
        )
        assert recovery.ok
        check = sqlite3.connect(target)
        assert check.execute("pragma integrity_check").fetchone() == ("ok",)
        assert check.execute("select count(*) from events").fetchone() == (rows,)
