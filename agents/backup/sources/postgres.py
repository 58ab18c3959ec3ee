"""PostgreSQL source: pg_dump streamed into the repository, facts from the same snapshot.

For each database a connection opens a REPEATABLE READ transaction and exports its
snapshot; `pg_dump --snapshot` dumps exactly that state, and the row counts and the
schema dump are read inside it too, so the facts describe the dump itself even while
the application writes. Dumps are uncompressed custom format (`-Z0`) so the
repository's chunking deduplicates day to day and the repository compresses.
Globals (roles, tablespaces) come from `pg_dumpall --globals-only`.
The password comes from `password_file`, `${ENV}` or PGPASSFILE, and reaches the
tools through the environment, never the command line.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import psycopg

from agents.backup.errors import BackupError
from agents.backup.sources import (
    DatabaseFacts,
    DumpFacts,
    SourceDump,
    SourceError,
    Store,
    child_env,
    dump_process,
    schema_fingerprint,
)
from agents.backup.sources.base import DatabaseSource, Dump, RestoreOptions, ScratchSpace
from agents.config import PostgresSource, Sandbox, resolve_secret

_SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")


def backup(source: PostgresSource, store: Store, workdir: Path) -> SourceDump:
    """Dump every database of the source (and the globals) with facts from its snapshot."""
    password = resolve_secret(source.password, source.password_file)
    what = f"postgres {source.name}"
    result = SourceDump()
    with _connect(source.dsn, password, what) as conn:
        server_version = conn.info.server_version
        _check_pg_dump(source, server_version, what)
        databases = _databases(conn, source)
    env = _env(password)
    result.server_version = _version_text(server_version)
    for database in databases:
        dsn = with_database(source.dsn, database)
        with _connect(dsn, password, what) as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]  # type: ignore[index]
            base = [_tool(source, "pg_dump"), f"--dbname={dsn}", f"--snapshot={snapshot}"]
            if source.format == "directory":
                stored = _store_directory(base, env, store, workdir, database, what)
            else:
                argv = [*base, "--format=custom", "--compress=0"]
                with dump_process(argv, env, f"{what} ({database})") as stream:
                    stored = [store(f"{database}.pgdump", stream)]
            schema = _schema_sql(base, env, f"{what} ({database})")
            facts = table_facts(conn, source.exact_counts_below_rows)
            conn.execute("COMMIT")
        result.entries += [s.entry for s in stored]
        custom = source.format == "custom"
        result.databases[database] = DatabaseFacts(
            tables=facts["tables"],
            estimated_tables=tuple(facts["estimated_tables"]),
            schema_fingerprint=schema_fingerprint(schema),
            dump=DumpFacts(
                bytes=sum(s.size for s in stored),
                sha256=stored[0].sha256 if custom else None,
                path=stored[0].entry.path if custom else stored[0].entry.path.rsplit("/", 1)[0],
                format=source.format,
            ),
        )
    if source.globals:
        argv = [_tool(source, "pg_dumpall"), f"--dbname={source.dsn}", "--globals-only"]
        try:
            with dump_process(argv, env, f"{what} (globals)") as stream:
                result.entries.append(store("globals.sql", stream).entry)
        except SourceError as exc:
            result.warnings.append(f"globals not dumped: {exc}")
    return result


def inspect(dsn: str, password: str | None = None, pg_bin_dir: Path | None = None) -> DatabaseFacts:
    """Facts of a live database (a restored copy), computed like those at backup time."""
    with _connect(dsn, password, "postgres") as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]  # type: ignore[index]
        pg_dump = str(pg_bin_dir / "pg_dump") if pg_bin_dir else "pg_dump"
        base = [pg_dump, f"--dbname={dsn}", f"--snapshot={snapshot}"]
        schema = _schema_sql(base, _env(password), "postgres")
        facts = table_facts(conn, exact_below=None)
        conn.execute("COMMIT")
    return DatabaseFacts(
        tables=facts["tables"],
        estimated_tables=tuple(facts["estimated_tables"]),
        schema_fingerprint=schema_fingerprint(schema),
    )


def restore_dump(
    dump_path: Path, dsn: str, password: str | None, jobs: int = 2, pg_bin_dir: Path | None = None
) -> None:
    """pg_restore a custom-format dump file (or directory) into an existing database."""
    pg_restore = str(pg_bin_dir / "pg_restore") if pg_bin_dir else "pg_restore"
    argv = [
        pg_restore,
        f"--dbname={dsn}",
        "--no-owner",
        "--no-privileges",
        "--exit-on-error",
        f"--jobs={max(1, jobs)}",
        str(dump_path),
    ]
    proc = subprocess.run(argv, env=_env(password), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        raise SourceError(f"pg_restore failed: {lines[-1] if lines else proc.returncode}")


def prepare_database(
    admin_dsn: str, name: str, password: str | None, create: bool, force: bool
) -> None:
    """Make the target database ready: created when asked, refused when it holds
    anything unless forced (then dropped and created afresh)."""
    with _connect(admin_dsn, password, "postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname=%s", (name,)).fetchone()
        if exists:
            with _connect(with_database(admin_dsn, name), password, "postgres") as target:
                tables = target.execute(
                    "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid=c.relnamespace"
                    " WHERE c.relkind IN ('r','p','v','m','S')"
                    " AND n.nspname NOT IN ('pg_catalog','information_schema','pg_toast')"
                ).fetchone()[0]  # type: ignore[index]
            if tables and not force:
                raise SourceError(
                    f"target database {name} is not empty ({tables} relations); use --force"
                )
            if tables:
                conn.execute(f'DROP DATABASE "{_ident(name)}" WITH (FORCE)')
                exists = None
        if not exists:
            if not create and not force:
                raise SourceError(f"target database {name} does not exist; use --create")
            conn.execute(f'CREATE DATABASE "{_ident(name)}"')


def drop_database(admin_dsn: str, name: str, password: str | None) -> None:
    """Drop a database, closing its connections."""
    with _connect(admin_dsn, password, "postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{_ident(name)}" WITH (FORCE)')


def table_facts(conn: psycopg.Connection[Any], exact_below: int | None) -> dict[str, Any]:
    """Row count of every user table (estimates above `exact_below` rows, flagged)."""
    rows = conn.execute(
        "SELECT n.nspname, c.relname, c.reltuples::bigint FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN"
        " ('pg_catalog', 'information_schema', 'pg_toast')"
        " AND n.nspname NOT LIKE 'pg_temp%' ORDER BY 1, 2"
    ).fetchall()
    tables: dict[str, int] = {}
    estimated: list[str] = []
    for schema, table, estimate in rows:
        name = f"{schema}.{table}"
        if exact_below is not None and estimate > exact_below:
            tables[name] = int(estimate)
            estimated.append(name)
            continue
        query = f'SELECT count(*) FROM "{_ident(schema)}"."{_ident(table)}"'
        tables[name] = int(conn.execute(query).fetchone()[0])  # type: ignore[index]
    return {"tables": tables, "estimated_tables": estimated}


def with_database(dsn: str, database: str) -> str:
    """The same DSN pointing at another database."""
    if "://" in dsn:
        parts = urlsplit(dsn)
        return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, ""))
    return re.sub(r"dbname=\S+", "", dsn).strip() + f" dbname={database}"


def _databases(conn: psycopg.Connection[Any], source: PostgresSource) -> list[str]:
    if source.databases == "all":
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate"
            " ORDER BY datname"
        ).fetchall()
        return [r[0] for r in rows if r[0] != "postgres"]
    if source.databases:
        return list(source.databases)
    return [conn.info.dbname]


def _connect(
    dsn: str, password: str | None, what: str, autocommit: bool = True
) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(dsn, password=password, autocommit=autocommit, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise SourceError(f"{what}: {connection_problem(exc, dsn)}") from None


def connection_problem(exc: BaseException, dsn: str) -> str:
    """A psycopg connection error as one short line."""
    text = " ".join(str(exc).split())
    parts = urlsplit(dsn) if "://" in dsn else None
    where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}" if parts else "the server"
    if match := re.search(r'password authentication failed for user "([^"]+)"', text):
        return f'authentication failed for user "{match.group(1)}" at {where}'
    if "Connection refused" in text:
        return f"cannot connect to {where}: connection refused"
    if match := re.search(r'database "([^"]+)" does not exist', text):
        return f'database "{match.group(1)}" does not exist at {where}'
    if "timeout" in text.lower():
        return f"cannot connect to {where}: timed out"
    return f"cannot connect to {where}: {text[:200]}"


def _check_pg_dump(source: PostgresSource, server_version: int, what: str) -> None:
    tool = _tool(source, "pg_dump")
    try:
        out = subprocess.run([tool, "--version"], capture_output=True, text=True, check=True).stdout
    except (FileNotFoundError, subprocess.CalledProcessError):
        raise SourceError(f"{what}: pg_dump is not installed (install postgresql-client)") from None
    match = re.search(r"(\d+)(?:\.(\d+))?", out)
    client_major = int(match.group(1)) if match else 0
    server_major = server_version // 10000
    if client_major < server_major:
        raise SourceError(
            f"{what}: pg_dump {client_major} is older than the server ({server_major});"
            f" install postgresql-client-{server_major} or set pg_bin_dir"
        )


def _store_directory(
    base: list[str], env: dict[str, str], store: Store, workdir: Path, database: str, what: str
) -> list[Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    target = Path(tempfile.mkdtemp(prefix=f"pgdump-{database}-", dir=workdir))
    try:
        argv = [*base, "--format=directory", "--compress=0", f"--file={target / 'dump'}"]
        with dump_process(argv, env, f"{what} ({database})") as stream:
            stream.read()
        stored = []
        for path in sorted((target / "dump").iterdir()):
            with open(path, "rb") as handle:
                stored.append(store(f"{database}.pgdir/{path.name}", handle))
        return stored
    finally:
        shutil.rmtree(target, ignore_errors=True)


def _schema_sql(base: list[str], env: dict[str, str], what: str) -> str:
    argv = [*base, "--schema-only", "--no-owner", "--no-privileges"]
    proc = subprocess.run(argv, env=env, capture_output=True, check=False)
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        raise SourceError(f"{what}: schema dump failed: {lines[-1] if lines else proc.returncode}")
    return proc.stdout.decode()


def _env(password: str | None) -> dict[str, str]:
    return child_env({"PGPASSWORD": password} if password else {})


def _tool(source: PostgresSource, name: str) -> str:
    return str(source.pg_bin_dir / name) if source.pg_bin_dir else name


def _version_text(version: int) -> str:
    return f"{version // 10000}.{version % 10000}"


def _ident(name: str) -> str:
    return name.replace('"', '""')


class PostgresDataSource(DatabaseSource):
    """A `kind: postgres` source: pg_dump per database, pg_restore into a target DSN."""

    kind: ClassVar[str] = "postgres"
    accepts_sql_assertions: ClassVar[bool] = True

    def dump(self, store: Store, workdir: Path) -> SourceDump:
        return backup(self.config, store, workdir)

    def restore(
        self, dump: Dump, target: str, workdir: Path, options: RestoreOptions
    ) -> DatabaseFacts:
        """pg_restore into the database `target` names (prepared as the options say),
        then read the restored copy's facts."""
        source = self.config
        password = resolve_secret(source.password, source.password_file)
        name = urlsplit(target).path.lstrip("/") if "://" in target else ""
        if not name:
            raise BackupError(f"--to must name the target database, e.g. postgresql://host/{name}")
        admin = with_database(target, "postgres")
        prepare_database(admin, name, password, options.create, options.force)
        with tempfile.TemporaryDirectory(prefix="restore-", dir=workdir) as tmp:
            if len(dump.entries) == 1:
                path = Path(tmp) / "dump.pgdump"
                dump.write(dump.entries[0], path)
            else:
                path = Path(tmp) / "dump"
                path.mkdir()
                for entry in dump.entries:
                    dump.write(entry, path / entry.path.rsplit("/", 1)[-1])
            restore_dump(path, target, password, options.jobs, source.pg_bin_dir)
        return inspect(target, password, source.pg_bin_dir)

    def scratch_target(self, space: ScratchSpace, label: str) -> str:
        if not space.config.postgres_dsn:
            raise SourceError("restore_test.sandbox.postgres_dsn is needed to test PostgreSQL")
        return with_database(space.config.postgres_dsn, space.new_database(self.kind))

    @classmethod
    def scratch_databases(cls, config: Sandbox, prefix: str) -> list[str]:
        if not config.postgres_dsn:
            return []
        password = resolve_secret(file=config.postgres_password_file)
        with psycopg.connect(config.postgres_dsn, password=password, connect_timeout=5) as conn:
            rows = conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s", (prefix + "%",)
            ).fetchall()
        return [r[0] for r in rows]

    @classmethod
    def drop_scratch(cls, config: Sandbox, name: str) -> None:
        assert config.postgres_dsn is not None
        drop_database(config.postgres_dsn, name, resolve_secret(file=config.postgres_password_file))


SOURCE = PostgresDataSource
