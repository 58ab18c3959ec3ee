"""Real servers for tests, started on loopback with free ports and stopped after.

Each start is bounded in time: a server that cannot start raises `ServiceError`
with a one-line reason (the fixtures turn it into a test failure), never a hang.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

START_TIMEOUT = 30.0


class ServiceError(Exception):
    """A test service could not start; one line saying why."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    what: str, ready: Callable[[], bool], timeout: float = START_TIMEOUT, proc=None
) -> None:
    """Poll `ready` until true; fail with one line on timeout or if `proc` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServiceError(f"{what} exited with code {proc.returncode} before it was ready")
        with contextlib.suppress(Exception):
            if ready():
                return
        time.sleep(0.05)
    raise ServiceError(f"{what} not ready after {timeout:.0f}s")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def need(binary: str) -> str:
    path = shutil.which(binary) or (binary if os.path.exists(binary) else None)
    if path is None:
        raise ServiceError(f"{binary} is not installed (run the README's test command)")
    return path


@dataclass
class Process:
    """A server process with its log file; `stop` terminates, then kills."""

    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return ""


def spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> Process:
    handle = log.open("wb")
    proc = subprocess.Popen(
        argv, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
    )
    handle.close()
    return Process(proc, log)


# --- S3 -------------------------------------------------------------------------------


@dataclass
class S3Server:
    process: Process
    port: int
    access_key: str = "testing"
    secret_key: str = "testing"
    region: str = "us-east-1"

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )


def start_s3(workdir: Path) -> S3Server:
    """moto's server over real HTTP, in its own process."""
    binary = Path(sys.executable).with_name("moto_server")
    argv = [str(binary) if binary.exists() else need("moto_server"), "-H", "127.0.0.1", "-p", "0"]
    proc = spawn(argv, workdir / "moto.log")
    port: list[int] = []

    def ready() -> bool:
        match = re.search(r"Running on http://127\.0\.0\.1:(\d+)", proc.log.read_text())
        if match:
            port[:] = [int(match.group(1))]
            return port_open(port[0])
        return False

    try:
        wait_for("moto S3 server", ready, proc=proc.proc)
    except ServiceError:
        proc.stop()
        raise
    return S3Server(proc, port[0])


# --- sshd -----------------------------------------------------------------------------


@dataclass
class SshServer:
    process: Process
    port: int
    dir: Path
    user: str
    client_key: Path
    known_hosts: Path
    host_key_pub: str


def start_sshd(workdir: Path, user: str | None = None) -> SshServer:
    """OpenSSH sshd on a loopback port with a throwaway host key and client key."""
    sshd = need("/usr/sbin/sshd")
    keygen = need("ssh-keygen")
    workdir.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    host_key = workdir / "host_ed25519"
    client_key = workdir / "client_ed25519"
    for key in (host_key, client_key):
        if not key.exists():
            subprocess.run(
                [keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                check=True,
                capture_output=True,
            )
    (workdir / "authorized_keys").write_text(client_key.with_suffix(".pub").read_text())
    port = free_port()
    config = workdir / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"PidFile {workdir / 'sshd.pid'}",
                f"AuthorizedKeysFile {workdir / 'authorized_keys'}",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "PermitRootLogin prohibit-password",
                "StrictModes no",
                "PermitUserEnvironment no",
                "Subsystem sftp internal-sftp",
                "",
            ]
        )
    )
    proc = spawn([sshd, "-D", "-e", "-f", str(config)], workdir / "sshd.log")
    try:
        wait_for("sshd", lambda: port_open(port), proc=proc.proc)
    except ServiceError as exc:
        proc.stop()
        raise ServiceError(f"{exc}: {proc.log_tail()}") from None
    kind, blob = host_key.with_suffix(".pub").read_text().split()[:2]
    known_hosts = workdir / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {kind} {blob}\n")
    import getpass

    return SshServer(
        proc, port, workdir, user or getpass.getuser(), client_key, known_hosts, f"{kind} {blob}"
    )


# --- Prometheus and Alertmanager ------------------------------------------------------


@dataclass
class PrometheusServer:
    process: Process
    port: int
    config: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reload(self) -> None:
        urllib.request.urlopen(
            urllib.request.Request(f"{self.url}/-/reload", method="POST"), timeout=10
        ).read()


def start_prometheus(workdir: Path, config_text: str) -> PrometheusServer:
    binary = need("prometheus")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = workdir / "prometheus.yml"
    config.write_text(config_text.replace("$SELF", f"127.0.0.1:{port}"))
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
        "--rules.alert.resend-delay=1s",
    ]
    proc = spawn(argv, workdir / "prometheus.log")
    url = f"http://127.0.0.1:{port}/-/ready"
    try:
        wait_for(
            "prometheus",
            lambda: urllib.request.urlopen(url, timeout=1).status == 200,
            proc=proc.proc,
        )
    except ServiceError as exc:
        proc.stop()
        raise ServiceError(f"{exc}: {proc.log_tail()}") from None
    return PrometheusServer(proc, port, config)


@dataclass
class AlertmanagerServer:
    process: Process
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_alertmanager(workdir: Path, config_text: str) -> AlertmanagerServer:
    binary = need("prometheus-alertmanager")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = workdir / "alertmanager.yml"
    config.write_text(config_text)
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    proc = spawn(argv, workdir / "alertmanager.log")
    url = f"http://127.0.0.1:{port}/-/ready"
    try:
        wait_for(
            "alertmanager",
            lambda: urllib.request.urlopen(url, timeout=1).status == 200,
            proc=proc.proc,
        )
    except ServiceError as exc:
        proc.stop()
        raise ServiceError(f"{exc}: {proc.log_tail()}") from None
    return AlertmanagerServer(proc, port)


# --- databases ------------------------------------------------------------------------

PG_ADMIN_DSN = os.environ.get("OPSAGENT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
MYSQL_HOST = os.environ.get("OPSAGENT_TEST_MYSQL_HOST", "127.0.0.1")
MYSQL_PORT = int(os.environ.get("OPSAGENT_TEST_MYSQL_PORT", "3306"))


@dataclass
class Database:
    name: str
    dsn: str
    extra: dict[str, str] = field(default_factory=dict)


@contextlib.contextmanager
def postgres_database(name: str) -> Iterator[Database]:
    """A throwaway PostgreSQL database on the machine's server, dropped after."""
    import psycopg

    try:
        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        raise ServiceError(f"PostgreSQL at {PG_ADMIN_DSN} unreachable: {exc}") from None
    with admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    try:
        yield Database(name, f"{base}/{name}")
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def mysql_connect(database: str | None = None):  # type: ignore[no-untyped-def]
    import pymysql

    return pymysql.connect(
        host=MYSQL_HOST,
        port=MYSQL_PORT,
        user="root",
        password="",
        database=database,
        autocommit=True,
        connect_timeout=5,
    )


@contextlib.contextmanager
def mysql_database(name: str) -> Iterator[Database]:
    """A throwaway MariaDB database on the machine's server, dropped after."""
    import pymysql

    try:
        admin = mysql_connect()
    except pymysql.Error as exc:
        raise ServiceError(f"MariaDB at {MYSQL_HOST}:{MYSQL_PORT} unreachable: {exc}") from None
    with admin, admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        cur.execute(f"CREATE DATABASE `{name}`")
    try:
        yield Database(name, f"mysql://root@{MYSQL_HOST}:{MYSQL_PORT}/{name}")
    finally:
        with mysql_connect() as admin, admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


@dataclass
class PostgresCluster:
    """A throwaway PostgreSQL cluster with password (scram) authentication."""

    directory: Path
    port: int
    password: str
    pg_ctl: str

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                self.pg_ctl,
                "-D",
                str(self.directory / "data"),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self.directory, ignore_errors=True)


def start_password_cluster(password: str = "right-password") -> PostgresCluster:
    """initdb refuses root: run it as the postgres user in a directory it owns
    (under /tmp, since pytest's own temporary directories are private to root)."""
    import glob
    import pwd
    import tempfile

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise ServiceError("initdb is not installed (postgresql server package)")
    bindir = Path(found[-1]).parent
    owner = pwd.getpwnam("postgres")
    directory = Path(tempfile.mkdtemp(prefix="opsagent-pg-"))
    os.chmod(directory, 0o700)
    (directory / "pw").write_text(password + "\n")
    for path in (directory, directory / "pw"):
        os.chown(path, owner.pw_uid, owner.pw_gid)
    as_postgres = ["runuser", "-u", "postgres", "--"]
    proc = subprocess.run(
        [
            *as_postgres,
            str(bindir / "initdb"),
            "-D",
            str(directory / "data"),
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            f"--pwfile={directory / 'pw'}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise ServiceError(f"initdb failed: {proc.stderr.strip().splitlines()[-1:]}")
    port = free_port()
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {directory} -c fsync=off"
    proc = subprocess.run(
        [
            *as_postgres,
            str(bindir / "pg_ctl"),
            "-D",
            str(directory / "data"),
            "-o",
            options,
            "-l",
            str(directory / "log"),
            "-w",
            "-t",
            "30",
            "start",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise ServiceError(f"pg_ctl start failed: {proc.stderr.strip()[-200:]}")
    return PostgresCluster(directory, port, password, str(bindir / "pg_ctl"))
