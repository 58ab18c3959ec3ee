"""MySQL / MariaDB source: mariadb-dump (or mysqldump) streamed into the repository.

`--single-transaction` gives a consistent InnoDB snapshot; routines, triggers and
events are included; blobs are hex-encoded. MySQL cannot share a snapshot between
the dump and another connection, so the row counts are read from the dump stream
itself as it passes (every tuple of every INSERT), which makes them exact for the
dump whatever the application writes meanwhile. Credentials go through an option
file (`--defaults-extra-file`, mode 0600), never the command line.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pymysql

from agents.backup.errors import BackupError
from agents.backup.sources import (
    DatabaseFacts,
    DumpFacts,
    SourceDump,
    SourceError,
    Store,
    TapReader,
    child_env,
    dump_process,
    schema_fingerprint,
)
from agents.backup.sources.base import DatabaseSource, Dump, RestoreOptions, ScratchSpace
from agents.config import MysqlSource, Sandbox, resolve_secret

_SYSTEM = ("information_schema", "performance_schema", "mysql", "sys")
_STRING = re.compile(rb"'(?:[^'\\]|\\.)*'", re.DOTALL)
_INSERT = re.compile(rb"^INSERT INTO `((?:[^`]|``)+)` VALUES\s*")
_CREATE = re.compile(rb"^CREATE TABLE `((?:[^`]|``)+)`")
_AUTO_INCREMENT = re.compile(r" AUTO_INCREMENT=\d+")


class RowCounter:
    """Counts rows per table in a mysqldump stream, fed in arbitrary pieces.

    MySQL writes an INSERT's tuples on one line, MariaDB one tuple per line; either
    way, with strings removed (newlines inside them are escaped), each tuple opens
    exactly one parenthesis, and the statement ends with `;` at the end of a line.
    """

    def __init__(self) -> None:
        self.tables: dict[str, int] = {}
        self._partial = b""
        self._table: str | None = None

    def feed(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            self._line(line)

    def finish(self) -> dict[str, int]:
        if self._partial:
            self._line(self._partial)
            self._partial = b""
        return self.tables

    def _line(self, line: bytes) -> None:
        if self._table is None:
            if match := _CREATE.match(line):
                self.tables.setdefault(_name(match.group(1)), 0)
                return
            match = _INSERT.match(line)
            if match is None:
                return
            self._table = _name(match.group(1))
            line = line[match.end() :]
        values = _STRING.sub(b"''", line)
        self.tables[self._table] = self.tables.get(self._table, 0) + values.count(b"(")
        if values.rstrip().endswith(b";"):
            self._table = None


def backup(source: MysqlSource, store: Store, workdir: Path) -> SourceDump:
    """Dump every database of the source, counting rows from the dump as it passes."""
    what = f"mysql {source.name}"
    result = SourceDump()
    with _client(source, what) as conn:
        result.server_version = conn.get_server_info()
        databases = _databases(conn, source)
    tool = _dump_tool()
    with option_file(source, workdir) as options:
        for database in databases:
            counter = RowCounter()
            argv = [
                tool,
                f"--defaults-extra-file={options}",
                "--single-transaction",
                "--routines",
                "--triggers",
                "--events",
                "--hex-blob",
                "--skip-dump-date",
                database,
            ]
            with dump_process(argv, child_env({}), f"{what} ({database})") as stream:
                stored = store(f"{database}.sql", TapReader(stream, [counter.feed]))
            schema = _schema_sql(tool, options, database, f"{what} ({database})")
            result.entries.append(stored.entry)
            result.databases[database] = DatabaseFacts(
                tables=counter.finish(),
                schema_fingerprint=schema_fingerprint(_AUTO_INCREMENT.sub("", schema)),
                dump=DumpFacts(stored.size, stored.sha256, stored.entry.path, "sql"),
            )
    return result


def inspect(source: MysqlSource, database: str, workdir: Path) -> DatabaseFacts:
    """Facts of a live database (a restored copy), computed like those at backup time."""
    what = f"mysql {source.name}"
    with _client(source, what, database) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema=%s AND table_type='BASE TABLE' ORDER BY 1",
            (database,),
        )
        tables = {}
        for (table,) in cur.fetchall():
            cur.execute(f"SELECT COUNT(*) FROM `{table.replace('`', '``')}`")
            tables[table] = int(cur.fetchone()[0])
    with option_file(source, workdir) as options:
        schema = _schema_sql(_dump_tool(), options, database, what)
    return DatabaseFacts(
        tables=tables, schema_fingerprint=schema_fingerprint(_AUTO_INCREMENT.sub("", schema))
    )


def restore_dump(source: MysqlSource, stream: Any, database: str, workdir: Path) -> None:
    """Feed a dump into the mysql client against `database` (which must exist)."""
    client = shutil.which("mariadb") or shutil.which("mysql")
    if client is None:
        raise SourceError("the mariadb (or mysql) client is not installed")
    with option_file(source, workdir) as options:
        proc = subprocess.Popen(
            [client, f"--defaults-extra-file={options}", database],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
        )
        assert proc.stdin is not None
        try:
            for piece in stream:
                proc.stdin.write(piece)
            proc.stdin.close()
        except BrokenPipeError:
            pass
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.wait() != 0:
            lines = err.strip().splitlines()
            raise SourceError(f"mysql restore into {database} failed: {lines[-1] if lines else ''}")


def prepare_database(source: MysqlSource, name: str, create: bool, force: bool) -> None:
    """Created when asked; refused when it holds tables unless forced (then recreated)."""
    with _client(source, "mysql") as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name=%s", (name,)
        )
        if not cur.fetchone()[0] and not (create or force):
            raise SourceError(f"target database {name} does not exist; use --create")
        cur.execute("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema=%s", (name,))
        count = int(cur.fetchone()[0])
        if count and not force:
            raise SourceError(f"target database {name} is not empty ({count} tables); use --force")
        quoted = name.replace("`", "``")
        if count:
            cur.execute(f"DROP DATABASE `{quoted}`")
        cur.execute(f"CREATE DATABASE IF NOT EXISTS `{quoted}`")


def drop_database(source: MysqlSource, name: str) -> None:
    """Drop a database if it exists."""
    with _client(source, "mysql") as conn, conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name.replace('`', '``')}`")


@contextmanager
def option_file(source: MysqlSource, workdir: Path) -> Iterator[str]:
    """An option file for the client tools: the configured one, or a private temp one."""
    if source.option_file is not None and source.password is None and not source.password_file:
        yield str(source.option_file)
        return
    password = resolve_secret(source.password, source.password_file) or ""
    workdir.mkdir(parents=True, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix="my-", suffix=".cnf", dir=workdir)
    try:
        with os.fdopen(fd, "w") as handle:
            os.fchmod(handle.fileno(), 0o600)
            escaped = password.replace("\\", "\\\\").replace('"', '\\"')
            handle.write(
                f"[client]\nhost={source.host}\nport={source.port}\nuser={source.user}\n"
                f'password="{escaped}"\n'
            )
        yield path
    finally:
        os.unlink(path)


@contextmanager
def _client(source: MysqlSource, what: str, database: str | None = None) -> Iterator[Any]:
    password = resolve_secret(source.password, source.password_file)
    kwargs: dict[str, Any] = {
        "host": source.host,
        "port": source.port,
        "user": source.user,
        "database": database,
        "connect_timeout": 10,
        "autocommit": True,
    }
    if password is not None:
        kwargs["password"] = password
    elif source.option_file is not None:
        kwargs["read_default_file"] = str(source.option_file)
    try:
        conn = pymysql.connect(**kwargs)
    except pymysql.err.OperationalError as exc:
        raise SourceError(f"{what}: {connection_problem(exc, source)}") from None
    try:
        yield conn
    finally:
        conn.close()


def connection_problem(exc: pymysql.err.OperationalError, source: MysqlSource) -> str:
    """A pymysql connection error as one short line."""
    where = f"{source.host}:{source.port}"
    code = exc.args[0] if exc.args else 0
    if code == 1045:
        return f'access denied for user "{source.user}" at {where}'
    if code in (2003, 2002):
        text = str(exc.args[1]) if len(exc.args) > 1 else ""
        reason = "connection refused" if "refused" in text.lower() else "unreachable"
        return f"cannot connect to {where}: {reason}"
    if code == 1049:
        return f"unknown database at {where}"
    return f"cannot connect to {where}: {' '.join(str(exc).split())[:200]}"


def _databases(conn: Any, source: MysqlSource) -> list[str]:
    if source.databases != "all":
        return list(source.databases)
    with conn.cursor() as cur:
        cur.execute("SHOW DATABASES")
        return sorted(r[0] for r in cur.fetchall() if r[0] not in _SYSTEM)


def _dump_tool() -> str:
    tool = shutil.which("mariadb-dump") or shutil.which("mysqldump")
    if tool is None:
        raise SourceError("mariadb-dump (or mysqldump) is not installed")
    return tool


def _schema_sql(tool: str, options: str, database: str, what: str) -> str:
    argv = [
        tool,
        f"--defaults-extra-file={options}",
        "--no-data",
        "--skip-comments",
        "--skip-dump-date",
        "--routines",
        "--triggers",
        "--events",
        database,
    ]
    proc = subprocess.run(argv, capture_output=True, env=child_env({}), check=False)
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        raise SourceError(f"{what}: schema dump failed: {lines[-1] if lines else proc.returncode}")
    return proc.stdout.decode()


def _name(raw: bytes) -> str:
    return raw.decode().replace("``", "`")


class MysqlDataSource(DatabaseSource):
    """A `kind: mysql` source (MySQL and MariaDB): a dump per database, fed back to the
    mysql client against a target `mysql://USER@HOST:PORT/DATABASE`."""

    kind: ClassVar[str] = "mysql"

    def dump(self, store: Store, workdir: Path) -> SourceDump:
        return backup(self.config, store, workdir)

    def restore(
        self, dump: Dump, target: str, workdir: Path, options: RestoreOptions
    ) -> DatabaseFacts:
        """Feed the dump into the target database (prepared as the options say) on the
        server the URL names (the source's own by default), then read its facts."""
        source = self.config
        parts = urlsplit(target)
        name = parts.path.lstrip("/")
        if parts.scheme not in ("mysql", "mariadb") or not name:
            raise BackupError("--to must be mysql://USER@HOST:PORT/DATABASE")
        server = source.model_copy(
            update={
                "host": parts.hostname or source.host,
                "port": parts.port or source.port,
                "user": parts.username or source.user,
            }
        )
        prepare_database(server, name, options.create, options.force)
        restore_dump(server, dump.stream(), name, workdir)
        return inspect(server, name, workdir)

    def scratch_target(self, space: ScratchSpace, label: str) -> str:
        config = space.config
        host = config.mysql_host or "127.0.0.1"
        name = space.new_database(self.kind)
        return f"mysql://{config.mysql_user}@{host}:{config.mysql_port}/{name}"

    @classmethod
    def scratch_databases(cls, config: Sandbox, prefix: str) -> list[str]:
        if not config.mysql_host:
            return []
        with _sandbox_client(config) as conn, conn.cursor() as cur:
            cur.execute("SHOW DATABASES LIKE %s", (prefix + "%",))
            return [r[0] for r in cur.fetchall()]

    @classmethod
    def drop_scratch(cls, config: Sandbox, name: str) -> None:
        with _sandbox_client(config) as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


def _sandbox_client(config: Sandbox) -> Any:
    """A connection to the restore test sandbox's MySQL server."""
    kwargs: dict[str, Any] = {
        "host": config.mysql_host or "127.0.0.1",
        "port": config.mysql_port,
        "user": config.mysql_user,
        "connect_timeout": 5,
        "autocommit": True,
    }
    if config.mysql_option_file:
        kwargs["read_default_file"] = str(config.mysql_option_file)
    return pymysql.connect(**kwargs)


SOURCE = MysqlDataSource
