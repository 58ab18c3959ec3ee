"""Secrets never leak: with known secret values in every secret slot (repository password,
S3 keys, a PostgreSQL password over scram, a webhook HMAC secret, a Slack URL), every
command runs, the daemon runs with a failing check that opens a case and notifies, and
none of the values appears in any output, log line, --json document, error, metric,
status document, state or case database, audit record, or notification body."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.support import services
from tests.support.services import S3Server, free_port, wait_for

REPO_PASSWORD = "LEAK-repo-password-7f3a"
S3_KEY_ID = "LEAKAKIA7F3A0000"
S3_SECRET = "LEAK-s3-secret-7f3a"
PG_PASSWORD = "LEAK-pg-password-7f3a"
HMAC_SECRET = "LEAK-hmac-secret-7f3a"
SLACK_TOKEN = "LEAK-slack-token-7f3a"
SECRETS = [REPO_PASSWORD, S3_KEY_ID, S3_SECRET, PG_PASSWORD, HMAC_SECRET, SLACK_TOKEN]


def _secret_file(path: Path, value: str) -> Path:
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


def test_no_secret_appears_anywhere(tmp_path: Path, s3_server: S3Server, s3_bucket: str) -> None:
    received: list[bytes] = []

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(
                self.path.encode() + b" " + self.rfile.read(int(self.headers["Content-Length"]))
            )
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    sink = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    sink_url = f"http://127.0.0.1:{sink.server_address[1]}"
    cluster = services.start_password_cluster(PG_PASSWORD)
    data = tmp_path / "data"
    data.mkdir()
    (data / "doc.txt").write_text("content\n" * 100)
    port = free_port()
    hook = _secret_file(tmp_path / "hook.secret", HMAC_SECRET)
    slack = _secret_file(tmp_path / "slack.url", f"{sink_url}/slack/{SLACK_TOKEN}")
    config = tmp_path / "config.yml"
    config.write_text(
        f"""
host: leak-host
state_dir: {tmp_path / "state"}
exporter: {{listen: "127.0.0.1:{port}"}}
monitor:
  checks:
    - name: pg
      kind: postgres
      dsn: {cluster.dsn}
      password_file: {_secret_file(tmp_path / "pg.pass", PG_PASSWORD)}
      interval: 2s
    - name: pg-wrong
      kind: postgres
      dsn: {cluster.dsn}
      password: "${{LEAK_WRONG_PG}}"
      interval: 1s
      severity: critical
      failures_before_alert: 1
backup:
  repository: s3://{s3_bucket}/leak
  s3:
    endpoint_url: {s3_server.endpoint_url}
    access_key_id_file: {_secret_file(tmp_path / "s3.id", S3_KEY_ID)}
    secret_access_key: "${{LEAK_S3_SECRET}}"
  password_file: {_secret_file(tmp_path / "repo.key", REPO_PASSWORD)}
  schedule: {{every: 1h}}
  sources:
    - {{name: docs, kind: files, paths: ["{data}"]}}
    - name: db
      kind: postgres
      dsn: {cluster.dsn}
      password_file: {tmp_path / "pg.pass"}
restore_test:
  schedule: null
  sandbox:
    kind: local
    root: {tmp_path / "sandbox"}
    postgres_dsn: {cluster.dsn}
    postgres_password_file: {tmp_path / "pg.pass"}
cases:
  notify:
    - {{kind: webhook, url: "{sink_url}/hook", secret_file: {hook}, severities: [critical]}}
    - {{kind: slack, webhook_url_file: {slack}, severities: [critical]}}
"""
    )
    env = {
        **os.environ,
        "LEAK_S3_SECRET": S3_SECRET,
        # a wrong password that contains a real one: an error echoing it would leak it
        "LEAK_WRONG_PG": PG_PASSWORD + "-but-wrong",
    }
    seen: list[str] = []

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "agents",
                "--log-level",
                "debug",
                *args,
                "--config",
                str(config),
            ],
            capture_output=True,
            text=True,
            timeout=180,
            env=env,
        )
        seen.extend([f"$ {' '.join(args)}", out.stdout, out.stderr])
        return out

    try:
        assert run("backup", "init").returncode == 0, seen[-1]
        for args in (
            ("config", "check"),
            ("config", "check", "--json"),
            ("backup", "run", "--json"),
            ("backup", "run"),
            ("backup", "snapshots", "--json"),
            ("backup", "show", "latest", "--json"),
            ("backup", "check", "--read-data", "--json"),
            ("backup", "key", "list", "--json"),
            ("restore-test", "run", "--json"),
            ("restore-test", "history", "--json"),
            ("restore", "latest", "--source", "docs", "--to", str(tmp_path / "restored"), "--json"),
            ("monitor", "checks", "--json"),
            ("monitor", "metrics"),
            ("status", "--json"),
            ("audit", "--json"),
        ):
            run(*args)
        agent = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agents",
                "--log-format",
                "json",
                "--log-level",
                "debug",
                "run",
                "--config",
                str(config),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            wait_for(
                "the failing check's notifications",
                lambda: len(received) >= 2,
                timeout=60,
                proc=agent,
            )
            seen.append(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode())
            seen.append(urllib.request.urlopen(f"http://127.0.0.1:{port}/status").read().decode())
        finally:
            agent.terminate()
            out, err = agent.communicate(timeout=60)
            seen += [out, err]
        run("cases", "list", "--json")
        for case in json.loads(seen[-2]):
            run("cases", "show", str(case["id"]), "--json")
        for db in (tmp_path / "state").glob("*.db"):
            connection = sqlite3.connect(db)
            for (table,) in connection.execute("SELECT name FROM sqlite_master WHERE type='table'"):
                seen.append(repr(connection.execute(f"SELECT * FROM {table}").fetchall()))
            connection.close()
    finally:
        cluster.stop()
        sink.shutdown()
    notifications = b"\n".join(received).decode()
    assert "/slack/" in notifications and "/hook" in notifications  # they were delivered
    # the Slack URL is the destination (the path), never part of a body
    bodies = "\n".join(n.split(" ", 1)[1] for n in notifications.splitlines() if " " in n)
    everything = "\n".join(seen) + "\n" + bodies
    assert "pg-wrong" in everything and "backed up" in everything  # the runs really happened
    for secret in SECRETS:
        assert secret not in everything, f"{secret} leaked"
