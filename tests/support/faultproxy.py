"""A fault-injecting HTTP proxy on loopback, between the agent and the S3 server.

Each request is forwarded unless the fault plan picks it: `503` answers S3's
SlowDown error, `drop` closes the connection without a response, `reset` sends
half a response body then closes, `truncate` sends half the body with a matching
(lying) Content-Length, `latency` forwards after a delay, `stall` holds the request
past the client's read timeout and then closes. Faults are chosen by a seeded random
generator (`rate`, changeable while running) or forced for the next requests
(`forced`). A `refuse` rule answers one kind of request with 501 NotImplemented, like
stores that lack an operation.
Every request's method, path and headers are recorded, so tests can assert on
what the client sent.
"""

from __future__ import annotations

import contextlib
import http.client
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    fault: str | None


@dataclass
class FaultPlan:
    rate: float = 0.0
    kinds: tuple[str, ...] = ("503", "drop", "reset")
    seed: int = 1
    latency_seconds: float = 0.3
    stall_seconds: float = 3.0
    forced: list[str] = field(default_factory=list)
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def pick(self) -> str | None:
        if self.forced:
            return self.forced.pop(0)
        if self.rate and self.rng.random() < self.rate:
            return self.rng.choice(self.kinds)
        return None


class FaultProxy:
    def __init__(
        self,
        upstream_port: int,
        plan: FaultPlan | None = None,
        refuse: tuple[str, str] | None = None,
    ) -> None:
        self.upstream_port = upstream_port
        self.plan = plan or FaultPlan()
        # (method, query marker): answer such requests 501 NotImplemented, as stores
        # without DeleteObjects do
        self.refuse = refuse
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with proxy._lock:
                    fault = proxy.plan.pick()
                    proxy.requests.append(
                        Recorded(self.command, self.path, dict(self.headers.items()), fault)
                    )
                if (
                    proxy.refuse
                    and self.command == proxy.refuse[0]
                    and proxy.refuse[1] in self.path
                ):
                    body = (
                        b'<?xml version="1.0"?><Error><Code>NotImplemented</Code>'
                        b"<Message>not supported</Message></Error>"
                    )
                    self.send_response(501)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if fault == "503":
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(SLOW_DOWN)))
                    self.end_headers()
                    self.wfile.write(SLOW_DOWN)
                    return
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault == "stall":
                    time.sleep(proxy.plan.stall_seconds)
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault == "latency":
                    time.sleep(proxy.plan.latency_seconds)
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                upstream.close()
                if fault == "truncate" and len(data) > 1 and self.command == "GET":
                    data = data[: len(data) // 2]  # and a Content-Length that agrees
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if fault == "reset" and len(data) > 1:
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def faults(self) -> int:
        return sum(1 for r in self.requests if r.fault)
