"""The exporter as run: TLS and basic auth from a web-config.yml, a real Prometheus scrape."""

from __future__ import annotations

import base64
import datetime as dt
import signal
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support import services


def self_signed(directory: Path, days: float = 1) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def get(url: str, context: ssl.SSLContext, auth: tuple[str, str] | None) -> int:
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_tls_and_basic_auth(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    hashed = bcrypt.hashpw(b"scrape-secret", bcrypt.gensalt(rounds=10)).decode()
    web = tmp_path / "web-config.yml"
    web.write_text(
        f"tls_server_config: {{cert_file: {cert}, key_file: {key}}}\n"
        f"basic_auth_users: {{prometheus: '{hashed}'}}\n"
    )
    port = services.free_port()
    config = tmp_path / "c.yml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        f"exporter: {{listen: '127.0.0.1:{port}', web_config_file: {web}}}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "agents", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    context = ssl.create_default_context(cafile=str(cert))
    url = f"https://127.0.0.1:{port}"
    try:
        services.wait_for("https", lambda: get(f"{url}/healthz", context, None) == 200, proc=proc)
        assert get(f"{url}/metrics", context, None) == 401
        assert get(f"{url}/metrics", context, ("prometheus", "wrong")) == 401
        assert get(f"{url}/metrics", context, ("nobody", "scrape-secret")) == 401
        assert get(f"{url}/metrics", context, ("prometheus", "scrape-secret")) == 200
        untrusted = ssl.create_default_context()
        try:
            get(f"{url}/metrics", untrusted, ("prometheus", "scrape-secret"))
            raise AssertionError("an untrusted certificate was accepted")
        except urllib.error.URLError as exc:
            assert "CERTIFICATE_VERIFY_FAILED" in str(exc.reason)
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
            raise AssertionError("plain HTTP was served")
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        assert get(f"{url}/metrics", context, ("prometheus", "scrape-secret")) == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "scrape-secret" not in err


def test_client_certificates_required(tmp_path: Path) -> None:
    """client_auth_type RequireAndVerifyClientCert: no certificate, or one from another
    CA, is refused at the handshake; /metrics and /status answer with the right one."""
    server_dir, client_dir, other_dir = (tmp_path / n for n in ("server", "client", "other"))
    for d in (server_dir, client_dir, other_dir):
        d.mkdir()
    cert, key = self_signed(server_dir)
    client_cert, client_key = self_signed(client_dir)
    other_cert, other_key = self_signed(other_dir)
    web = tmp_path / "web-config.yml"
    web.write_text(
        f"tls_server_config: {{cert_file: {cert}, key_file: {key}, client_ca_file: {client_cert},"
        " client_auth_type: RequireAndVerifyClientCert}\n"
    )
    port = services.free_port()
    config = tmp_path / "c.yml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        f"exporter: {{listen: '127.0.0.1:{port}', web_config_file: {web}}}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "agents", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"https://127.0.0.1:{port}"

    def context(pair: tuple[Path, Path] | None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(cert))
        if pair:
            ctx.load_cert_chain(str(pair[0]), str(pair[1]))
        return ctx

    def refused(ctx: ssl.SSLContext) -> bool:
        try:
            get(f"{url}/metrics", ctx, None)
        except (urllib.error.URLError, ssl.SSLError, ConnectionError):
            return True
        return False

    try:
        services.wait_for(
            "mTLS",
            lambda: get(f"{url}/healthz", context((client_cert, client_key)), None) == 200,
            proc=proc,
        )
        assert get(f"{url}/metrics", context((client_cert, client_key)), None) == 200
        assert get(f"{url}/status", context((client_cert, client_key)), None) == 200
        assert refused(context(None)), "no client certificate was accepted"
        assert refused(context((other_cert, other_key))), "a foreign certificate was accepted"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err


def test_real_prometheus_scrapes_the_agent_and_200_concurrent_scrapes(tmp_path: Path) -> None:
    import json
    import urllib.parse
    from concurrent.futures import ThreadPoolExecutor

    port = services.free_port()
    config = tmp_path / "c.yml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\nexporter: {{listen: '127.0.0.1:{port}'}}\n"
        "monitor: {checks: [{name: root, kind: disk, path: /, interval: 1s}]}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "agents", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    metrics = f"http://127.0.0.1:{port}/metrics"
    prom = None
    try:
        services.wait_for("agent", lambda: urllib.request.urlopen(metrics, timeout=1), proc=proc)
        prom = services.start_prometheus(
            tmp_path / "prom",
            "global: {scrape_interval: 1s}\nscrape_configs:\n"
            f"  - job_name: opsagent\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n",
        )

        def query(expr: str) -> list[dict]:
            url = f"{prom.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
            return json.load(urllib.request.urlopen(url, timeout=5))["data"]["result"]

        services.wait_for("up == 1", lambda: query('up{job="opsagent"} == 1'), timeout=30)
        services.wait_for(
            "a host metric", lambda: query("opsagent_memory_total_bytes > 0"), timeout=30
        )
        assert query('opsagent_check_up{check="root"}')[0]["value"][1] == "1"

        def scrape(_: int) -> int:
            with urllib.request.urlopen(metrics, timeout=30) as response:
                body = response.read()
                return response.status if b"opsagent_cpu_seconds_total" in body else 0

        with ThreadPoolExecutor(50) as pool:
            statuses = list(pool.map(scrape, range(200)))
        assert statuses == [200] * 200
    finally:
        if prom is not None:
            prom.process.stop()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)


def refusal(tmp_path: Path, exporter: str) -> str:
    """Start the agent with this exporter config; it must exit 3: its last stderr line."""
    config = tmp_path / "c.yml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\nexporter: {exporter}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "agents", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stderr.strip().splitlines()[-1]


def test_refuses_an_open_intake_beyond_loopback(tmp_path: Path) -> None:
    port = services.free_port()
    assert refusal(tmp_path, f"{{listen: '0.0.0.0:{port}'}}") == (
        f"opsagent: exporter listens on 0.0.0.0:{port}, beyond loopback, without TLS and basic"
        " auth: anyone could open cases through the Alertmanager intake; set"
        " tls_server_config and basic_auth_users in exporter.web_config_file, or listen on"
        " 127.0.0.1"
    )


def test_refuses_basic_auth_over_plain_http_beyond_loopback(tmp_path: Path) -> None:
    """Basic auth without TLS would send the password in clear: refused unless the config
    says exporter.allow_plain_http."""
    hashed = bcrypt.hashpw(b"scrape-secret", bcrypt.gensalt(rounds=4)).decode()
    web = tmp_path / "web-config.yml"
    web.write_text(f"basic_auth_users: {{prometheus: '{hashed}'}}\n")
    port = services.free_port()
    assert refusal(tmp_path, f"{{listen: '0.0.0.0:{port}', web_config_file: {web}}}") == (
        f"opsagent: exporter listens on 0.0.0.0:{port}, beyond loopback, without TLS: the basic"
        " auth password would cross the network in clear; set tls_server_config in"
        " exporter.web_config_file, or exporter.allow_plain_http: true to accept that"
    )


def test_serves_on_ipv6_loopback(tmp_path: Path) -> None:
    """[::1] is loopback: no TLS or auth needed, and the exporter answers there."""
    with socket.socket(socket.AF_INET6) as probe:
        probe.bind(("::1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "c.yml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\nexporter: {{listen: '[::1]:{port}'}}\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "agents", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://[::1]:{port}"
    try:
        services.wait_for(
            "the exporter on [::1]",
            lambda: urllib.request.urlopen(f"{url}/healthz", timeout=1).status == 200,
            proc=proc,
        )
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
            assert b"opsagent_process_" in response.read()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert f"http://[::1]:{port}/metrics" in err
