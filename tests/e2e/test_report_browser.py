"""The HTML reports in a real browser: Debian's headless Chromium, driven over DevTools.

Each report is opened from a file, screenshotted (and the PNG decoded to check it shows
something), searched for its headline and charts in the rendered DOM, watched for console
errors and for any request beyond the file itself, shown in dark mode, and printed to PDF on
A4 and Letter. Hostile documents must render inert. Set OPSAGENT_REPORT_SCREENSHOTS=DIR to
keep a light and a dark screenshot of each report (docs/img holds those of the samples).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.reports.html import render_html
from tests.support import chromium, report_docs
from tests.support.chromium import Chromium

pytestmark = pytest.mark.timeout(600)

REPORTS = {
    "recovery": (report_docs.recovery_doc, ("chart-rto", "chart-coverage")),
    "sla": (report_docs.sla_doc, ("chart-weekly", "chart-responses")),
    "fleet": (report_docs.fleet_doc, ("chart-rto", "chart-coverage")),
}
PAPER = {"A4": (8.27, 11.69, 595.0, 842.0), "Letter": (8.5, 11.0, 612.0, 792.0)}


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    if not chromium.available():
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: scripts/test-services.sh installs it")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    with Chromium(tmp_path_factory.mktemp("chromium")) as browser:
        yield browser


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, Any]]]:
    """Every sample report written to a file, with the document it came from."""
    out = tmp_path_factory.mktemp("reports")
    docs = {name: make() for name, (make, _) in REPORTS.items()}
    docs["empty-recovery"] = report_docs.empty_doc("recovery")
    docs["empty-sla"] = report_docs.empty_doc("sla")
    docs["hostile-recovery"] = report_docs.hostile_doc("recovery")
    docs["hostile-sla"] = report_docs.hostile_doc("sla")
    written = {}
    for name, doc in docs.items():
        path = out / f"{name}.html"
        path.write_text(render_html(doc), encoding="utf-8")
        written[name] = (path, doc)
    return written


@pytest.fixture
def page(browser: Chromium) -> Iterator[str]:
    """A fresh tab; fails the test on any console error, exception or foreign request."""
    session = browser.open_page()
    before, asked = len(browser.problems()), len(browser.requests())
    yield session
    assert browser.problems()[before:] == []
    requests = browser.requests()[asked:]
    assert requests and all(url.startswith("file://") for url in requests), requests
    browser.close_page(session)


@pytest.mark.parametrize("name", sorted(REPORTS))
def test_a_report_shows_its_headline_and_every_chart(
    browser: Chromium, page: str, pages: dict[str, Any], name: str
) -> None:
    path, doc = pages[name]
    browser.navigate(page, path.as_uri())
    headline = browser.evaluate(page, "document.getElementById('headline').textContent")
    assert headline == doc["headline"]
    for chart_id in REPORTS[name][1]:
        drawn = browser.evaluate(
            page,
            f"""(() => {{
              const svg = document.getElementById({json.dumps(chart_id)});
              const box = svg.getBoundingClientRect();
              const marks = [...svg.querySelectorAll('.dot, .bar')]
                .filter(m => {{ const b = m.getBoundingClientRect();
                                return b.width > 0 && b.height > 0; }}).length
                + [...svg.querySelectorAll('polyline')]
                  .reduce((n, line) => n + line.points.numberOfItems, 0);
              return {{width: box.width, height: box.height, marks,
                       fill: getComputedStyle(svg.querySelector('.dot, .bar')).fill}};
            }})()""",
        )
        assert drawn["width"] > 600 and drawn["height"] > 150, drawn
        assert drawn["marks"] > 5, drawn
        assert drawn["fill"] not in ("none", "rgb(0, 0, 0)"), drawn  # the palette applied
    assert browser.evaluate(page, "document.documentElement.scrollWidth") <= 800
    if name == "fleet":
        rows = browser.evaluate(page, "document.querySelectorAll('#per-host tbody tr').length")
        assert rows == len(doc["per_host"])
    _pixels_vary(browser.screenshot(page, scale=0.25))
    _keep(browser, page, name)


def test_dark_mode_is_dark_and_print_is_light(
    browser: Chromium, page: str, pages: dict[str, Any]
) -> None:
    browser.navigate(page, pages["recovery"][0].as_uri())
    background = "getComputedStyle(document.documentElement).backgroundColor"
    colour = "getComputedStyle(document.body).color"
    light = browser.screenshot(page, scale=0.25)
    browser.color_scheme(page, "dark")
    assert _luminance(browser.evaluate(page, background)) < 0.1
    assert _luminance(browser.evaluate(page, colour)) > 0.8
    dark = browser.screenshot(page, scale=0.25)
    assert dark != light
    _pixels_vary(dark)
    browser.color_scheme(page, "dark", media="print")
    assert _luminance(browser.evaluate(page, background)) > 0.95  # dark mode off on paper
    browser.color_scheme(page, "light")


@pytest.mark.parametrize("paper", sorted(PAPER))
@pytest.mark.parametrize("name", ["recovery", "sla"])
def test_a_report_prints_to_pdf(
    browser: Chromium, page: str, pages: dict[str, Any], name: str, paper: str
) -> None:
    width_in, height_in, width_pt, height_pt = PAPER[paper]
    browser.navigate(page, pages[name][0].as_uri())
    pdf = browser.pdf(page, width_in, height_in)
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    pages_total = max(int(n) for n in re.findall(rb"/Count (\d+)", pdf))  # the page tree's root
    assert pages_total >= 2
    assert len(re.findall(rb"/Type /Page(?![s\w])", pdf)) == pages_total
    for box in re.findall(rb"/MediaBox \[0 0 ([\d.]+) ([\d.]+)\]", pdf):
        assert abs(float(box[0]) - width_pt) < 2 and abs(float(box[1]) - height_pt) < 2, box


def test_printing_shows_the_runs_folded_on_screen(
    browser: Chromium, page: str, pages: dict[str, Any]
) -> None:
    browser.navigate(page, pages["recovery"][0].as_uri())
    folded = "document.querySelector('#runs details:not([open]) tbody tr')"
    assert browser.evaluate(page, f"{folded}.checkVisibility()") is False
    open_ = "document.querySelector('#runs details[open] tr.fail')"
    assert browser.evaluate(page, f"{open_}.checkVisibility()") is True  # failures unfolded
    browser.color_scheme(page, "light", media="print")
    assert browser.evaluate(page, f"{folded}.checkVisibility()") is True
    width = browser.evaluate(page, "document.documentElement.scrollWidth")
    browser.color_scheme(page, "light")
    assert width <= 800


@pytest.mark.parametrize(
    ("kind", "message"), [("recovery", "No restore tests"), ("sla", "No cases")]
)
def test_an_empty_report_says_so(
    browser: Chromium, page: str, pages: dict[str, Any], kind: str, message: str
) -> None:
    browser.navigate(page, pages[f"empty-{kind}"][0].as_uri())
    shown = browser.evaluate(page, "document.getElementById('empty').innerText")
    assert shown.startswith(f"{message} in this period.")
    assert browser.evaluate(page, "document.querySelectorAll('svg').length") == 0
    _pixels_vary(browser.screenshot(page, scale=0.25), least=4)


@pytest.mark.parametrize("kind", ["recovery", "sla"])
def test_a_hostile_report_renders_inert(
    browser: Chromium, page: str, pages: dict[str, Any], kind: str
) -> None:
    path, doc = pages[f"hostile-{kind}"]
    browser.navigate(page, path.as_uri())
    found = browser.evaluate(
        page,
        """(() => ({
          title: document.querySelector('h1').textContent,
          scripts: document.scripts.length,
          injected: document.querySelectorAll('body img, body b, iframe, object, a').length,
          handlers: [...document.querySelectorAll('*')].filter(
              e => [...e.attributes].some(a => a.name.startsWith('on'))).length,
          embedded: document.getElementById('opsagent-report').textContent,
          footer: !!document.querySelector('footer'),
          width: document.documentElement.scrollWidth,
        }))()""",
    )
    assert found["title"] == doc["title"]
    assert found["scripts"] == 1 and found["injected"] == 0 and found["handlers"] == 0
    assert json.loads(found["embedded"]) == doc  # the page parsed to its end, data intact
    assert found["footer"] is True
    assert found["width"] <= 800  # 300-character words wrap instead of widening the page
    _keep(browser, page, f"hostile-{kind}")


def _pixels_vary(png: bytes, least: int = 20) -> None:
    """The screenshot is a real picture: many colours, none covering nearly everything."""
    counts = chromium.colours(png)
    assert len(counts) >= least, len(counts)
    assert max(counts.values()) < 0.97 * sum(counts.values())


def _luminance(css_colour: str) -> float:
    red, green, blue = (int(v) / 255 for v in re.findall(r"\d+", css_colour)[:3])
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def _keep(browser: Chromium, page: str, name: str) -> None:
    """Write light and dark screenshots when asked (for docs/img)."""
    folder = os.environ.get("OPSAGENT_REPORT_SCREENSHOTS")
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    Path(folder, f"report-{name}.png").write_bytes(browser.screenshot(page, scale=0.75))
    browser.color_scheme(page, "dark")
    Path(folder, f"report-{name}-dark.png").write_bytes(browser.screenshot(page, scale=0.75))
    browser.color_scheme(page, "light")


def test_the_watch_sees_console_errors_and_requests(browser: Chromium, tmp_path: Path) -> None:
    """The checks above could pass by seeing nothing: a page that logs an error, throws and
    fetches an image must show up in both."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<!DOCTYPE html><img src="http://127.0.0.1:9/x.png">'
        "<script>console.error('seen'); throw new Error('thrown')</script>"
    )
    session = browser.open_page()
    before = len(browser.problems())
    try:
        browser.navigate(session, bad.as_uri())
        found = browser.problems()[before:]
        assert any("seen" in p for p in found) and any("thrown" in p for p in found), found
        assert "http://127.0.0.1:9/x.png" in browser.requests()
    finally:
        browser.close_page(session)


def test_reports_made_by_the_cli_from_real_history_verify_open_and_catch_changes(
    browser: Chromium, page: str, tmp_path: Path
) -> None:
    """The whole path: restore-test runs and cases written through the state database and
    case store, `opsagent report recovery|sla --out X.html` signed with a key made by
    `report key init`, `report verify` on the HTML, the page in Chromium (headline,
    charts, no console error), and one changed character, in the visible page or in the
    document it embeds, failing verification."""
    from agents.cases.store import CaseStore
    from agents.state import StateDB
    from tests.support.reports import run_cli, write_recovery_history

    state_dir = tmp_path / "state"
    cases_url = f"sqlite:///{tmp_path / 'cases.db'}"
    write_recovery_history(StateDB(state_dir / "state.db"), CaseStore(cases_url))
    config = tmp_path / "config.yml"
    config.write_text(
        f"host: web1\nstate_dir: {state_dir}\ncases: {{store: '{cases_url}'}}\n"
        "restore_test: {max_rto: 6h}\n"
    )
    period = ["--config", str(config), "--until", "2026-12-02T20:00:00+00:00"]
    assert run_cli("report", "key", "init", "--config", str(config)).returncode == 0
    for kind, charts in (("recovery", ("chart-rto", "chart-coverage")), ("sla", ())):
        out = tmp_path / f"{kind}.html"
        made = run_cli("report", kind, *period, "--since", "90d", "--out", str(out))
        assert made.returncode == 0, made.stderr
        ok = run_cli("report", "verify", str(out))
        assert ok.returncode == 0, ok.stderr
        doc = json.loads(run_cli("report", kind, *period, "--since", "90d", "--json").stdout)
        assert ok.stdout.startswith(f"valid, signed by key_id {doc['signature']['key_id']}")

        browser.navigate(page, out.as_uri())
        headline = browser.evaluate(page, "document.getElementById('headline').textContent")
        assert headline == doc["headline"] and headline
        for chart_id in charts:
            marks = browser.evaluate(
                page, f"document.querySelectorAll('#{chart_id} .dot, #{chart_id} polyline').length"
            )
            assert marks > 0, chart_id

        text = out.read_text(encoding="utf-8")
        body_end = text.index('<script type="application/json"')
        in_headline = re.search(r'id="headline"[^>]*>[^<\d]*(\d)', text)
        assert in_headline is not None and in_headline.start(1) < body_end
        in_document = re.search(r'":(\d)', text[body_end:])
        assert in_document is not None
        for where, at in (
            ("headline", in_headline.start(1)),
            ("document", body_end + in_document.start(1)),
        ):
            digit = "3" if text[at] != "3" else "4"
            changed = tmp_path / f"{kind}-{where}.html"
            changed.write_text(text[:at] + digit + text[at + 1 :], encoding="utf-8")
            bad = run_cli("report", "verify", str(changed))
            assert bad.returncode == 1, (where, bad.stdout)
            assert len(bad.stderr.strip().splitlines()) == 1
