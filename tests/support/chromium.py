"""Debian's headless Chromium driven over the DevTools protocol on a pipe, for browser tests.

`--remote-debugging-pipe` makes Chromium read commands from fd 3 and write replies and
events to fd 4, NUL-separated JSON: no port, no websocket library, no browser download. The
client keeps every event so a test can assert there was no console error, no uncaught
exception and no request other than the page itself. Also a tiny PNG decoder (zlib only) so a
screenshot can be checked for content without Pillow.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import signal
import struct
import subprocess
import threading
import zlib
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
TIMEOUT = 90.0  # seconds per command: a loaded 2-core machine starts Chromium slowly


class BrowserError(Exception):
    """Chromium did not start, answer or stay alive."""


def available() -> bool:
    """Whether Debian's Chromium is installed here."""
    return Path(CHROMIUM).exists() and shutil.which(CHROMIUM) is not None


class Chromium:
    """One headless Chromium with its own profile; use as a context manager (always killed)."""

    def __init__(self, workdir: Path, timeout: float = TIMEOUT) -> None:
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self._replies: dict[int, dict[str, Any]] = {}
        self._next_id = 0
        self._done = threading.Condition()
        self._closed = False
        self._targets: dict[str, str] = {}
        commands_read, self._commands = _high_pipe()
        self._replies_fd, replies_write = _high_pipe()
        args = [
            CHROMIUM,
            "--headless",
            "--remote-debugging-pipe",
            "--disable-gpu",
            f"--user-data-dir={workdir / 'profile'}",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--mute-audio",
            "--window-size=800,1200",
        ]
        if os.geteuid() == 0:
            args.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
        self._log = open(workdir / "chromium.log", "wb")  # noqa: SIM115 (closed in close())

        def wire() -> None:
            os.dup2(commands_read, 3)
            os.dup2(replies_write, 4)

        self.process = subprocess.Popen(
            [*args, "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            close_fds=False,  # only the inheritable fds 3 and 4 (and 0-2) survive exec
            preexec_fn=wire,
            start_new_session=True,
        )
        os.close(commands_read)
        os.close(replies_write)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, method: str, params: dict[str, Any] | None = None, session: str = "") -> Any:
        """Run one command and return its result; BrowserError on an error reply or timeout."""
        with self._done:
            self._next_id += 1
            number = self._next_id
        message: dict[str, Any] = {"id": number, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        try:
            os.write(self._commands, json.dumps(message).encode() + b"\0")
        except OSError as exc:
            raise BrowserError(f"{method}: Chromium is gone ({exc}); see its log") from None
        with self._done:
            if not self._done.wait_for(
                lambda: number in self._replies or self._closed, self.timeout
            ):
                raise BrowserError(f"{method}: no answer from Chromium in {self.timeout:.0f}s")
            if number not in self._replies:
                raise BrowserError(f"{method}: Chromium closed the pipe")
            reply = self._replies.pop(number)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error'].get('message')}")
        return reply.get("result", {})

    def open_page(self, width: int = 800, height: int = 1200) -> str:
        """A new tab with console, log and network events on; returns its session id."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        self._targets[session] = target
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=session)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session,
        )
        return session

    def close_page(self, session: str) -> None:
        """Close a tab opened with open_page."""
        self.send("Target.closeTarget", {"targetId": self._targets.pop(session)})

    def navigate(self, session: str, url: str) -> None:
        """Open `url` and wait for its load event."""
        seen = self._count("Page.loadEventFired", session)
        self.send("Page.navigate", {"url": url}, session)
        with self._done:
            if not self._done.wait_for(
                lambda: self._count("Page.loadEventFired", session, locked=True) > seen,
                self.timeout,
            ):
                raise BrowserError(f"{url} did not finish loading in {self.timeout:.0f}s")

    def evaluate(self, session: str, expression: str) -> Any:
        """The value of a JavaScript expression in the page (returned by value)."""
        result = self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}, session
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"evaluate failed: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def color_scheme(self, session: str, scheme: str, media: str = "") -> None:
        """Emulate `prefers-color-scheme` (light/dark) and optionally the print medium."""
        self.send(
            "Emulation.setEmulatedMedia",
            {"media": media, "features": [{"name": "prefers-color-scheme", "value": scheme}]},
            session,
        )

    def screenshot(self, session: str, scale: float = 1.0, full: bool = False) -> bytes:
        """A PNG of the viewport (or the whole page), optionally scaled down."""
        metrics = self.send("Page.getLayoutMetrics", session=session)["cssContentSize"]
        height = metrics["height"] if full else min(metrics["height"], 1200)
        clip = {"x": 0, "y": 0, "width": 800, "height": height, "scale": scale}
        data = self.send(
            "Page.captureScreenshot",
            {"format": "png", "clip": clip, "captureBeyondViewport": full},
            session,
        )["data"]
        return base64.b64decode(data)

    def pdf(self, session: str, width_in: float, height_in: float) -> bytes:
        """The page printed to PDF on paper of this size (inches), backgrounds included."""
        data = self.send(
            "Page.printToPDF",
            {"paperWidth": width_in, "paperHeight": height_in, "printBackground": True},
            session,
        )["data"]
        return base64.b64decode(data)

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries seen so far."""
        found = []
        with self._done:
            events = list(self.events)
        for event in events:
            params = event.get("params", {})
            if event["method"] == "Runtime.consoleAPICalled" and params.get("type") in (
                "error",
                "assert",
            ):
                found.append("console: " + json.dumps(params.get("args"))[:300])
            elif event["method"] == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                thrown = details.get("exception", {}).get("description") or details.get("text")
                found.append(f"exception: {thrown}")
            elif event["method"] == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(f"log: {params['entry'].get('text')} {params['entry'].get('url')}")
        return found

    def requests(self) -> list[str]:
        """Every URL the pages asked for."""
        with self._done:
            return [
                e["params"]["request"]["url"]
                for e in self.events
                if e["method"] == "Network.requestWillBeSent"
            ]

    def close(self) -> None:
        """Ask Chromium to quit, then kill its process group whatever it says."""
        try:
            if self.process.poll() is None and not self._closed:
                self.timeout = 10.0
                self.send("Browser.close")
        except BrowserError:
            pass
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=15)
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        os.close(self._commands)
        self._reader.join(timeout=10)
        self._log.close()

    def _count(self, method: str, session: str, locked: bool = False) -> int:
        if not locked:
            with self._done:
                return self._count(method, session, True)
        return sum(e["method"] == method and e.get("sessionId") == session for e in self.events)

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._replies_fd, 1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            with self._done:
                for raw in messages:
                    message = json.loads(raw)
                    if "id" in message:
                        self._replies[message["id"]] = message
                    else:
                        self.events.append(message)
                self._done.notify_all()
        os.close(self._replies_fd)
        with self._done:
            self._closed = True
            self._done.notify_all()


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit RGB/RGBA PNG: width, height and its rows of raw pixel bytes."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        if zlib.crc32(kind + body) != crc:
            raise ValueError(f"bad CRC in {kind!r}")
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    if depth != 8 or colour not in (2, 6) or header[12] != 0:
        raise ValueError(f"unsupported PNG: depth {depth}, colour type {colour}, interlaced")
    size = 4 if colour == 6 else 3
    raw = zlib.decompress(idat)
    stride = width * size
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - size] if i >= size else 0
            up = previous[i]
            corner = previous[i - size] if i >= size else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line))
        previous = line
    return width, height, rows


def colours(data: bytes) -> dict[tuple[int, ...], int]:
    """How many pixels of each colour a PNG has."""
    width, _, rows = png_pixels(data)
    size = len(rows[0]) // width if rows else 3
    counts: dict[tuple[int, ...], int] = {}
    for row in rows:
        for x in range(0, len(row), size):
            pixel = tuple(row[x : x + 3])
            counts[pixel] = counts.get(pixel, 0) + 1
    return counts


def _high_pipe() -> tuple[int, int]:
    """A pipe whose ends are above fd 10, so moving them to 3 and 4 never clobbers one."""
    read, write = os.pipe()
    high_read = fcntl.fcntl(read, fcntl.F_DUPFD_CLOEXEC, 10)
    high_write = fcntl.fcntl(write, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(read)
    os.close(write)
    return high_read, high_write
