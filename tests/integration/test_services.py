"""Each service fixture proves its server really answers."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import paramiko
import psycopg
import pytest

from tests.support import services


def test_s3_bucket_round_trip(s3_server: services.S3Server, s3_bucket: str) -> None:
    client = s3_server.client()
    client.put_object(Bucket=s3_bucket, Key="a/b", Body=b"hello")
    assert client.get_object(Bucket=s3_bucket, Key="a/b")["Body"].read() == b"hello"
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert keys == ["a/b"]


def test_sshd_runs_a_command_with_verified_host_key(sshd: services.SshServer) -> None:
    client = paramiko.SSHClient()
    client.load_host_keys(str(sshd.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        "127.0.0.1",
        port=sshd.port,
        username=sshd.user,
        key_filename=str(sshd.client_key),
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    try:
        _, stdout, _ = client.exec_command("echo ok", timeout=10)
        assert stdout.read().strip() == b"ok"
    finally:
        client.close()


def test_sshd_unknown_host_key_is_rejected(sshd: services.SshServer, tmp_path: Path) -> None:
    client = paramiko.SSHClient()
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    client.load_host_keys(str(empty))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        client.connect(
            "127.0.0.1",
            port=sshd.port,
            username=sshd.user,
            key_filename=str(sshd.client_key),
            look_for_keys=False,
            allow_agent=False,
            timeout=10,
        )
    client.close()


def _query(prom: services.PrometheusServer, expr: str) -> list[dict]:
    url = f"{prom.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "success"
    return body["data"]["result"]


def test_prometheus_scrapes_itself(prometheus: services.PrometheusServer) -> None:
    deadline = time.monotonic() + 30
    result: list[dict] = []
    while time.monotonic() < deadline and not result:
        result = _query(prometheus, 'up{job="self"}')
        time.sleep(0.5)
    assert result, "no up series within 30s"
    assert result[0]["value"][1] == "1"


class _Collector(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


def test_alertmanager_delivers_to_a_loopback_webhook(tmp_path: Path) -> None:
    _Collector.received = []
    hook = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{hook.server_address[1]}/hook"
    config = f"""
route: {{receiver: hook, group_wait: 0s, group_interval: 1s, repeat_interval: 1h}}
receivers:
  - name: hook
    webhook_configs: [{{url: "{url}", send_resolved: true}}]
"""
    am = services.start_alertmanager(tmp_path / "am", config)
    try:
        now = datetime.now(UTC)
        alert = [
            {
                "labels": {"alertname": "OpsagentTest", "severity": "critical"},
                "annotations": {"summary": "fixture proof"},
                "startsAt": now.isoformat(),
                "endsAt": (now + timedelta(minutes=5)).isoformat(),
            }
        ]
        request = urllib.request.Request(
            f"{am.url}/api/v2/alerts",
            data=json.dumps(alert).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        urllib.request.urlopen(request, timeout=5).read()
        services.wait_for("webhook delivery", lambda: bool(_Collector.received), timeout=20)
    finally:
        am.process.stop()
        hook.shutdown()
    body = _Collector.received[0]
    assert body["version"] == "4"
    assert body["status"] == "firing"
    assert body["alerts"][0]["labels"]["alertname"] == "OpsagentTest"


def test_postgres_throwaway_database(pg_database: services.Database) -> None:
    with psycopg.connect(pg_database.dsn, autocommit=True) as conn:
        conn.execute("create table t (id int)")
        conn.execute("insert into t values (1), (2)")
        assert conn.execute("select count(*) from t").fetchone() == (2,)
        assert conn.execute("select current_database()").fetchone() == (pg_database.name,)


def test_mysql_throwaway_database(mysql_database: services.Database) -> None:
    with services.mysql_connect(mysql_database.name) as conn, conn.cursor() as cur:
        cur.execute("create table t (id int)")
        cur.execute("insert into t values (1), (2), (3)")
        cur.execute("select count(*) from t")
        assert cur.fetchone() == (3,)
