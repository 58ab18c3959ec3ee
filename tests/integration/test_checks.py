"""Health checks against real targets that the test starts and then breaks."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

from agents.config import parse_config
from agents.monitor.checks import run_check
from agents.results import Status
from tests.support import services


def check(text: str) -> Any:
    return parse_config(f"monitor: {{checks: [{text}]}}").monitor.checks[0]


class Scripted(BaseHTTPRequestHandler):
    mode: ClassVar[str] = "ok"

    def do_GET(self) -> None:
        if self.mode == "hang":
            time.sleep(3)
        code = 500 if self.mode == "error" else 200
        body = b'{"status": "ok"}' if code == 200 else b"boom"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return


def test_http_ok_500_and_hang() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/health"
    http = check(f"{{name: web, kind: http, url: '{url}', body_regex: '\"ok\"', timeout: 1s}}")
    try:
        Scripted.mode = "ok"
        assert run_check(http, "h").status is Status.OK
        Scripted.mode = "error"
        failed = run_check(http, "h")
        assert failed.status is Status.FAILED and failed.summary == f"{url}: HTTP 500"
        Scripted.mode = "hang"
        started = time.monotonic()
        hung = run_check(http, "h")
        assert hung.status is Status.FAILED and hung.summary == f"{url}: timed out"
        assert time.monotonic() - started < 2.5
    finally:
        server.shutdown()


def test_tcp_process_file_age_command_disk(tmp_path: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    tcp = check(f"{{name: port, kind: tcp, host: 127.0.0.1, port: {port}}}")
    assert run_check(tcp, "h").status is Status.OK
    listener.close()
    closed = run_check(tcp, "h")
    assert closed.status is Status.FAILED
    assert closed.summary == f"127.0.0.1:{port}: Connection refused"

    sleeper = subprocess.Popen(["sleep", "300"])
    pidfile = tmp_path / "app.pid"
    pidfile.write_text(str(sleeper.pid))
    proc_check = check(f"{{name: app, kind: process, pidfile: {pidfile}}}")
    assert run_check(proc_check, "h").status is Status.OK
    sleeper.kill()
    sleeper.wait()
    gone = run_check(proc_check, "h")
    assert gone.status is Status.FAILED
    assert gone.summary == "0 process(es) running, expected at least 1"

    stale = tmp_path / "export.csv"
    stale.write_text("x")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    age = check(f"{{name: export, kind: file_age, glob: '{tmp_path}/*.csv', max_age: 1h}}")
    result = run_check(age, "h")
    assert result.status is Status.FAILED and "is 2h old, over 1h" in result.summary
    stale.touch()
    assert run_check(age, "h").status is Status.OK

    slow = check("{name: slow, kind: command, command: [sleep, '5'], timeout: 1s}")
    assert run_check(slow, "h").summary == "timed out after 1s"
    disk = check("{name: root, kind: disk, path: /, min_free_percent: 100}")
    full = run_check(disk, "h")
    assert full.status is Status.FAILED and "below 100%" in full.summary


def serve_tcp(answer: Callable[[socket.socket], None]) -> tuple[int, Callable[[], None]]:
    """A TCP server on loopback that runs `answer` on every connection; its port and stop."""
    listener = socket.create_server(("127.0.0.1", 0))
    stopping = threading.Event()

    def loop() -> None:
        while not stopping.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                answer(conn)

    threading.Thread(target=loop, daemon=True).start()

    def stop() -> None:
        stopping.set()
        listener.close()

    return listener.getsockname()[1], stop


def redis_like(conn: socket.socket) -> None:
    """PING -> +PONG, after a banner in two pieces with a pause and a byte that is not UTF-8."""
    conn.sendall(b"\xffHEL")
    time.sleep(0.2)
    conn.sendall(b"LO 42\r\n")
    if conn.recv(64).startswith(b"PING"):
        conn.sendall(b"+PONG\r\n")


def test_tcp_expect_is_a_regular_expression() -> None:
    port, stop = serve_tcp(redis_like)

    def tcp(expect: str, send: str = "") -> Any:
        """Run a check with `expect` as written in single quotes in the YAML file."""
        extra = f', send: "{send}"' if send else ""
        spec = f"name: t, kind: tcp, host: 127.0.0.1, port: {port}, timeout: 2s{extra}"
        return run_check(check(f"{{{spec}, expect: '{expect}'}}"), "h")

    try:
        for expect in (r"HELLO \d+\r\n", r"^\ufffdHELLO", "HOWDY|HELLO", "42"):
            assert tcp(expect).status is Status.OK, expect
        assert tcp(r"\+PONG", send=r"PING\r\n").status is Status.OK
        failed = tcp(r"^HELLO")
        assert failed.status is Status.FAILED
        assert failed.summary == f"127.0.0.1:{port}: answer does not match '^HELLO'"
        assert failed.details["received"] == "\ufffdHELLO 42\r\n"
        assert tcp("HELLO [a-z]+").status is Status.FAILED
    finally:
        stop()


def test_tcp_expect_with_a_silent_server_times_out() -> None:
    port, stop = serve_tcp(lambda conn: time.sleep(2))
    silent = check(
        f"{{name: t, kind: tcp, host: 127.0.0.1, port: {port}, timeout: 1s, expect: 'x'}}"
    )
    try:
        result = run_check(silent, "h")
        assert result.status is Status.FAILED
        assert result.summary == f"127.0.0.1:{port}: timed out"
    finally:
        stop()


def test_postgres_and_mysql_checks(pg_database: services.Database, tmp_path: Path) -> None:
    pg = check(
        f"{{name: db, kind: postgres, dsn: '{pg_database.dsn}',"
        " query: 'select 41 + 1', expect: {max_value: 50}}"
    )
    assert run_check(pg, "h").status is Status.OK
    bound = check(
        f"{{name: db, kind: postgres, dsn: '{pg_database.dsn}',"
        " query: 'select 99', expect: {max_value: 50}}"
    )
    assert run_check(bound, "h").summary == "query returned 99, above 50"
    port = services.free_port()
    down = check(f"{{name: db, kind: postgres, dsn: 'postgresql://postgres@127.0.0.1:{port}/x'}}")
    assert run_check(down, "h").summary == "connection refused"
    cluster = services.start_password_cluster()
    try:
        secret = tmp_path / "pw"
        secret.write_text("wrong\n")
        wrong = check(
            f"{{name: db, kind: postgres, dsn: '{cluster.dsn}', password_file: {secret}}}"
        )
        assert run_check(wrong, "h").summary == 'authentication failed for user "postgres"'
    finally:
        cluster.stop()

    my = check(
        f"{{name: shop, kind: mysql, host: {services.MYSQL_HOST},"
        f" port: {services.MYSQL_PORT}, query: 'select 1', expect: {{equals: '1'}}}}"
    )
    assert run_check(my, "h").status is Status.OK
    secret = tmp_path / "mypw"
    secret.write_text("definitely-wrong\n")
    denied = check(
        f"{{name: shop, kind: mysql, host: {services.MYSQL_HOST},"
        f" port: {services.MYSQL_PORT}, user: nobody_here, password_file: {secret}}}"
    )
    assert run_check(denied, "h").summary == 'access denied for user "nobody_here"'


def test_certificate_expiring_in_three_days(tmp_path: Path) -> None:
    import ssl

    from tests.integration.test_exporter import self_signed

    cert, key = self_signed(tmp_path, days=3)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Scripted.mode = "ok"
    url = f"https://127.0.0.1:{server.server_address[1]}/"
    try:
        https = check(
            f"{{name: tls, kind: http, url: '{url}', ca_file: {cert}, cert_min_days: 14}}"
        )
        result = run_check(https, "h")
        assert result.status is Status.FAILED
        assert result.summary == f"{url}: certificate expires in 3.0 days, under 14"
        assert 2.9 < result.details["cert_days_left"] <= 3.0
        relaxed = check(
            f"{{name: tls, kind: http, url: '{url}', ca_file: {cert}, cert_min_days: 2}}"
        )
        assert run_check(relaxed, "h").status is Status.OK
    finally:
        server.shutdown()


def test_disk_forecast_on_a_filling_tmpfs(tmp_path: Path) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], check=True)
    try:
        disk = check(f"{{name: fill, kind: disk, path: {mount}, min_hours_to_full: 24}}")
        first = run_check(disk, "h")
        assert first.ok and "hours_to_full" not in first.details  # one sample: no forecast
        results = []
        for i in range(3):
            (mount / f"chunk{i}").write_bytes(b"x" * 2**20)
            time.sleep(0.2)
            results.append(run_check(disk, "h"))
        last = results[-1]
        assert last.status is Status.FAILED
        assert "at the current rate, under 24h" in last.summary
        assert last.details["hours_to_full"] < 1
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_process_cpu_and_memory_are_reported() -> None:
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        proc_check = check("{name: sleepers, kind: process, cmdline_regex: '^sleep 300$'}")
        result = run_check(proc_check, "h")
        assert result.ok and result.details["count"] >= 1
        assert result.details["rss_bytes"] > 0
    finally:
        sleeper.kill()
        sleeper.wait()
