"""A report as a file: signed JSON or self-contained HTML, written and verified.

Verifying JSON checks the signature over the document. Verifying HTML takes the signed
document it embeds, checks its signature, and renders it again: the file must be
exactly that rendering, so a figure changed anywhere in the HTML fails too. A JSON
document is verified only in a file named .json: under a name a browser renders as a
page (.shtml, .shtm, .xhtml ...) its strings would be live markup.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agents.errors import OpsagentError
from agents.reports.signing import SignatureInvalid, verify

FORMATS = (".json", ".html", ".htm")


class ReportFileError(OpsagentError):
    """A report file that cannot be written in the asked format; one line."""

    exit_code = 2


def document_json(doc: dict[str, Any]) -> str:
    """The document as a JSON file holds it: indented, keys in the contract's order."""
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def render(doc: dict[str, Any], path: Path) -> str:
    """The text of a report file for `path`'s suffix (.json or .html)."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        return document_json(doc)
    if suffix in (".html", ".htm"):
        return _html().render_html(doc)
    raise ReportFileError(f"{path}: --out takes a .json or .html file")


def verify_file(path: Path, expected_public: bytes | None = None) -> tuple[str, dict[str, Any]]:
    """(key id, document) of a signed report file; SignatureInvalid (one line) if not."""
    if not path.is_file():  # a device or a FIFO would be read forever
        raise SignatureInvalid(f"{path}: not a report (not a regular file)")
    try:
        text = path.read_bytes().decode("utf-8")  # as written: no newline translation
    except UnicodeDecodeError:
        raise SignatureInvalid(f"{path}: not a report (not UTF-8 text)") from None
    except OSError as exc:
        raise SignatureInvalid(f"{path}: cannot read the report: {exc.strerror}") from None
    if path.suffix.lower() in (".html", ".htm") or text.lstrip().startswith("<"):
        html = _html()
        try:
            doc = html.extract_document(text)
        except Exception as exc:  # whatever the page holds, one line
            raise SignatureInvalid(f"{path}: no report document in the HTML ({exc})") from None
        key = verify(doc, expected_public)
        if html.render_html(doc) != text:
            raise SignatureInvalid(
                f"{path}: the HTML differs from the signed document's rendering"
                " (changed after it was made)"
            )
        return key, doc
    if path.suffix.lower() != ".json":
        # a browser shows report.shtml (or a file a web server calls text/html) as a page:
        # the data's strings would be live markup, beside a verdict of valid
        raise SignatureInvalid(
            f"{path}: not a report (a JSON report is verified only in a .json file;"
            " a browser could show this one as a page)"
        )
    try:
        doc = json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        raise SignatureInvalid(f"{path}: not a report (duplicate key {exc.args[0]!r})") from None
    except RecursionError:
        raise SignatureInvalid(f"{path}: not a report (nested too deeply)") from None
    except ValueError:
        raise SignatureInvalid(f"{path}: not a report (neither JSON nor HTML)") from None
    return verify(doc, expected_public), doc


class _DuplicateKey(ValueError):
    """A JSON object naming one key twice."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are unique: with a key twice, Python keeps the last value
    while a viewer may show the first, so what is signed and what is read could differ."""
    doc: dict[str, Any] = {}
    for key, value in pairs:
        if key in doc:
            raise _DuplicateKey(key)
        doc[key] = value
    return doc


def _html() -> Any:
    """The HTML renderer, imported when a report is rendered or an HTML file verified."""
    try:
        from agents.reports import html
    except ImportError:
        raise ReportFileError("HTML reports are not available in this build") from None
    return html
