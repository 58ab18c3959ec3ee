"""Attacks on the HTML reports from a user's side: a history whose strings are hostile
(script end tags, comment openers, CDATA ends, javascript: URLs, RTL override, NUL, lone
surrogates, 100 kB), and tampering with a signed page that would change what a viewer
sees (CSS, a BOM, CRLF, extra elements, a second embedded document, an SVG bar, entity or
look-alike digits). Every case runs the real CLI over a real state database and case store."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest

from agents.cases.rules import CaseRules
from agents.cases.store import CaseStore
from agents.config import CasesConfig
from agents.state import StateDB
from tests.support.reports import one_line, restore_run, run_cli, write_recovery_history


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, timeout=180)


REPO = Path(__file__).resolve().parents[2]
UNTIL = "2026-12-02T20:00:00+00:00"
HOSTILE = (
    "</script><script>window.opsagentRan=1</script><!-- ]]> javascript:alert(2) \u202egnp.exe \x00"
    " \udcff <img src=http://127.0.0.1:9/x> "
)


def configure(tmp_path: Path) -> Path:
    """A config naming the state dir and case store under tmp_path, and a signing key."""
    config = tmp_path / "config.yml"
    config.write_text(
        f"host: web1\nstate_dir: {tmp_path / 'state'}\n"
        f"cases: {{store: 'sqlite:///{tmp_path / 'cases.db'}'}}\n"
        "restore_test: {max_rto: 6h}\n"
    )
    assert cli("report", "key", "init", "--config", str(config)).returncode == 0
    return config


def write_hostile_history(tmp_path: Path, filler: int = 100_000) -> None:
    """Two restore tests whose source name, summaries and step summaries are hostile (the
    failed one opens a case titled with them)."""
    state = StateDB(tmp_path / "state" / "state.db")
    rules = CaseRules(CaseStore(f"sqlite:///{tmp_path / 'cases.db'}"), CasesConfig())
    text = HOSTILE + "W" * filler
    for at, fail in (("2026-11-20T05:30:00+00:00", "db"), ("2026-11-21T05:30:00+00:00", None)):
        run = restore_run(at, 400.0, fail=fail)
        details = dict(run.details)
        details["sources"] = dict(details["sources"])
        details["sources"][text] = details["sources"].pop("db")
        details["steps"] = [{**s, "summary": text + s["summary"]} for s in details["steps"]]
        run = replace(run, summary=text + run.summary, details=details)
        state.record_result(run)
        if not run.ok:
            assert rules.observe(run) is not None


class Tags(HTMLParser):
    """Every start tag and its attributes, as a browser's tokenizer sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []  # what the page shows, outside the embedded document

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        if self.lasttag != "script":
            self.text.append(data)


def test_hostile_strings_and_a_non_utf8_file_name_make_an_inert_page_that_verifies(
    tmp_path: Path,
) -> None:
    """A lone surrogate (a non-UTF-8 file name decoded with surrogateescape) once made
    `report recovery` die with a UnicodeEncodeError traceback while signing."""
    write_hostile_history(tmp_path)
    config = configure(tmp_path)
    for kind in ("recovery", "sla"):
        out = tmp_path / f"{kind}.html"
        proc = cli("report", kind, "--config", str(config), "--until", UNTIL, "--out", str(out))
        assert proc.returncode == 0, proc.stderr[-2000:]
        page = out.read_text(encoding="utf-8")
        verified = cli("report", "verify", str(out))
        assert verified.returncode == 0, verified.stderr
        assert verified.stdout.startswith("valid, signed by key_id sha256:")
        parser = Tags()
        parser.feed(page)
        names = [tag for tag, _ in parser.tags]
        assert names.count("script") == 1, "a data string opened a script element"
        assert "img" not in names and "base" not in names
        (script,) = (attrs for tag, attrs in parser.tags if tag == "script")
        assert script == {"type": "application/json", "id": "opsagent-report"}
        urls = {"href", "src", "xlink:href", "action", "formaction", "srcset"}
        assert not [a for _, attrs in parser.tags for a in attrs if a in urls]
        shown = "".join(parser.text)
        assert "\x00" not in page and "\u202e" not in page.split("<script")[0]
        # 100 kB strings are cut on the page and whole in the embedded document
        assert "W" * 1001 not in shown
        if kind == "recovery":
            assert "W" * 100_000 in page
            assert "characters, in the embedded document)" in shown
    # the JSON the recovery report prints carries the file name's byte as U+FFFD
    proc = cli("report", "recovery", "--config", str(config), "--until", UNTIL, "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "\ufffd" in json.dumps(json.loads(proc.stdout), ensure_ascii=False)


@pytest.fixture(scope="module")
def signed_pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The recovery and SLA pages of the report tests' history, signed."""
    tmp_path = tmp_path_factory.mktemp("pages")
    write_recovery_history(
        StateDB(tmp_path / "state" / "state.db"),
        CaseStore(f"sqlite:///{tmp_path / 'cases.db'}"),
    )
    config = configure(tmp_path)
    pages = {}
    for kind in ("recovery", "sla"):
        out = tmp_path / f"{kind}.html"
        proc = cli("report", kind, "--config", str(config), "--until", UNTIL, "--out", str(out))
        assert proc.returncode == 0, proc.stderr
        assert cli("report", "verify", str(out)).returncode == 0
        pages[kind] = out.read_bytes()
    return pages


EMBEDDED = re.compile(rb'<script type="application/json" id="opsagent-report">.*?</script>', re.S)
TAMPERING = {
    "a style that hides rows": lambda p: p.replace(
        b"</head>", b"<style>tr:nth-child(2){display:none}</style></head>", 1
    ),
    "a ::before that writes a figure": lambda p: p.replace(
        b"</head>", b'<style>.headline::before{content:"100 % "}</style></head>', 1
    ),
    "an element after </html>": lambda p: p + b"<p>all restore tests passed</p>",
    "a newline after </html>": lambda p: p + b"\n",
    "a byte order mark": lambda p: b"\xef\xbb\xbf" + p,
    "CRLF line endings": lambda p: p.replace(b"\n", b"\r\n"),
    "a comment": lambda p: p.replace(b"<body>", b"<body><!-- reviewed -->", 1),
    "a second embedded document": lambda p: p.replace(
        b"<body>", b"<body>" + EMBEDDED.search(p).group(0), 1
    ),
    "an SVG bar's height": lambda p: re.sub(rb'height="(\d+)"', rb'height="\g<1>1"', p, count=1),
    "an entity-encoded digit": lambda p: re.sub(rb"<h1>([^<]*)</h1>", rb"<h1>&#53;\1</h1>", p),
    "a look-alike digit": lambda p: p.replace(b"0 ", "\u0d66 ".encode(), 1),
    "whitespace inside a tag": lambda p: p.replace(b"<h1>", b"<h1 >", 1),
    "the Content-Security-Policy removed": lambda p: re.sub(
        rb'<meta http-equiv="Content-Security-Policy"[^>]*>\n', b"", p
    ),
    "another charset": lambda p: p.replace(b'charset="utf-8"', b'charset="windows-1252"', 1),
    "a NUL at the end": lambda p: p + b"\0",
}


@pytest.mark.parametrize("kind", ["recovery", "sla"])
def test_every_change_a_viewer_could_see_fails_verification(
    signed_pages: dict[str, bytes], kind: str, tmp_path: Path
) -> None:
    page = signed_pages[kind]
    for name, tamper in TAMPERING.items():
        changed = tamper(page)
        assert changed != page, f"{name}: the tampering did not apply"
        path = tmp_path / "t.html"
        path.write_bytes(changed)
        proc = cli("report", "verify", str(path))
        assert proc.returncode == 1, f"{name}: {proc.stdout}"
        assert one_line(proc).startswith(f"opsagent: {path}: "), name


def test_a_json_report_under_a_name_a_browser_shows_as_a_page_is_refused(
    tmp_path: Path,
) -> None:
    """A signed JSON report saved as report.shtml once verified as valid while Chromium
    (which maps .shtml and .shtm to text/html) ran the script in its case titles."""
    write_hostile_history(tmp_path, filler=10)
    config = configure(tmp_path)
    signed = tmp_path / "report.json"
    out = ("--out", str(signed))
    proc = cli("report", "recovery", "--config", str(config), "--until", UNTIL, *out)
    assert proc.returncode == 0, proc.stderr
    assert "<script>" in signed.read_text(encoding="utf-8")  # JSON keeps the data's markup
    assert cli("report", "verify", str(signed)).returncode == 0
    for name in ("report.shtml", "report.shtm", "report.xhtml", "report.svg", "report"):
        renamed = tmp_path / name
        renamed.write_bytes(signed.read_bytes())
        proc = cli("report", "verify", str(renamed))
        assert proc.returncode == 1, name
        assert one_line(proc) == (
            f"opsagent: {renamed}: not a report (a JSON report is verified only in a .json"
            " file; a browser could show this one as a page)"
        )
