"""The HTML reports a user makes with the CLI, opened in Debian's headless Chromium: a
history of hostile strings (script end tags, javascript: URLs, an RTL override, NUL, a
non-UTF-8 file name, 100 kB summaries) stays inert and inside the window, and a year of
daily restore tests of 20 sources opens in seconds."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_report_html_attacks import (
    UNTIL,
    cli,
    configure,
    write_hostile_history,
)
from tests.support import chromium
from tests.support.chromium import Chromium

PROBE = """(() => ({
  scripts: document.scripts.length,
  injected: document.querySelectorAll('body img, iframe, object, embed, a[href], base').length,
  handlers: [...document.querySelectorAll('*')].filter(
      e => [...e.attributes].some(a => a.name.startsWith('on'))).length,
  ran: typeof window.opsagentRan,
  footer: !!document.querySelector('footer'),
  width: document.documentElement.scrollWidth,
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
