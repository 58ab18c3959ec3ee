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

import contextlib
import fcntl
import itertools
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterable
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
from agents.backup.sources.pg_archive import HeadReader
from agents.config import PostgresSource, Sandbox, resolve_secret

_SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")
_COUNTS_PER_QUERY = 500  # count(*) columns of one UNION ALL statement
_PIPE_WRITE_BYTES = 2**20  # a dump is written into pg_restore in pieces of about this size


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
            # the schema is dumped while the data is, and the rows counted, in one snapshot
            with _SchemaDump(base, env, f"{what} ({database})") as schema:
                if source.format == "directory":
                    stored = _store_directory(base, env, store, workdir, database, what)
                else:
                    argv = [*base, "--format=custom", "--compress=0"]
                    with dump_process(argv, env, f"{what} ({database})") as stream:
                        stored = [store(f"{database}.pgdump", stream)]
                facts = table_facts(conn, source.exact_counts_below_rows)
            conn.execute("COMMIT")
        result.entries += [s.entry for s in stored]
        custom = source.format == "custom"
        result.databases[database] = DatabaseFacts(
            tables=facts["tables"],
            estimated_tables=tuple(facts["estimated_tables"]),
            schema_fingerprint=schema_fingerprint(schema.sql),
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
    """Facts of a live database (a restored copy), computed like those at backup time.

    The schema dump runs while the rows are counted, both in one exported snapshot."""
    with _connect(dsn, password, "postgres") as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]  # type: ignore[index]
        pg_dump = str(pg_bin_dir / "pg_dump") if pg_bin_dir else "pg_dump"
        base = [pg_dump, f"--dbname={dsn}", f"--snapshot={snapshot}"]
        with _SchemaDump(base, _env(password), "postgres") as schema:
            facts = table_facts(conn, exact_below=None)
        conn.execute("COMMIT")
    return DatabaseFacts(
        tables=facts["tables"],
        estimated_tables=tuple(facts["estimated_tables"]),
        schema_fingerprint=schema_fingerprint(schema.sql),
    )


def restore_stream(
    chunks: Iterable[bytes],
    dsn: str,
    password: str | None,
    workdir: Path,
    jobs: int = 2,
    pg_bin_dir: Path | None = None,
) -> None:
    """pg_restore a custom-format dump into an existing database as it is read.

    The dump goes straight into pg_restore's standard input, so reading it from the
    repository and loading it into the server run at the same time. pg_restore takes
    parallel jobs only from a file: when the post-data section (indexes, constraints)
    has several items, the stream restores pre-data and data, and the post-data
    section follows with `jobs` from a file holding the archive's head, which has
    every post-data definition. An archive whose head this version cannot read is
    written to a file and restored from there."""
    chunks = iter(chunks)
    reader = HeadReader()
    for data in chunks:
        if reader.feed(data):
            break
    head = reader.head
    first = bytes(reader.buffer)
    if head is None:
        with tempfile.TemporaryDirectory(prefix="restore-", dir=workdir) as tmp:
            path = Path(tmp) / "dump.pgdump"
            with open(path, "wb") as handle:
                for data in itertools.chain([first], chunks):
                    handle.write(data)
            restore_dump(path, dsn, password, jobs, pg_bin_dir)
        return
    split = jobs > 1 and head.post_data_items > 1
    sections = ["--section=pre-data", "--section=data"] if split else []
    _pipe_into(
        [*_restore_argv(dsn, pg_bin_dir), *sections],
        _env(password),
        itertools.chain([first], chunks),
    )
    if split:
        with tempfile.TemporaryDirectory(prefix="restore-", dir=workdir) as tmp:
            path = Path(tmp) / "head.pgdump"
            path.write_bytes(first[: head.toc_end])
            restore_dump(path, dsn, password, jobs, pg_bin_dir, ("--section=post-data",))


def restore_dump(
    dump_path: Path,
    dsn: str,
    password: str | None,
    jobs: int = 2,
    pg_bin_dir: Path | None = None,
    sections: tuple[str, ...] = (),
) -> None:
    """pg_restore a custom-format dump file (or directory) into an existing database."""
    argv = [*_restore_argv(dsn, pg_bin_dir), *sections, f"--jobs={max(1, jobs)}", str(dump_path)]
    proc = subprocess.run(argv, env=_env(password), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise _restore_failed(proc.stderr, proc.returncode)


def prepare_database(
    admin_dsn: str, name: str, password: str | None, create: bool, force: bool
) -> bool:
    """Make the target database ready: created when asked, refused when it holds
    anything unless forced (then dropped and created afresh). Whether it was created."""
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
            return True
    return False


def drop_database(admin_dsn: str, name: str, password: str | None) -> None:
    """Drop a database, closing its connections."""
    with _connect(admin_dsn, password, "postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{_ident(name)}" WITH (FORCE)')


def table_facts(conn: psycopg.Connection[Any], exact_below: int | None) -> dict[str, Any]:
    """Row count of every user table (estimates above `exact_below` rows, flagged).

    The exact counts are read in one statement per batch of tables (a `count(*)` per
    table under UNION ALL), so the server can scan a large table with parallel
    workers and many small tables cost one round trip, not one each."""
    rows = conn.execute(
        "SELECT n.nspname, c.relname, c.reltuples::bigint FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN"
        " ('pg_catalog', 'information_schema', 'pg_toast')"
        " AND n.nspname NOT LIKE 'pg_temp%' ORDER BY 1, 2"
    ).fetchall()
    tables: dict[str, int] = {}
    estimated: list[str] = []
    exact: list[tuple[str, str, str]] = []
    for schema, table, estimate in rows:
        name = f"{schema}.{table}"
        tables[name] = int(estimate)
        if exact_below is not None and estimate > exact_below:
            estimated.append(name)
        else:
            exact.append((name, schema, table))
    for start in range(0, len(exact), _COUNTS_PER_QUERY):
        batch = exact[start : start + _COUNTS_PER_QUERY]
        query = " UNION ALL ".join(
            f'SELECT {i}, count(*) FROM "{_ident(schema)}"."{_ident(table)}"'
            for i, (_, schema, table) in enumerate(batch)
        )
        for i, count in conn.execute(query).fetchall():
            tables[batch[i][0]] = int(count)
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


class _SchemaDump:
    """`pg_dump --schema-only` running in the background while the caller dumps the data
    or counts rows; its SQL is in `sql` once the block ends (SourceError when it failed)."""

    def __init__(self, base: list[str], env: dict[str, str], what: str) -> None:
        self.argv = [*base, "--schema-only", "--no-owner", "--no-privileges"]
        self.env = env
        self.what = what
        self.sql = ""

    def __enter__(self) -> _SchemaDump:
        self.proc = _start(
            self.argv, self.what, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=self.env
        )
        self.output: list[tuple[bytes, bytes]] = []
        self.reader = threading.Thread(
            target=lambda: self.output.append(self.proc.communicate()), daemon=True
        )
        self.reader.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            self.proc.kill()
        self.reader.join()
        self.proc.wait()
        if exc[0] is not None:
            return
        out, err = self.output[0] if self.output else (b"", b"")
        if self.proc.returncode != 0:
            lines = err.decode(errors="replace").strip().splitlines()
            reason = lines[-1] if lines else self.proc.returncode
            raise SourceError(f"{self.what}: schema dump failed: {reason}")
        self.sql = out.decode()


def _start(argv: list[str], what: str, **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start a PostgreSQL tool with its standard error captured."""
    try:
        return subprocess.Popen(argv, stderr=subprocess.PIPE, **kwargs)
    except FileNotFoundError:
        raise SourceError(f"{what}: {argv[0]} is not installed") from None


def _restore_argv(dsn: str, pg_bin_dir: Path | None) -> list[str]:
    pg_restore = str(pg_bin_dir / "pg_restore") if pg_bin_dir else "pg_restore"
    return [pg_restore, f"--dbname={dsn}", "--no-owner", "--no-privileges", "--exit-on-error"]


def _restore_failed(stderr: str, code: int) -> SourceError:
    lines = stderr.strip().splitlines()
    return SourceError(f"pg_restore failed: {lines[-1] if lines else f'exit code {code}'}")


def _pipe_into(argv: list[str], env: dict[str, str], chunks: Iterable[bytes]) -> None:
    """Run pg_restore with `chunks` as its standard input, in writes of about
    `_PIPE_WRITE_BYTES`; a pg_restore that fails (and stops reading) or a dump that
    cannot be read ends both, with one line saying why."""
    proc = _start(argv, "pg_restore", stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env)
    assert proc.stdin is not None and proc.stderr is not None
    errors: list[bytes] = []
    reader = threading.Thread(target=lambda: errors.append(proc.stderr.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    with contextlib.suppress(OSError):  # a larger pipe: fewer switches between the two
        fcntl.fcntl(proc.stdin.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_WRITE_BYTES)
    try:
        batch: list[bytes] = []
        size = 0
        try:
            for data in chunks:
                batch.append(data)
                size += len(data)
                if size >= _PIPE_WRITE_BYTES:
                    proc.stdin.write(b"".join(batch))
                    batch, size = [], 0
            proc.stdin.write(b"".join(batch))
            proc.stdin.close()
        except BrokenPipeError:
            pass  # pg_restore stopped reading: its exit status and stderr say why
    except BaseException:
        proc.kill()
        raise
    finally:
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
        code = proc.wait()
        reader.join(5)
    if code != 0:
        raise _restore_failed(b"".join(errors).decode(errors="replace"), code)


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
        created = prepare_database(admin, name, password, options.create, options.force)
        try:
            if len(dump.entries) == 1:
                restore_stream(
                    dump.stream(), target, password, workdir, options.jobs, source.pg_bin_dir
                )
            else:
                with tempfile.TemporaryDirectory(prefix="restore-", dir=workdir) as tmp:
                    path = Path(tmp) / "dump"
                    path.mkdir()
                    for entry in dump.entries:
                        dump.write(entry, path / entry.path.rsplit("/", 1)[-1])
                    restore_dump(path, target, password, options.jobs, source.pg_bin_dir)
        except BaseException:
            if created:  # a half-restored database this restore made would pass for a copy
                with contextlib.suppress(Exception):
                    drop_database(admin, name, password)
            raise
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
