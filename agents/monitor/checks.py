"""Application and host health checks: each takes its config and returns a CheckResult.

A check body returns (status, summary, details); `run_check` wraps it so that an
exception becomes an `error` result and never escapes. Timeouts are enforced by
each check's own I/O (socket and subprocess timeouts), so a hung target never
blocks the caller past the check's `timeout`.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psutil

from agents.config import (
    CommandCheck,
    DiskCheck,
    FileAgeCheck,
    HttpCheck,
    MysqlCheck,
    PostgresCheck,
    ProcessCheck,
    TcpCheck,
    ValueBounds,
    resolve_secret,
)
from agents.records import (
    CommandDetails,
    DiskDetails,
    FileAgeDetails,
    HttpDetails,
    ProcessDetails,
    QueryDetails,
    TcpDetails,
)
from agents.results import CheckResult, Status, run_guarded
from agents.units import format_duration, format_size

Outcome = tuple[Status, str, Mapping[str, Any]]
AnyCheck = (
    HttpCheck
    | TcpCheck
    | ProcessCheck
    | PostgresCheck
    | MysqlCheck
    | DiskCheck
    | FileAgeCheck
    | CommandCheck
)


def run_check(check: AnyCheck, host: str) -> CheckResult:
    """Run one check once; never raises."""
    body = _BODIES.get(check.kind)
    if body is None:
        summary = f"check kind {check.kind} is not supported by this agent version"
        return run_guarded(
            check.name, check.kind, host, check.severity, lambda: (Status.ERROR, summary, {})
        )
    return run_guarded(check.name, check.kind, host, check.severity, lambda: body(check))


def run_all(checks: list[AnyCheck], host: str, max_parallel: int = 8) -> list[CheckResult]:
    """Run checks concurrently on a bounded pool; results in config order."""
    if not checks:
        return []
    with ThreadPoolExecutor(max_workers=min(max_parallel, len(checks))) as pool:
        return list(pool.map(lambda c: run_check(c, host), checks))


def disk_check(check: DiskCheck) -> Outcome:
    usage = shutil.disk_usage(check.path)
    free_percent = 100.0 * usage.free / usage.total if usage.total else 0.0
    problems = []
    if check.min_free_percent is not None and free_percent < check.min_free_percent:
        problems.append(f"{free_percent:.1f}% free, below {check.min_free_percent:g}%")
    if check.min_free_bytes is not None and usage.free < check.min_free_bytes:
        problems.append(
            f"{format_size(usage.free)} free, below {format_size(check.min_free_bytes)}"
        )
    hours = _hours_to_full(check.name, usage.free)
    details = DiskDetails(
        path=str(check.path),
        total_bytes=usage.total,
        free_bytes=usage.free,
        free_percent=round(free_percent, 2),
        hours_to_full=round(hours, 2) if hours is not None else None,
    ).to_details()
    if (
        hours is not None
        and check.min_hours_to_full is not None
        and hours < check.min_hours_to_full
    ):
        problems.append(
            f"full in {format_duration(hours * 3600)} at the current rate,"
            f" under {check.min_hours_to_full:g}h"
        )
    if problems:
        return Status.FAILED, f"{check.path}: " + "; ".join(problems), details
    return Status.OK, f"{check.path}: {free_percent:.1f}% free", details


_DISK_SAMPLES: dict[str, deque[tuple[float, int]]] = {}
_DISK_WINDOW = 6 * 3600


def _hours_to_full(name: str, free: int, now: float | None = None) -> float | None:
    """A linear forecast over the last hours of free-space samples (least squares);
    None while there are too few samples or the disk is not filling."""
    now = time.time() if now is None else now
    samples = _DISK_SAMPLES.setdefault(name, deque(maxlen=720))
    samples.append((now, free))
    while samples and now - samples[0][0] > _DISK_WINDOW:
        samples.popleft()
    if len(samples) < 3:
        return None
    mean_t = sum(t for t, _ in samples) / len(samples)
    mean_f = sum(f for _, f in samples) / len(samples)
    spread = sum((t - mean_t) ** 2 for t, _ in samples)
    if spread == 0:
        return None
    slope = sum((t - mean_t) * (f - mean_f) for t, f in samples) / spread
    if slope >= 0:
        return None
    return free / -slope / 3600


def command_check(check: CommandCheck) -> Outcome:
    timeout = check.timeout.total_seconds()
    try:
        proc = subprocess.run(
            check.command,
            shell=check.shell,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Status.FAILED, f"timed out after {format_duration(timeout)}", {}
    except FileNotFoundError as exc:
        return Status.ERROR, f"command not found: {exc.filename}", {}
    output = (proc.stdout + proc.stderr).strip()
    details = CommandDetails(exit_code=proc.returncode, output=output[-2000:]).to_details()
    if proc.returncode != check.expect_exit:
        last = output.splitlines()[-1] if output else ""
        summary = f"exit code {proc.returncode}, expected {check.expect_exit}"
        return Status.FAILED, summary + (f": {last[:200]}" if last else ""), details
    if check.output_regex and not re.search(check.output_regex, output):
        return Status.FAILED, f"output does not match {check.output_regex!r}", details
    return Status.OK, f"exit code {proc.returncode}", details


def tcp_check(check: TcpCheck) -> Outcome:
    timeout = check.timeout.total_seconds()
    start = time.monotonic()
    try:
        with socket.create_connection((check.host, check.port), timeout=timeout) as sock:
            connect = time.monotonic() - start
            if check.send is not None:
                sock.sendall(check.send.encode())
            if check.expect_pattern is not None:
                answer = _read_until(sock, check.expect_pattern, timeout)
                if not check.expect_pattern.search(answer):
                    return (
                        Status.FAILED,
                        f"{check.host}:{check.port}: answer does not match {check.expect!r}",
                        TcpDetails(received=answer[:200]).to_details(),
                    )
    except OSError as exc:
        return Status.FAILED, f"{check.host}:{check.port}: {_oserror(exc)}", {}
    connected = TcpDetails(connect_seconds=connect).to_details()
    return Status.OK, f"{check.host}:{check.port} connected", connected


def http_check(check: HttpCheck) -> Outcome:
    timeout = check.timeout.total_seconds()
    context = ssl.create_default_context(cafile=str(check.ca_file) if check.ca_file else None)
    if not check.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    handlers: list[Any] = [urllib.request.HTTPSHandler(context=context)]
    if not check.follow_redirects:
        handlers.append(_NoRedirect())
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(check.url, method=check.method, headers=check.headers)
    start = time.monotonic()
    try:
        with opener.open(request, timeout=timeout) as response:
            status, body = response.status, response.read(1 << 20)
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read(1 << 20) if exc.fp else b""
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        text = _oserror(reason) if isinstance(reason, OSError) else str(reason)
        return Status.FAILED, f"{check.url}: {text}", {}
    latency = time.monotonic() - start
    days = (
        _certificate_days_left(check.url, context, timeout)
        if check.url.startswith("https://")
        else None
    )
    details = HttpDetails(
        status_code=status,
        latency_seconds=round(latency, 4),
        cert_days_left=round(days, 2) if days is not None else None,
    ).to_details()
    if days is not None and days < check.cert_min_days:
        return (
            Status.FAILED,
            f"{check.url}: certificate expires in {days:.1f} days, under {check.cert_min_days}",
            details,
        )
    if status not in check.expect_status:
        return Status.FAILED, f"{check.url}: HTTP {status}", details
    if check.body_regex and not re.search(check.body_regex, body.decode(errors="replace")):
        return Status.FAILED, f"{check.url}: body does not match {check.body_regex!r}", details
    if check.max_latency and latency > check.max_latency.total_seconds():
        return Status.FAILED, f"{check.url}: {latency:.2f}s, over {check.max_latency}", details
    return Status.OK, f"{check.url}: HTTP {status} in {latency * 1000:.0f}ms", details


def file_age_check(check: FileAgeCheck) -> Outcome:
    matches = glob.glob(check.glob, recursive=True)
    if not matches:
        return Status.FAILED, f"no file matches {check.glob}", {}
    newest = max(matches, key=os.path.getmtime)
    age = time.time() - os.path.getmtime(newest)
    details = FileAgeDetails(newest=newest, age_seconds=round(age, 1)).to_details()
    if age > check.max_age.total_seconds():
        return (
            Status.FAILED,
            f"newest file {newest} is {format_duration(age)} old,"
            f" over {format_duration(check.max_age)}",
            details,
        )
    return Status.OK, f"newest file is {format_duration(age)} old", details


def process_check(check: ProcessCheck) -> Outcome:
    matched = _matching_processes(check)
    count = len(matched)
    cpu = rss = 0.0
    for proc in matched:
        try:
            times = proc.cpu_times()
            cpu += times.user + times.system
            rss += proc.memory_info().rss
        except psutil.Error:
            continue
    details = ProcessDetails(
        count=count,
        pids=[p.pid for p in matched][:50],
        cpu_seconds=round(cpu, 2),
        rss_bytes=int(rss),
    ).to_details()
    if count < check.min_count:
        return (
            Status.FAILED,
            f"{count} process(es) running, expected at least {check.min_count}",
            details,
        )
    if check.max_count is not None and count > check.max_count:
        return (
            Status.FAILED,
            f"{count} process(es) running, expected at most {check.max_count}",
            details,
        )
    return Status.OK, f"{count} process(es) running", details


def postgres_check(check: PostgresCheck) -> Outcome:
    import psycopg

    password = resolve_secret(check.password, check.password_file)
    timeout = check.timeout.total_seconds()
    start = time.monotonic()
    try:
        with psycopg.connect(
            check.dsn, password=password, connect_timeout=max(1, int(timeout)), autocommit=True
        ) as conn:
            conn.execute(f"SET statement_timeout = {int(timeout * 1000)}")
            row = conn.execute(check.query).fetchone()
    except psycopg.Error as exc:
        return Status.FAILED, _db_problem(exc), {}
    return _compare(row, check.expect, time.monotonic() - start)


def mysql_check(check: MysqlCheck) -> Outcome:
    import pymysql

    password = resolve_secret(check.password, check.password_file)
    timeout = max(1, int(check.timeout.total_seconds()))
    kwargs: dict[str, Any] = {
        "host": check.host,
        "port": check.port,
        "user": check.user,
        "database": check.database,
        "connect_timeout": timeout,
        "read_timeout": timeout,
    }
    if password is not None:
        kwargs["password"] = password
    elif check.option_file is not None:
        kwargs["read_default_file"] = str(check.option_file)
    start = time.monotonic()
    try:
        with pymysql.connect(**kwargs) as conn, conn.cursor() as cur:
            cur.execute(check.query)
            row = cur.fetchone()
    except pymysql.Error as exc:
        code = exc.args[0] if exc.args else 0
        if code == 1045:
            return Status.FAILED, f'access denied for user "{check.user}"', {}
        if code in (2002, 2003):
            return Status.FAILED, f"cannot connect to {check.host}:{check.port}", {}
        return Status.FAILED, " ".join(str(exc).split())[:200], {}
    return _compare(row, check.expect, time.monotonic() - start)


def _compare(row: Any, expect: ValueBounds | None, seconds: float) -> Outcome:
    value = row[0] if row else None
    details = QueryDetails(
        value=value if isinstance(value, int | float | str) else str(value),
        query_seconds=round(seconds, 4),
    ).to_details()
    if expect is not None:
        if expect.equals is not None and str(value) != expect.equals:
            return Status.FAILED, f"query returned {value!r}, expected {expect.equals!r}", details
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            number = None
        if expect.min_value is not None and (number is None or number < expect.min_value):
            return Status.FAILED, f"query returned {value!r}, below {expect.min_value:g}", details
        if expect.max_value is not None and (number is None or number > expect.max_value):
            return Status.FAILED, f"query returned {value!r}, above {expect.max_value:g}", details
    return Status.OK, f"query returned {value!r} in {seconds * 1000:.0f}ms", details


def _db_problem(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if match := re.search(r'password authentication failed for user "([^"]+)"', text):
        return f'authentication failed for user "{match.group(1)}"'
    if "Connection refused" in text:
        return "connection refused"
    if "statement timeout" in text or "canceling statement" in text:
        return "query timed out"
    return text[:200]


def _matching_processes(check: ProcessCheck) -> list[psutil.Process]:
    if check.pidfile is not None:
        try:
            pid = int(check.pidfile.read_text().strip())
        except (OSError, ValueError):
            return []
        return [psutil.Process(pid)] if psutil.pid_exists(pid) else []
    pattern = re.compile(check.cmdline_regex) if check.cmdline_regex else None
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.pid == os.getpid():
            continue
        if pattern is not None:
            if pattern.search(" ".join(proc.info["cmdline"] or [])):
                found.append(proc)
        elif proc.info["name"] == check.process_name:
            found.append(proc)
    return found


def _certificate_days_left(url: str, context: ssl.SSLContext, timeout: float) -> float | None:
    """Days until the server certificate expires (None when it cannot be read)."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except OSError:
        return None
    if not der:
        return None
    from cryptography import x509

    expires = x509.load_der_x509_certificate(der).not_valid_after_utc
    return (expires.timestamp() - time.time()) / 86400


def _read_until(sock: socket.socket, pattern: re.Pattern[str], timeout: float) -> str:
    """What the server sends, decoded as UTF-8 (bad bytes replaced), until `pattern` is
    found in it, the server closes, 64 KiB or the timeout; a timeout before any byte
    is an error, after some a mismatch to report with what came."""
    deadline = time.monotonic() + timeout
    data = b""
    answer = ""
    while not pattern.search(answer) and len(data) < 65536 and time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            if not data:
                raise
            break
        if not chunk:
            break
        data += chunk
        answer = data.decode(errors="replace")
    return answer


def _oserror(exc: OSError) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    return exc.strerror or str(exc) or type(exc).__name__


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_BODIES: dict[str, Callable[[Any], Outcome]] = {
    "disk": disk_check,
    "command": command_check,
    "tcp": tcp_check,
    "http": http_check,
    "file_age": file_age_check,
    "process": process_check,
    "postgres": postgres_check,
    "mysql": mysql_check,
}
