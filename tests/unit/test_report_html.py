"""The HTML rendering of report documents: deterministic, escaped, complete, never crashing.

Verifying a report renders its embedded document again and compares bytes, so determinism
and an exact round trip of the embedded JSON are what verification stands on; escaping is
what keeps a hostile host name or case title from becoming markup in an auditor's browser.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from html.parser import HTMLParser
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.reports import svg
from agents.reports.html import extract_document, human_duration, render_html, utc_time
from tests.support import report_docs

DOCS = {
    "recovery": report_docs.recovery_doc,
    "sla": report_docs.sla_doc,
    "fleet": report_docs.fleet_doc,
    "empty-recovery": lambda: report_docs.empty_doc("recovery"),
    "empty-sla": lambda: report_docs.empty_doc("sla"),
    "hostile-recovery": lambda: report_docs.hostile_doc("recovery"),
    "hostile-sla": lambda: report_docs.hostile_doc("sla"),
    "unsigned": lambda: report_docs.unsigned(report_docs.recovery_doc()),
}
CHARTS = {"recovery": ("chart-rto", "chart-coverage"), "sla": ("chart-weekly", "chart-responses")}


class Markup(HTMLParser):
    """What a parser makes of a page: start tags with attributes, text, script bodies."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        (self.scripts if self._in_script else self.text).append(data)


def parsed(page: str) -> Markup:
    markup = Markup()
    markup.feed(page)
    markup.close()
    return markup


@pytest.mark.parametrize("name", sorted(DOCS))
def test_the_same_document_renders_to_the_same_bytes(name: str) -> None:
    doc = DOCS[name]()
    reordered = _reordered(copy.deepcopy(doc))
    assert list(reordered) != list(doc)  # the check below must not pass by accident
    page = render_html(doc)
    assert render_html(copy.deepcopy(doc)) == page
    assert render_html(reordered) == page
    assert page.startswith("<!DOCTYPE html>\n") and page.endswith("</html>\n")


@pytest.mark.parametrize("name", sorted(DOCS))
def test_the_embedded_document_comes_back_exactly(name: str) -> None:
    doc = DOCS[name]()
    page = render_html(doc)
    assert extract_document(page) == doc
    assert render_html(extract_document(page)) == page  # what `report verify` relies on
    block = re.search(r'id="opsagent-report">(.*?)</script>', page, re.DOTALL)
    assert block is not None
    assert "</" not in block.group(1) and "<!--" not in block.group(1)


def test_a_changed_figure_no_longer_matches_its_document() -> None:
    page = render_html(report_docs.recovery_doc())
    changed = page.replace('<td class="n">15</td>', '<td class="n">16</td>', 1)
    assert changed != page
    assert render_html(extract_document(changed)) != changed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<html><body>no report</body></html>", "no embedded opsagent report"),
        ('<script type="application/json" id="opsagent-report">{"a":</script>', "not valid JSON"),
        ('<script type="application/json" id="opsagent-report">[1]</script>', "not a JSON object"),
        (
            '<script type="application/json" id="opsagent-report">{"schema":"x"}</script>',
            "not an opsagent report",
        ),
        (
            '<script type="application/json" id="opsagent-report">{}</script>' * 2,
            "2 embedded reports",
        ),
    ],
)
def test_extracting_from_a_page_without_one_report_says_why_in_one_line(
    text: str, message: str
) -> None:
    with pytest.raises(ValueError) as caught:
        extract_document(text)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("kind", ["recovery", "sla"])
def test_hostile_strings_stay_text(kind: str) -> None:
    doc = report_docs.hostile_doc(kind)
    page = render_html(doc)
    markup = parsed(page)
    scripts = [attrs for tag, attrs in markup.tags if tag == "script"]
    assert scripts == [{"type": "application/json", "id": "opsagent-report"}]
    tags = {tag for tag, _ in markup.tags}
    assert not tags & {"img", "b", "iframe", "object", "embed", "a", "link", "base"}
    handlers = [(t, a) for t, attrs in markup.tags for a in attrs if a.lower().startswith("on")]
    assert handlers == []
    outside = page.replace(markup_json(page), "")
    assert "<script>" not in outside.lower() and "<img" not in outside.lower()
    text = "".join(markup.text)
    assert "<img src=x onerror=" in text  # shown to the reader as text, not run as markup
    assert "</script><script>alert('title')</script>" in text
    assert "\\u202e" in text and "\u202e" not in text  # a direction override is shown, inert
    assert "\x00" not in text and "\\x00" in text
    assert "<bdi>שרת-גיבוי</bdi>" in page
    assert markup.scripts and extract_document(page) == doc


def test_a_lone_surrogate_survives_as_an_escape() -> None:
    doc = report_docs.unsigned(report_docs.recovery_doc())
    doc["title"] = "broken \ud800 host"
    page = render_html(doc)
    page.encode("utf-8")  # writable as a file
    assert "broken \ufffd host" in page
    assert extract_document(page)["title"] == "broken \ud800 host"


@pytest.mark.parametrize("kind", ["recovery", "sla", "fleet"])
def test_every_chart_is_present_and_drawn(kind: str) -> None:
    doc = report_docs.fleet_doc() if kind == "fleet" else DOCS[kind]()
    page = render_html(doc)
    markup = parsed(page)
    for chart_id in CHARTS["sla" if kind == "sla" else "recovery"]:
        svg_text = _svg(page, chart_id)
        attrs = next(a for t, a in markup.tags if t == "svg" and a.get("id") == chart_id)
        assert attrs["role"] == "img" and attrs["aria-label"]
        assert f'<title id="{chart_id}-title">' in svg_text and "<desc " in svg_text
        assert "No data" not in svg_text
        vertices = sum(
            p.count(",") for p in re.findall(r'<polyline [^>]*points="([^"]*)"', svg_text)
        )
        assert len(re.findall(r'class="(?:dot|bar) s\d', svg_text)) + vertices > 5
    if kind == "recovery":
        runs = sum(len(s["runs"]) for s in doc["recovery"]["sources"])
        rto = _svg(page, "chart-rto")
        assert len(re.findall(r'class="dot s\d', rto)) == runs + 4  # + 4 legend markers
        assert rto.count('class="miss"') == 1 + 1  # the one test over its target; legend
        assert rto.count('class="target') == 3 * 2  # 3 distinct targets: line and label
    if kind == "sla":
        weekly = _svg(page, "chart-weekly")
        assert len(re.findall(r'class="bar s\d', weekly)) == 2 * len(doc["sla"]["weekly"])
        responses = _svg(page, "chart-responses")
        missed = sum(not r["met"] for r in doc["sla"]["responses"])
        assert responses.count('class="miss"') == missed + 1  # + the legend's ring
    if kind == "fleet":
        section = page[page.index('<section id="per-host">') :]
        assert "ssh: connection timed out after 30s" in section
        assert section.count("<tr class=") == 4


@pytest.mark.parametrize(
    ("kind", "message"),
    [("recovery", "No restore tests in this period."), ("sla", "No cases in this period.")],
)
def test_an_empty_period_says_so_instead_of_drawing_empty_charts(kind: str, message: str) -> None:
    page = render_html(report_docs.empty_doc(kind))
    assert f"<strong>{message}</strong>" in page
    assert "<svg" not in page


def test_nulls_anywhere_do_not_break_the_page() -> None:
    """Every leaf null at once, then each field name null everywhere, then wrong types."""
    docs = [report_docs.sla_doc(), report_docs.fleet_doc()]  # the fleet's holds a recovery
    variants: list[Any] = [None, {}, {"kind": "recovery"}, {"kind": "sla", "sla": None}]
    for doc in docs:
        variants.append(_nulled(doc, lambda key: True))
        for key in sorted(_keys(doc) - {"schema"}):
            variants.append(_nulled(doc, lambda k, key=key: k == key))
            variants.append(_replaced(doc, key, "nonsense"))
    for variant in variants:
        page = render_html(variant)
        assert 'id="headline"' in page and page.endswith("</html>\n")
        if isinstance(variant, dict) and variant.get("schema"):
            assert _canonical(extract_document(page)) == _canonical(variant)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(["2026-11-03T14:05:00+00:00", "0001-01-01T00:00:00+00:00", "2026-W45"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_value_anywhere_renders(data: st.DataObject) -> None:
    """Whatever a field holds, in any report kind, the page renders and embeds it."""
    doc = data.draw(st.sampled_from([DOCS["recovery"], DOCS["sla"], DOCS["fleet"]]))()
    paths = sorted(_paths(doc), key=str)
    for _ in range(data.draw(st.integers(1, 4))):
        _set(doc, data.draw(st.sampled_from(paths)), data.draw(JSON_VALUES))
    page = render_html(doc)
    assert 'id="headline"' in page and page.endswith("</html>\n")


def test_a_python_only_document_renders_as_its_json() -> None:
    """Tuples and non-string keys (never in a parsed document) show as JSON would carry them."""
    doc = report_docs.recovery_doc()
    odd = copy.deepcopy(doc)
    odd["hosts"] = tuple(odd["hosts"])
    odd["filters"]["labels"] = {7: "x"}
    doc["filters"]["labels"] = {"7": "x"}
    assert render_html(odd) == render_html(doc)


def test_the_page_loads_nothing_and_runs_nothing() -> None:
    page = render_html(report_docs.recovery_doc())
    outside = page.replace(markup_json(page), "")
    assert not re.search(r"\b(src|href)=", outside)
    assert re.findall(r"https?://[^\"' ]+", outside) == ["http://www.w3.org/2000/svg"] * 2
    css = re.search(r"<style>(.*?)</style>", page, re.DOTALL)
    assert css is not None
    digest = base64.b64encode(hashlib.sha256(css.group(1).encode()).digest()).decode()
    assert f"default-src 'none'; style-src 'sha256-{digest}'" in page
    assert "@media print" in page and "@page{size:auto;margin:12mm}" in page
    assert "@media screen and (prefers-color-scheme:dark)" in page


def test_facts_box_states_where_the_figures_come_from() -> None:
    doc = report_docs.recovery_doc()
    page = render_html(doc)
    facts = re.sub(r"<[^>]+>", "", page[page.index('<dl class="facts">') : page.index("</dl>")])
    assert "2026-09-03 20:00 UTC → 2026-12-02 20:00 UTC (90 days)" in facts
    assert "db1, web1, web2" in facts and "0.9.0" in facts
    assert doc["repository"]["key_fingerprint"] in facts
    assert doc["signature"]["key_id"] in facts
    unsigned = render_html(report_docs.unsigned(doc))
    assert "<dt>Signature</dt><dd>unsigned</dd>" in unsigned
    assert page.index('id="headline"') < page.index('<dl class="facts">')


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (552.0, "9m12s"),
        (21600, "6h"),
        (93600.0, "1d 2h"),
        (86400, "1d"),
        (3660, "1h1m"),
        (2.5, "2.5s"),
        (59.6, "1m"),
        (0, "0s"),
        (-60, "-1m"),
        (None, "—"),
        (float("nan"), "—"),
        (float("inf"), "—"),
        (True, "—"),
        ("6h", "—"),
    ],
)
def test_durations_read_like_people_write_them(seconds: Any, text: str) -> None:
    assert human_duration(seconds) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("2026-11-03T09:05:00-05:00", "2026-11-03 14:05 UTC"),
        ("2026-11-03T14:05:07+00:00", "2026-11-03 14:05:07 UTC"),
        ("2026-11-03T14:05:00Z", "2026-11-03 14:05 UTC"),
        ("yesterday", "yesterday"),
        (None, "—"),
    ],
)
def test_times_print_in_utc(value: Any, text: str) -> None:
    assert utc_time(value) == text


AXIS = svg.Axis(human_duration, log=True, ticks=(60, 600, 3600))


@pytest.mark.parametrize(
    "points",
    [
        [],
        [svg.Point(1.7e9, 60.0)],
        [svg.Point(1.7e9 + i * 86400, 60.0) for i in range(5)],
        [svg.Point(1.7e9, 0.0), svg.Point(1.7e9 + 1, -5.0)],
        [svg.Point(1.7e9 + i * 3600, float(i) if i % 3 else None) for i in range(400)],
    ],
    ids=["none", "one", "all-equal", "zero-and-negative", "many-with-nulls"],
)
def test_a_line_chart_draws_any_number_of_points(points: list[svg.Point]) -> None:
    for axis in (AXIS, svg.Axis(str)):
        series = [svg.Series("a", tuple(points))]
        chart = svg.line_chart("c", "T", "D", series, axis, [svg.Target(600.0, "target")])
        assert chart == svg.line_chart("c", "T", "D", series, axis, [svg.Target(600.0, "target")])
        assert chart.startswith("<svg") and chart.endswith("</svg>")
        assert "nan" not in chart and "inf" not in chart
        known = [p for p in points if p.y is not None]
        dots = len(known) if len(known) <= svg.MAX_DOTS else 0
        assert chart.count('class="dot s0"') == dots + 1  # + the legend marker
        if not known:
            assert "No data in this period" in chart


@pytest.mark.parametrize(
    "at", ["0001-01-01T00:00:00+00:00", "9999-12-31T23:59:59+00:00", "2026-11-03T00:00:00+00:00"]
)
def test_a_time_axis_survives_the_ends_of_the_calendar(at: str) -> None:
    doc = report_docs.unsigned(report_docs.recovery_doc())
    doc["recovery"]["rto_series"] = [{"at": at, "source": "a", "rto_seconds": 5.0}]
    doc["recovery"]["coverage"]["series"] = [{"date": at[:10], "percent": 5.0}]
    page = render_html(doc)
    assert _svg(page, "chart-rto").count('class="dot s0"') == 2  # the point and the legend


def test_twenty_sources_look_twenty_ways() -> None:
    series = [svg.Series(f"s{i}", (svg.Point(1.7e9, float(i + 1)),)) for i in range(20)]
    chart = svg.line_chart("c", "T", "D", series, AXIS)
    legend = chart[chart.index('<g class="legend">') : chart.index("</g>")]
    marks = re.findall(r'<(circle|rect|polygon) class="dot (s\d)"(?: points="([^"]*)")?', legend)
    looks = {(tag, css, points.count(",")) for tag, css, points in marks}  # 3 or 4 corners
    assert len(marks) == 20 and len(looks) == 20


def test_a_null_breaks_a_line_rather_than_bridging_it() -> None:
    points = [svg.Point(float(i), None if i == 3 else 5.0) for i in range(7)]
    chart = svg.line_chart("c", "T", "D", [svg.Series("a", tuple(points))], svg.Axis(str))
    assert chart.count("<polyline") == 2


def test_a_bar_chart_with_nothing_to_show_says_so() -> None:
    empty = svg.bar_chart("b", "T", "D", ["W1"], [svg.Bars("x", (None,))], svg.Axis(str))
    assert "No data in this period" in empty
    bars = svg.bar_chart(
        "b",
        "T",
        "D",
        ["W1", "W2"],
        [svg.Bars("x", (0.0, 3.0)), svg.Bars("y", (2.0,))],
        svg.Axis(str),
    )
    assert bars.count('class="bar') == 3


def markup_json(page: str) -> str:
    match = re.search(
        r'<script type="application/json" id="opsagent-report">.*?</script>', page, re.S
    )
    assert match is not None
    return match.group(0)


def _svg(page: str, chart_id: str) -> str:
    start = page.index(f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{chart_id}"')
    return page[start : page.index("</svg>", start) + len("</svg>")]


def _reordered(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _reordered(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reordered(v) for v in value]
    return value


def _keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


def _nulled(value: Any, which: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: None if which(k) and k != "schema" else _nulled(v, which) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_nulled(v, which) for v in value]
    return value


def _replaced(value: Any, key: str, new: Any) -> Any:
    if isinstance(value, dict):
        return {k: new if k == key else _replaced(v, key, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_replaced(v, key, new) for v in value]
    return value


def _canonical(doc: Any) -> str:
    """Documents compared as canonical JSON: NaN is not equal to itself, its text is."""
    return json.dumps(doc, sort_keys=True)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a document, down to three items of each list."""
    found = [path] if path else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value[:3]):
            found += _paths(item, (*path, index))
    return found


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    """Put a value at a path, if an earlier change left the path in place."""
    for key in path[:-1]:
        if not isinstance(doc, dict | list):
            return
        try:
            doc = doc[key]
        except (KeyError, IndexError, TypeError):
            return
    last = path[-1]
    fits = isinstance(doc, list) and isinstance(last, int) and last < len(doc)
    if isinstance(doc, dict) or fits:
        doc[last] = value
