"""Small chart primitives that return inline SVG: a line/points chart with target lines and a
grouped bar chart.

Pure and deterministic (the same input gives the same bytes, coordinates rounded to 0.1), so a
signed report's HTML can be rendered again and compared byte for byte. Colours come from CSS
classes (`s0`..`s7`, `axis`, `grid`, `target`, `miss`) so one chart reads in light and dark
mode and in print. Every chart is an image for assistive technology: `role="img"`, an
`aria-label`, a `<title>` and a `<desc>` that states the figures in words.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from agents.units import printable

WIDTH = 720
PLOT_HEIGHT = 220
LEFT = 66
RIGHT = 18
BOTTOM = 40
LEGEND_ROW = 20
COLOURS = 8
MAX_DOTS = 40  # a longer line is drawn without a marker on every point (missed ones keep a ring)
SHAPES = ("circle", "square", "triangle", "diamond")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DAY = 86400.0
_MONDAY = 4 * _DAY  # 1970-01-01 was a Thursday: weekly ticks fall on Mondays
_FIRST = datetime(2, 1, 1, tzinfo=UTC).timestamp()
_LAST = datetime(9998, 1, 1, tzinfo=UTC).timestamp()


@dataclass(frozen=True)
class Point:
    """One observation: x (a number, epoch seconds on a time axis), y (None: unknown, not
    drawn), and whether it missed its target (drawn with a ring)."""

    x: float
    y: float | None
    missed: bool = False


@dataclass(frozen=True)
class Series:
    """A named run of points; `line` joins consecutive known points."""

    name: str
    points: tuple[Point, ...]
    line: bool = True


@dataclass(frozen=True)
class Target:
    """A horizontal target line; `series` colours it like that series (None: neutral)."""

    value: float
    label: str
    series: int | None = None


@dataclass(frozen=True)
class Bars:
    """One series of a grouped bar chart: a value per category."""

    name: str
    values: tuple[float | None, ...]


@dataclass(frozen=True)
class Axis:
    """How the value axis reads: its formatter, log scale, fixed bounds, candidate ticks."""

    format: Callable[[float], str]
    log: bool = False
    low: float | None = None
    high: float | None = None
    ticks: Sequence[float] = field(default_factory=tuple)


def line_chart(
    chart_id: str,
    title: str,
    desc: str,
    series: Sequence[Series],
    axis: Axis,
    targets: Sequence[Target] = (),
    x_label: str = "",
) -> str:
    """A time chart of points (joined or not) against horizontal target lines."""
    known = [p for s in series for p in s.points if _finite(p.x) and _finite(p.y)]
    legend = [(i, s.name) for i, s in enumerate(series)]
    extra = [("miss", "missed target")] if any(p.missed for p in known) else []
    top, legend_svg = _legend(legend, extra)
    height = top + PLOT_HEIGHT + BOTTOM
    parts = [_open(chart_id, title, desc, height), legend_svg]
    if not known:
        parts.append(_no_data(top))
        parts.append("</svg>")
        return "".join(parts)

    xs = [p.x for p in known]
    x_lo, x_hi = min(xs), max(xs)
    if x_hi - x_lo < 1:
        x_lo, x_hi = x_lo - _DAY, x_hi + _DAY
    values = [p.y for p in known if p.y is not None]
    values += [t.value for t in targets if _finite(t.value)]
    scale = _value_scale(values, axis, top)

    def x_at(x: float) -> float:
        return LEFT + (x - x_lo) / (x_hi - x_lo) * (WIDTH - LEFT - RIGHT)

    parts.append(_y_axis(scale, axis.format, top))
    parts.append(_x_axis([(x_at(x), label) for x, label in time_ticks(x_lo, x_hi)], top))
    if x_label:
        parts.append(
            f'<text class="axis-label" x="{WIDTH - RIGHT}" y="{top + PLOT_HEIGHT + 34}" '
            f'text-anchor="end">{_esc(x_label)}</text>'
        )
    for target in targets:
        if not _finite(target.value):
            continue
        y = scale(target.value)
        colour = f" s{target.series % COLOURS}" if target.series is not None else ""
        parts.append(
            f'<line class="target{colour}" x1="{LEFT}" x2="{WIDTH - RIGHT}" '
            f'y1="{_n(y)}" y2="{_n(y)}"/>'
            f'<text class="target-label{colour}" x="{WIDTH - RIGHT - 4}" y="{_n(y - 4)}" '
            f'text-anchor="end">{_esc(target.label)}</text>'
        )
    for index, one in enumerate(series):
        drawn = [p for p in one.points if _finite(p.x) and _finite(p.y)]
        css = f"s{index % COLOURS}"
        if one.line:
            for run in _runs(one.points):
                if len(run) > 1:
                    path = " ".join(f"{_n(x_at(p.x))},{_n(scale(p.y))}" for p in run)  # type: ignore[arg-type]
                    parts.append(f'<polyline class="series {css}" points="{path}"/>')
        shape = _shape(index)
        dots = not one.line or len(drawn) <= MAX_DOTS
        for p in drawn:
            cx, cy = x_at(p.x), scale(p.y)  # type: ignore[arg-type]
            if dots:
                parts.append(_marker(shape, cx, cy, css))
            if p.missed:
                parts.append(f'<circle class="miss" cx="{_n(cx)}" cy="{_n(cy)}" r="6.5"/>')
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(
    chart_id: str,
    title: str,
    desc: str,
    categories: Sequence[str],
    bars: Sequence[Bars],
    axis: Axis,
) -> str:
    """Bars grouped per category (a week), one colour per series, values written on top."""
    top, legend_svg = _legend([(i, b.name) for i, b in enumerate(bars)], [])
    height = top + PLOT_HEIGHT + BOTTOM
    parts = [_open(chart_id, title, desc, height), legend_svg]
    values = [v for b in bars for v in b.values if _finite(v)]
    if not categories or not values:
        parts.append(_no_data(top))
        parts.append("</svg>")
        return "".join(parts)
    scale = _value_scale([0.0, *values], axis, top)
    parts.append(_y_axis(scale, axis.format, top))
    plot = WIDTH - LEFT - RIGHT
    group = plot / len(categories)
    bar = group * 0.8 / max(len(bars), 1)
    widest = 6.6 * max(len(name) for name in categories) + 10  # labels must not overlap
    every = max(1, math.ceil(widest / group))
    labels = [
        (LEFT + group * (i + 0.5), name)
        for i, name in enumerate(categories)
        if i % every == 0 or i == len(categories) - 1
    ]
    parts.append(_x_axis(labels, top))
    write_values = len(categories) * len(bars) <= 40
    base = scale(0.0)
    for b_index, one in enumerate(bars):
        css = f"s{b_index % COLOURS}"
        for c_index in range(len(categories)):
            value = one.values[c_index] if c_index < len(one.values) else None
            if not _finite(value):
                continue
            x = LEFT + group * c_index + group * 0.1 + bar * b_index
            y = scale(value)  # type: ignore[arg-type]
            parts.append(
                f'<rect class="bar {css}" x="{_n(x)}" y="{_n(min(y, base))}" '
                f'width="{_n(max(bar - 1, 1))}" height="{_n(abs(base - y))}"/>'
            )
            if write_values:
                parts.append(
                    f'<text class="value" x="{_n(x + bar / 2)}" y="{_n(min(y, base) - 3)}" '
                    f'text-anchor="middle">{_esc(axis.format(value))}</text>'  # type: ignore[arg-type]
                )
    parts.append("</svg>")
    return "".join(parts)


def time_ticks(low: float, high: float) -> list[tuple[float, str]]:
    """Up to 8 ticks on a UTC time axis, on round hours, days, Mondays or month starts."""
    low, high = max(low, _FIRST), min(high, _LAST)  # a date must stay a date after padding
    span = max(high - low, 1.0)
    for step in (3600, 6 * 3600, _DAY, 2 * _DAY, 7 * _DAY, 14 * _DAY):
        if span / step <= 7:
            anchor = _MONDAY if step >= 7 * _DAY else 0.0
            first = math.ceil((low - anchor) / step) * step + anchor
            ticks = []
            tick = first
            while tick <= high:
                ticks.append((tick, _time_label(tick, step)))
                tick += step
            return ticks
    months = _month_starts(low, high)
    every = max(1, math.ceil(len(months) / 7))
    return [(t, _time_label(t, 30 * _DAY)) for t in months[::every]]


def _value_scale(values: list[float], axis: Axis, top: float) -> _Scale:
    """Map values to y pixels: linear from nice bounds, or log10 between the data's decades."""
    if axis.log:
        positive = [v for v in values if v > 0] or [1.0]
        low = axis.low if axis.low is not None else min(positive) / 1.6
        high = axis.high if axis.high is not None else max(positive) * 1.6
        low = max(low, 1e-9)
        if high <= low:
            high = low * 10
        ticks = [t for t in axis.ticks if low <= t <= high]
        if len(ticks) > 7:
            ticks = ticks[:: math.ceil(len(ticks) / 7)]
        return _Scale(top, low, high, True, ticks or [low, high])
    low = axis.low if axis.low is not None else min(0.0, *values)
    high = axis.high if axis.high is not None else max(values)
    if high <= low:
        high = low + (abs(low) or 1.0)
    step = _nice_step((high - low) / 4)
    if axis.high is None:
        high = math.ceil(high / step) * step
    ticks = []
    tick = math.ceil(low / step) * step
    while tick <= high + step * 1e-9:
        ticks.append(round(tick, 10))
        tick += step
    return _Scale(top, low, high, False, ticks)


class _Scale:
    """A value axis: call it with a value to get its y pixel; `ticks` are the labelled values."""

    def __init__(self, top: float, low: float, high: float, log: bool, ticks: list[float]) -> None:
        self.top, self.low, self.high, self.log, self.ticks = top, low, high, log, ticks

    def __call__(self, value: float) -> float:
        if self.log:
            v = math.log10(min(max(value, self.low), self.high))
            lo, hi = math.log10(self.low), math.log10(self.high)
        else:
            v, lo, hi = min(max(value, self.low), self.high), self.low, self.high
        return self.top + PLOT_HEIGHT - (v - lo) / (hi - lo) * PLOT_HEIGHT


def _nice_step(raw: float) -> float:
    """1, 2 or 5 times a power of ten, at least `raw`."""
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if factor * power >= raw:
            return factor * power
    return 10 * power


def _open(chart_id: str, title: str, desc: str, height: float) -> str:
    cid = _esc(chart_id)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{cid}" '
        f'viewBox="0 0 {WIDTH} {_n(height)}" role="img" aria-label="{_esc(title)}" '
        f'aria-describedby="{cid}-desc" preserveAspectRatio="xMidYMid meet">'
        f'<title id="{cid}-title">{_esc(title)}</title><desc id="{cid}-desc">{_esc(desc)}</desc>'
    )


def _legend(items: list[tuple[int, str]], extra: list[tuple[str, str]]) -> tuple[float, str]:
    """The legend in rows above the plot; returns the plot's top and the legend's markup."""
    x, row, parts = float(LEFT), 0, []
    entries: list[tuple[str, str, str]] = [
        (f"s{i % COLOURS}", _shape(i), name) for i, name in items
    ]
    entries += [(css, "ring", name) for css, name in extra]
    for css, shape, name in entries:
        label = name if len(name) <= 28 else name[:27] + "…"
        width = 22 + 6.6 * len(label) + 14
        if x + width > WIDTH - RIGHT and x > LEFT:
            x, row = float(LEFT), row + 1
        y = 12 + row * LEGEND_ROW
        if shape == "ring":
            parts.append(f'<circle class="{css}" cx="{_n(x + 6)}" cy="{_n(y)}" r="5"/>')
        else:
            parts.append(_marker(shape, x + 6, y, css))
        parts.append(f'<text class="legend" x="{_n(x + 16)}" y="{_n(y + 4)}">{_esc(label)}</text>')
        x += width
    rows = row + 1 if entries else 0
    return 8 + rows * LEGEND_ROW, '<g class="legend">' + "".join(parts) + "</g>"


def _y_axis(scale: _Scale, fmt: Callable[[float], str], top: float) -> str:
    parts = [
        f'<line class="axis" x1="{LEFT}" x2="{LEFT}" y1="{_n(top)}" y2="{_n(top + PLOT_HEIGHT)}"/>'
    ]
    for tick in scale.ticks:
        y = scale(tick)
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{_n(y)}" y2="{_n(y)}"/>'
            f'<text class="tick" x="{LEFT - 6}" y="{_n(y + 4)}" text-anchor="end">'
            f"{_esc(fmt(tick))}</text>"
        )
    if scale.log:
        parts.append(f'<text class="axis-label" x="4" y="{_n(top - 2)}">log scale</text>')
    return "".join(parts)


def _x_axis(ticks: list[tuple[float, str]], top: float) -> str:
    base = top + PLOT_HEIGHT
    parts = [
        f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{_n(base)}" y2="{_n(base)}"/>'
    ]
    for x, label in ticks:
        parts.append(
            f'<line class="axis" x1="{_n(x)}" x2="{_n(x)}" y1="{_n(base)}" y2="{_n(base + 5)}"/>'
            f'<text class="tick" x="{_n(x)}" y="{_n(base + 18)}" text-anchor="middle">'
            f"{_esc(label)}</text>"
        )
    return "".join(parts)


def _no_data(top: float) -> str:
    return (
        f'<rect class="frame" x="{LEFT}" y="{_n(top)}" width="{WIDTH - LEFT - RIGHT}" '
        f'height="{PLOT_HEIGHT}"/><text class="no-data" x="{_n((WIDTH + LEFT - RIGHT) / 2)}" '
        f'y="{_n(top + PLOT_HEIGHT / 2)}" text-anchor="middle">No data in this period</text>'
    )


def _shape(index: int) -> str:
    """A series' marker: the shape moves on once the colours come round again, so the first
    32 series all look different."""
    return SHAPES[(index + index // COLOURS) % len(SHAPES)]


def _marker(shape: str, x: float, y: float, css: str) -> str:
    """A point's marker: its shape tells series apart where colour cannot (print, colour
    blindness)."""
    if shape == "square":
        return f'<rect class="dot {css}" x="{_n(x - 3)}" y="{_n(y - 3)}" width="6" height="6"/>'
    if shape == "triangle":
        return (
            f'<polygon class="dot {css}" points="{_n(x)},{_n(y - 4)} {_n(x + 4)},{_n(y + 3)} '
            f'{_n(x - 4)},{_n(y + 3)}"/>'
        )
    if shape == "diamond":
        return (
            f'<polygon class="dot {css}" points="{_n(x)},{_n(y - 4)} {_n(x + 4)},{_n(y)} '
            f'{_n(x)},{_n(y + 4)} {_n(x - 4)},{_n(y)}"/>'
        )
    return f'<circle class="dot {css}" cx="{_n(x)}" cy="{_n(y)}" r="3.2"/>'


def _runs(points: Sequence[Point]) -> list[list[Point]]:
    """Consecutive known points: an unknown value breaks the line rather than bridging it."""
    runs: list[list[Point]] = [[]]
    for p in points:
        if _finite(p.x) and _finite(p.y):
            runs[-1].append(p)
        elif runs[-1]:
            runs.append([])
    return [r for r in runs if r]


def _month_starts(low: float, high: float) -> list[float]:
    start = datetime.fromtimestamp(low, UTC)
    year, month = start.year, start.month
    out = []
    while year < 9999:
        t = datetime(year, month, 1, tzinfo=UTC).timestamp()
        if t > high:
            return out
        if t >= low:
            out.append(t)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def _time_label(t: float, step: float) -> str:
    when = datetime.fromtimestamp(t, UTC)
    day = f"{when.day} {_MONTHS[when.month - 1]}"
    if step < _DAY:
        return f"{day} {when:%H:%M}"
    if step >= 30 * _DAY:
        return f"{_MONTHS[when.month - 1]} {when.year}"
    return day


def _finite(value: float | None) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _n(value: float) -> str:
    """A coordinate: one decimal, no `-0.0`, so output is stable and small."""
    text = f"{value:.1f}"
    text = text[:-2] if text.endswith(".0") else text
    return "0" if text == "-0" else text


def _esc(text: str) -> str:
    return html.escape(printable(text), quote=True)
