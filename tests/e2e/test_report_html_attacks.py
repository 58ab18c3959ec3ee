"""The HTML reports a user makes with the CLI, opened in Debian's headless Chromium: a
history of hostile strings (script end tags, javascript: URLs, an RTL override, NUL, a
non-UTF-8 file name, 100 kB summaries) stays inert and inside the window, and a year of
daily restore tests of 20 sources opens in seconds."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agents.cases.store import CaseStore
from agents.state import StateDB
from tests.integration.test_report_html_attacks import (
    UNTIL,
    cli,
    configure,
    write_hostile_history,
)
from tests.support import chromium
from tests.support.chromium import Chromium
from tests.support.reports import restore_run

PROBE = """(() => ({
  scripts: document.scripts.length,
  injected: document.querySelectorAll('body img, iframe, object, embed, a[href], base').length,
  handlers: [...document.querySelectorAll('*')].filter(
      e => [...e.attributes].some(a => a.name.startsWith('on'))).length,
  ran: typeof window.opsagentRan,
  footer: !!document.querySelector('footer'),
  width: document.documentElement.scrollWidth,
  tallest: Math.max(...[...document.querySelectorAll('table')].map(
      t => t.getBoundingClientRect().height)),
}))()"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    if not chromium.available():
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: scripts/test-services.sh installs it")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    with Chromium(tmp_path_factory.mktemp("chromium"), timeout=180) as browser:
        yield browser


def open_checked(browser: Chromium, path: Path) -> tuple[str, float]:
    """Open the page in a new tab; no console error, no request but the file itself."""
    session = browser.open_page()
    before, asked = len(browser.problems()), len(browser.requests())
    started = time.monotonic()
    browser.navigate(session, path.as_uri())
    seconds = time.monotonic() - started
    assert browser.problems()[before:] == []
    requests = browser.requests()[asked:]
    assert requests == [path.as_uri()], requests
    return session, seconds


@pytest.mark.parametrize("kind", ["recovery", "sla"])
def test_a_page_made_from_a_hostile_history_is_inert_in_chromium(
    browser: Chromium, tmp_path: Path, kind: str
) -> None:
    write_hostile_history(tmp_path)
    config = configure(tmp_path)
    out = tmp_path / f"{kind}.html"
    proc = cli("report", kind, "--config", str(config), "--until", UNTIL, "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    session, _ = open_checked(browser, out)
    found = browser.evaluate(session, PROBE)
    assert found["scripts"] == 1 and found["injected"] == 0 and found["handlers"] == 0
    assert found["ran"] == "undefined" and found["footer"] is True
    assert found["width"] <= 800  # 100 kB words wrap instead of widening the page
    # and are cut at 1,000 characters: a 100 kB source name was a table 66,000 px tall
    assert found["tallest"] < 5000, found["tallest"]
    browser.close_page(session)
    assert cli("report", "verify", str(out)).returncode == 0


def test_chromium_runs_a_json_reports_data_named_shtml_so_verify_refuses_it(
    browser: Chromium, tmp_path: Path
) -> None:
    """Why `report verify` takes JSON only from a .json file: the same signed bytes named
    .shtml are a page whose data runs as script."""
    write_hostile_history(tmp_path, filler=10)
    config = configure(tmp_path)
    signed = tmp_path / "report.json"
    out = ("--out", str(signed))
    proc = cli("report", "recovery", "--config", str(config), "--until", UNTIL, *out)
    assert proc.returncode == 0, proc.stderr
    page = tmp_path / "report.shtml"
    page.write_bytes(signed.read_bytes())
    session = browser.open_page()
    browser.navigate(session, page.as_uri())
    assert browser.evaluate(session, "typeof window.opsagentRan") == "number"
    browser.close_page(session)
    assert cli("report", "verify", str(signed)).returncode == 0
    assert cli("report", "verify", str(page)).returncode == 1


def write_year_of_20_sources(tmp_path: Path) -> None:
    """A daily restore test of 20 sources for 365 days (7,300 source tests), one source
    failing every tenth day; RTOs from 1 minute to 8 hours."""
    state = StateDB(tmp_path / "state" / "state.db")
    CaseStore(f"sqlite:///{tmp_path / 'cases.db'}")  # an empty case store
    start = datetime(2025, 12, 3, 6, 0, tzinfo=UTC)
    for day in range(365):
        fail = "db" if day % 10 == 0 else None
        run = restore_run((start + timedelta(days=day)).isoformat(), 60.0 + day * 80, fail=fail)
        details = dict(run.details)
        sources, steps = {}, []
        for n in range(20):
            name, base = f"source-{n:02d}", ("db" if n == 0 else "files")
            sources[name] = details["sources"][base]
            prefix = f"{base} snapshot"
            steps += [
                {**s, "summary": s["summary"].replace(prefix, f"{name} snapshot")}
                for s in details["steps"]
                if s["summary"].startswith(prefix)
            ]
        steps += [s for s in details["steps"] if s["name"] == "data"]
        state.record_result(replace(run, details={**details, "sources": sources, "steps": steps}))


def test_a_year_of_20_sources_opens_in_chromium_and_fits_the_window(
    browser: Chromium, tmp_path: Path
) -> None:
    """Measured on a loaded 2-core machine: a 10.5 MB page, made in ~3 s, loaded in ~1 s
    (printing it to A4 takes ~50 s and 730 pages, so it is not printed here)."""
    write_year_of_20_sources(tmp_path)
    config = configure(tmp_path)
    out = tmp_path / "year.html"
    args = ("--since", "365d", "--until", UNTIL, "--out", str(out))
    proc = cli("report", "recovery", "--config", str(config), *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "20 sources, 7300 restore tests, 7263 passed, 37 failures" in proc.stdout
    assert cli("report", "verify", str(out)).returncode == 0
    size = out.stat().st_size
    assert size < 40_000_000, size  # about 2 kB a source test
    session, seconds = open_checked(browser, out)
    found = browser.evaluate(
        session,
        """(() => ({
          width: document.documentElement.scrollWidth,
          charts: document.querySelectorAll('svg[role=img]').length,
          sections: document.querySelectorAll('details').length,
          scripts: document.scripts.length,
        }))()""",
    )
    print(f"year of 20 sources: {size} bytes, loaded in {seconds:.1f}s")
    assert found["width"] <= 800 and found["scripts"] == 1
    assert found["charts"] >= 2 and found["sections"] >= 20
    browser.close_page(session)
