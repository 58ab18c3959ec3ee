"""Parsing and formatting of the human units used in configuration (durations, sizes), and
of long lists in one line.

Kept apart from `config.py` so that CLI options (`--since 30d`, `--read-data-subset`)
and the config loader read units the same way.
"""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_DURATION_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]i?B|B)?\s*$", re.IGNORECASE)
_SIZE_FACTOR = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "pb": 10**15,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
    "pib": 2**50,
}


MAX_DURATION_SECONDS = 100 * 366 * 86400


def parse_duration(value: str | int | float | timedelta) -> timedelta:
    """Read `15s`, `5m`, `26h`, `7d`, `2w`, `1h30m`, `250ms` or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 15s, 5m, 26h or 7d, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"must not be negative, got {value}")
        if value > MAX_DURATION_SECONDS:
            raise ValueError(f"longer than 100 years, got {value}")
        return timedelta(seconds=value)
    text = str(value).strip().lower()
    if not text or _DURATION_PART.sub("", text) != "":
        raise ValueError(f"expected a duration like 15s, 5m, 26h or 7d, got {value!r}")
    seconds = sum(float(n) * _DURATION_SECONDS[u] for n, u in _DURATION_PART.findall(text))
    if seconds > MAX_DURATION_SECONDS:  # beyond what a date can be moved by: one line, not
        raise ValueError(f"longer than 100 years, got {value!r}")  # an OverflowError
    return timedelta(seconds=seconds)


def format_duration(value: timedelta | float) -> str:
    """Render a duration the way people write it in the config (`1d2h`, `15s`, `250ms`)."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds < 1:
        return f"{round(seconds * 1000)}ms" if seconds else "0s"
    if seconds < 60 and seconds != int(seconds):
        return f"{seconds:.1f}s"
    parts = []
    rest = round(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts) or "0s"


def parse_size(value: str | int | float) -> int:
    """Read a byte size: `16MiB`, `20GiB`, `10MB`, `512` (bytes)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size like 16MiB or 20GiB, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"must not be negative, got {value}")
        return int(value)
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"expected a size like 16MiB or 20GiB, got {value!r}")
    number, unit = match.groups()
    return int(float(number) * _SIZE_FACTOR[(unit or "b").lower()])


def format_size(value: float) -> str:
    """Render bytes with binary units (`1.5 GiB`)."""
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def few(items: list[str], count: int = 5) -> str:
    """The first `count` items joined, and how many more there are: long lists in one line."""
    shown = ", ".join(items[:count])
    return shown + (f" and {len(items) - count} more" if len(items) > count else "")


def printable(text: str | None) -> str:
    """Case text as a terminal may show it: control characters (escape sequences, carriage
    returns) and bidirectional overrides as \\xNN / \\uNNNN, so a title or host from
    the intake cannot rewrite the screen."""
    if not text:
        return ""
    out = []
    for c in text:
        code = ord(c)
        if code < 0x20 or 0x7F <= code < 0xA0:
            out.append(f"\\x{code:02x}")
        elif c in BIDI_CONTROLS:
            out.append(f"\\u{code:04x}")
        else:
            out.append(c)
    return "".join(out)


# bidirectional overrides and invisible characters: they make text read other than it is
BIDI_CONTROLS = frozenset(
    "\u061c\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
    "\u2060\u2066\u2067\u2068\u2069\ufeff"
)
