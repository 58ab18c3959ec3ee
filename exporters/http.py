"""The exporter's HTTP server: `/metrics`, `/healthz` and `/-/ready` on a threaded WSGI server."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer, WSGIRequestHandler

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes are not log lines
        return


def exporter_app(
    registry: CollectorRegistry,
    ready: Callable[[], bool],
    routes: dict[str, WSGIApp] | None = None,
) -> WSGIApp:
    """Route the exporter's paths (plus `routes`, such as the Alertmanager intake)."""
    metrics = make_wsgi_app(registry)
    extra = routes or {}

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path in extra:
            return extra[path](environ, start_response)
        if path == "/metrics":
            return metrics(environ, start_response)
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok\n"]
        if path == "/-/ready":
            if ready():
                start_response("200 OK", [("Content-Type", "text/plain")])
                return [b"ready\n"]
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"starting\n"]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]

    return app


class _Server(ThreadingWSGIServer):
    # socketserver listens with a backlog of 5: a burst of scrapes overflowed it and the
    # dropped connections waited for TCP's 1 s and 3 s SYN retries (p99 4.5 s for 200)
    request_queue_size = 128


class _Server6(_Server):
    address_family = socket.AF_INET6


class ExporterServer:
    """A WSGI server on its own thread; `port` is the bound port (0 picks a free one).
    `host` is a name, an IPv4 address or an IPv6 address (without brackets)."""

    def __init__(
        self, host: str, port: int, app: WSGIApp, tls: ssl.SSLContext | None = None
    ) -> None:
        server_class = _Server6 if ":" in host else _Server
        self._server = make_server(
            host, port, app, server_class=server_class, handler_class=_QuietHandler
        )
        self._server.daemon_threads = True
        if tls is not None:
            # the handshake happens in each request's thread, never in the accept loop
            self._server.socket = tls.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="exporter", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> ExporterServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
