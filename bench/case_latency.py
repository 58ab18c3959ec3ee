"""Benchmark: how fast a failure becomes a case, and a page, and how fast it resolves.

Starts `opsagent run` with one TCP check (interval 1 s, severity critical) against a
listener on loopback and a webhook notifier, then, `--rounds` times: closes the
listener and times until the case is open in the store and until the webhook has the
"opened" notification; reopens the listener and times until the case is resolved and
the "resolved" notification arrived. Prints min / median / max of each, in seconds.
The store is SQLite by default, or PostgreSQL with `--postgres DSN`.

    .venv/bin/python bench/case_latency.py [--rounds 5] [--postgres postgresql://...]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agents.cases.store import CaseStore  # noqa: E402
from tests.support.services import free_port, wait_for  # noqa: E402


class Hook:
    """Records when each (event, fingerprint) arrived."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, int], float] = {}
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hook.seen.setdefault((body["event"], body["case"]["id"]), time.monotonic())
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def listen(port: int) -> socket.socket:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--postgres", default=None, help="a PostgreSQL DSN for the store")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="case-latency-"))
    store_url = args.postgres or f"sqlite:///{work / 'cases.db'}"
    hook = Hook()
    app_port = free_port()
    config = work / "c.yml"
    config.write_text(
        f"""
state_dir: {work / "state"}
exporter: {{listen: "127.0.0.1:{free_port()}"}}
monitor:
  host_metrics: false
  checks:
    - {{name: app, kind: tcp, host: 127.0.0.1, port: {app_port}, interval: 1s,
        timeout: 1s, severity: critical}}
cases:
  store: "{store_url}"
  reopen_within: 0s
  notify: [{{kind: webhook, name: bench, url: "http://127.0.0.1:{hook.server.server_address[1]}/"}}]
"""
    )
    server = listen(app_port)
    agent = subprocess.Popen(
        [sys.executable, "-m", "agents", "run", "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store = CaseStore(store_url)
    rows: dict[str, list[float]] = {
        "case opened": [],
        "page sent": [],
        "case resolved": [],
        "resolve sent": [],
    }
    try:
        time.sleep(3)  # the agent is up and the check passes
        for _ in range(args.rounds):
            server.close()
            down = time.monotonic()
            wait_for("the case", lambda: store.cases("open"), timeout=60, proc=agent)
            rows["case opened"].append(time.monotonic() - down)
            opened = ("opened", store.cases("open")[0].id)
            resolved = ("resolved", opened[1])
            wait_for("the page", lambda k=opened: k in hook.seen, timeout=60)
            rows["page sent"].append(hook.seen[opened] - down)
            server = listen(app_port)
            up = time.monotonic()
            wait_for("the resolve", lambda: not store.cases("open"), timeout=60, proc=agent)
            rows["case resolved"].append(time.monotonic() - up)
            wait_for("its page", lambda k=resolved: k in hook.seen, timeout=60)
            rows["resolve sent"].append(hook.seen[resolved] - up)
            time.sleep(1.5)
    finally:
        server.close()
        agent.terminate()
        agent.wait(30)
        hook.server.shutdown()
    print(f"case latency, {args.rounds} rounds, store {store_url.split(':', 1)[0]}")
    print(f"{'step':<16}{'min s':>8}{'median s':>10}{'max s':>8}")
    for step, values in rows.items():
        print(f"{step:<16}{min(values):>8.2f}{statistics.median(values):>10.2f}{max(values):>8.2f}")


if __name__ == "__main__":
    main()
