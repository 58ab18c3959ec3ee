"""The HTML rendering of a report document (opsagent-report/1): one self-contained page.

`render_html(doc)` is a pure function of the signed document: no clock, no environment, no
time zone database (times are printed in UTC, the calendar's zone is named), stable ordering,
so verifying a report can render the embedded document again and require the same bytes.
The page carries its document as `<script type="application/json" id="opsagent-report">`;
`extract_document(text)` gets it back. Inline CSS (light, dark and print), inline SVG charts,
no script and no external asset; a Content-Security-Policy forbids both, so text that slipped
through escaping still could not run or fetch anything.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import re
from datetime import UTC, datetime
from typing import Any

from agents.reports import svg
from agents.units import few, printable

DOCUMENT_ID = "opsagent-report"
SEVERITIES = ("critical", "major", "minor")
DASH = "—"
SHOWN_CHARACTERS = 1000  # of one data string; the embedded document has them all
_EMBED = re.compile(
    r'<script type="application/json" id="opsagent-report">(.*?)</script>', re.DOTALL
)
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_TITLES = {"recovery": "Recovery evidence", "sla": "Service levels"}
_DURATION_TICKS = (
    1, 10, 60, 300, 600, 1800, 3600, 2 * 3600, 6 * 3600, 12 * 3600,
    86400, 2 * 86400, 7 * 86400, 30 * 86400, 90 * 86400, 365 * 86400,
)  # fmt: skip


def render_html(doc: dict[str, Any]) -> str:
    """The report as one HTML5 page; any field may be null or missing and is shown as such."""
    doc = _as_json(doc if isinstance(doc, dict) else {})
    kind = _text(doc.get("kind"))
    title = _text(doc.get("title")) or _TITLES.get(kind or "", "opsagent report")
    parts = [_header(doc, title)]
    if doc.get("empty") is True:
        parts.append(_empty(kind))
    elif kind == "recovery":
        parts.append(_recovery(_dict(doc.get("recovery"))))
    elif kind == "sla":
        parts.append(_sla(_dict(doc.get("sla"))))
    else:
        parts.append(f'<p class="empty">Unknown report kind {_t(kind)}.</p>')
    if isinstance(doc.get("per_host"), list):
        parts.append(_per_host(_dicts(doc.get("per_host"))))
    parts.append(_footer(doc))
    return _page(title, _text(doc.get("opsagent_version")), "".join(parts), _embed(doc))


def extract_document(text: str) -> dict[str, Any]:
    """The document a rendered page embeds; ValueError with one line when it has none."""
    found = _EMBED.findall(text) if isinstance(text, str) else []
    if not found:
        raise ValueError("no embedded opsagent report (script#opsagent-report) in this file")
    if len(found) > 1:
        raise ValueError(f"{len(found)} embedded reports in this file, expected one")
    try:
        doc = json.loads(found[0])
    except ValueError as exc:
        raise ValueError(f"the embedded report is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError("the embedded report is not a JSON object")
    schema = doc.get("schema")
    if not isinstance(schema, str) or not schema.startswith("opsagent-report/"):
        raise ValueError(f"the embedded document is not an opsagent report (schema {schema!r})")
    return doc


def human_duration(seconds: Any) -> str:
    """`9m12s`, `6h`, `6h5m`, `1d 2h`, `12.5s`; a dash when unknown."""
    value = _num(seconds)
    if value is None:
        return DASH
    if value < 0:
        return "-" + human_duration(-value)
    if value < 10 and value != int(value):
        return f"{value:.1f}s"
    whole = round(value)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        minutes, rest = divmod(whole, 60)
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if whole < 86400:
        hours, rest = divmod(whole, 3600)
        return f"{hours}h{rest // 60}m" if rest // 60 else f"{hours}h"
    days, rest = divmod(whole, 86400)
    return f"{days}d {rest // 3600}h" if rest // 3600 else f"{days}d"


def utc_time(value: Any) -> str:
    """An ISO time as `2026-11-03 14:05 UTC` (seconds shown when not zero); raw when unparsable."""
    when = _time(value)
    if when is None:
        return _text(value) or DASH
    form = "%Y-%m-%d %H:%M:%S" if when.second else "%Y-%m-%d %H:%M"
    return when.strftime(form) + " UTC"


# --- the page -----------------------------------------------------------------------------


def _page(title: str, version: str | None, body: str, embedded: str) -> str:
    csp = (
        "default-src 'none'; style-src 'sha256-"
        + base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
        + "'; img-src data:"
    )
    generator = f"opsagent {version}" if version else "opsagent"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="color-scheme" content="light dark">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">\n'
        f'<meta name="generator" content="{_e(generator)}">\n'
        f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"{body}\n"
        f'<script type="application/json" id="{DOCUMENT_ID}">{embedded}</script>\n'
        "</body>\n</html>\n"
    )


def _as_json(doc: dict[str, Any]) -> dict[str, Any]:
    """The document as JSON would carry it (string keys, lists, no objects), so the page and
    its embedded copy show the same thing whatever a caller passed."""
    loaded: dict[str, Any] = json.loads(json.dumps(doc, ensure_ascii=False, default=str))
    return loaded


def _embed(doc: dict[str, Any]) -> str:
    """The document as JSON that cannot end the script element nor open a comment in it."""
    text = json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    text = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return text.replace("</", "<\\/").replace("<!--", "<\\u0021--")


def _header(doc: dict[str, Any], title: str) -> str:
    headline = _text(doc.get("headline")) or "No headline in this report."
    period = _dict(doc.get("period"))
    days = _num(period.get("days"))
    since, until = period.get("since"), period.get("until")
    span = f"{_when(since)} → {_when(until)}"
    if days is not None:
        span += f" ({_e(_count(days))} days)"
    hosts = [h for h in (_text(x) for x in _list(doc.get("hosts"))) if h]
    repo = _dict(doc.get("repository"))
    facts = [
        ("Period", span),
        ("Host" if len(hosts) == 1 else "Hosts", ", ".join(_t(h) for h in hosts) or DASH),
        ("opsagent version", _t(_text(doc.get("opsagent_version")))),
        ("Repository", _t(_text(repo.get("url")))),
        ("Repository key", _code(repo.get("key_fingerprint"))),
        ("Signature", _signature(doc.get("signature"))),
        ("Generated", _when(doc.get("generated_at"))),
    ]
    filters = _filters(_dict(doc.get("filters")))
    if filters:
        facts.insert(2, ("Filters", filters))
    rows = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in facts)
    return (
        f'<header>\n<h1>{_t(title)}</h1>\n<p class="headline" id="headline">{_t(headline)}</p>\n'
        f'<dl class="facts">{rows}</dl>\n</header>\n'
    )


def _signature(value: Any) -> str:
    sig = _dict(value)
    key_id = _text(sig.get("key_id"))
    if not key_id:
        return "unsigned"
    algorithm = _text(sig.get("algorithm")) or "?"
    return f"{_t(algorithm)}, key {_code(key_id)}"


def _filters(filters: dict[str, Any]) -> str:
    shown = []
    if _text(filters.get("source")):
        shown.append(f"source {_code(filters.get('source'))}")
    labels = _dict(filters.get("labels"))
    for key in sorted(labels, key=str):
        shown.append("label " + _code(f"{key}={_text(labels[key]) or ''}"))
    return ", ".join(shown)


def _empty(kind: str | None) -> str:
    what = {"recovery": "No restore tests", "sla": "No cases"}.get(kind or "", "No facts")
    return (
        f'<section class="empty" id="empty"><p><strong>{what} in this period.</strong></p>'
        "<p>There is nothing to chart or tabulate: the period holds no facts of this kind."
        "</p></section>\n"
    )


def _footer(doc: dict[str, Any]) -> str:
    schema = _text(doc.get("schema")) or "opsagent-report"
    return (
        f"<footer><p>The figures above come from the {_t(schema)} document embedded in this "
        "page. Check that neither was changed with <code>opsagent report verify FILE</code>. "
        "All times are UTC.</p></footer>"
    )


# --- recovery -----------------------------------------------------------------------------


def _recovery(rec: dict[str, Any]) -> str:
    sources = _dicts(rec.get("sources"))
    return "".join(
        [
            _sources_table(sources),
            _recovery_charts(rec),
            _coverage(_dict(rec.get("coverage"))),
            _failures(_dicts(rec.get("failures"))),
            _runs(sources),
        ]
    )


def _sources_table(sources: list[dict[str, Any]]) -> str:
    columns = ["Source", "Host", "Tests", "Passed", "Failed", "Worst RTO / target", "Worst RPO"]
    rows = []
    for src in sources:
        runs = _dicts(src.get("runs"))
        rpos = [v for v in (_num(r.get("rpo_seconds")) for r in runs) if v is not None]
        failed = _num(src.get("failed"))
        rows.append(
            f'<tr class="{"fail" if failed else "pass"}"><td>{_source_name(src)}</td>'
            f"<td>{_t(_text(src.get('host')))}</td>"
            f'<td class="n">{_e(_count(src.get("tests")))}</td>'
            f'<td class="n">{_e(_count(src.get("passed")))}</td>'
            f'<td class="n{" bad" if failed else ""}">{_e(_count(failed))}</td>'
            f"<td>{_against(src.get('worst_rto_seconds'), src.get('rto_target_seconds'))}</td>"
            f"<td>{_against(max(rpos) if rpos else None, src.get('rpo_target_seconds'))}</td></tr>"
        )
    return _section("sources", "Sources", _table(columns, rows, "No sources."))


def _recovery_charts(rec: dict[str, Any]) -> str:
    return (
        '<section id="charts"><h2>Charts</h2>'
        + _figure(_rto_chart(_dicts(rec.get("rto_series"))), "RTO of every restore test")
        + _figure(_coverage_chart(_dict(rec.get("coverage"))), "Packs re-read in the window")
        + "</section>\n"
    )


def _rto_chart(points: list[dict[str, Any]]) -> str:
    by_source: dict[str, list[svg.Point]] = {}
    targets: dict[float, list[str]] = {}
    for p in points:
        name = _text(p.get("source")) or "?"
        rto, target, at = _num(p.get("rto_seconds")), _num(p.get("target_seconds")), _epoch(p)
        if at is None:
            continue
        missed = rto is not None and target is not None and rto > target
        by_source.setdefault(name, []).append(svg.Point(at, rto, missed))
        if target is not None and name not in targets.setdefault(target, []):
            targets[target].append(name)
    names = sorted(by_source)
    one = len(targets) == 1
    # a target line takes its source's colour only when it is that source's alone
    lines = [
        svg.Target(
            value,
            f"target {human_duration(value)}" + ("" if one else ": " + few(who, 2)),
            names.index(who[0]) if len(who) == 1 and not one else None,
        )
        for value, who in sorted(targets.items())
    ]
    series = [svg.Series(n, tuple(sorted(by_source[n], key=lambda q: q.x))) for n in names]
    known = [p.y for s in series for p in s.points if p.y is not None]
    missed = sum(p.missed for s in series for p in s.points)
    desc = (
        f"{len(known)} restore tests of {len(series)} sources; "
        + (f"longest RTO {human_duration(max(known))}; " if known else "")
        + "; ".join(t.label for t in lines)
        + f"; {missed} over target."
    )
    axis = svg.Axis(human_duration, log=True, ticks=_DURATION_TICKS)
    return svg.line_chart("chart-rto", "RTO over time against target", desc, series, axis, lines)


def _coverage_chart(coverage: dict[str, Any]) -> str:
    points = []
    for p in _dicts(coverage.get("series")):
        when = _time(p.get("date"))
        if when is not None:
            points.append(svg.Point(when.timestamp(), _num(p.get("percent"))))
    known = [p.y for p in points if p.y is not None]
    desc = f"{len(points)} days" + (
        f"; from {_pct(known[0])} to {_pct(known[-1])} of packs re-read" if known else ""
    )
    series = [svg.Series("packs re-read in the window", tuple(points))]
    axis = svg.Axis(lambda v: f"{v:g} %", low=0.0, high=100.0)
    full = [svg.Target(100.0, "full coverage")]
    return svg.line_chart("chart-coverage", "Coverage over time", desc, series, axis, full)


def _coverage(cov: dict[str, Any]) -> str:
    window = _num(cov.get("window_days"))
    facts = [
        ("Packs in the repository", _e(_count(cov.get("packs_total")))),
        (
            "Re-read in the last " + (f"{_count(window)} days" if window is not None else "window"),
            f"{_e(_count(cov.get('packs_read_in_period')))} ({_e(_pct(cov.get('percent')))})",
        ),
        ("Days to full coverage at the current budget", _e(_days(cov.get("days_to_full")))),
    ]
    rows = "".join(f"<dt>{_e(name)}</dt><dd>{value}</dd>" for name, value in facts)
    return _section("coverage", "Verification coverage", f'<dl class="facts">{rows}</dl>')


def _failures(failures: list[dict[str, Any]]) -> str:
    if not failures:
        return _section("failures", "Failures", "<p>No restore test failed in this period.</p>")
    columns = ["When", "Source", "Host", "What failed", "Case", "Response", "Resolution"]
    rows = []
    for f in failures:
        case = _dict(f.get("case"))
        rows.append(
            f'<tr class="fail"><td>{_when(f.get("at"))}</td>'
            f"<td>{_t(_text(f.get('source')))}</td><td>{_t(_text(f.get('host')))}</td>"
            f"<td>{_t(_text(f.get('summary')))}</td><td>{_case_ref(case)}</td>"
            f"<td>{_case_clock(case, 'response')}</td>"
            f"<td>{_case_clock(case, 'resolution')}</td></tr>"
        )
    return _section("failures", "Failures", _table(columns, rows, ""))


def _runs(sources: list[dict[str, Any]]) -> str:
    blocks = []
    for src in sources:
        runs = _dicts(src.get("runs"))
        failed = [r for r in runs if r.get("ok") is not True]
        columns = ["When", "Snapshot", "RPO", "RTO / target", "Steps", "Compared", "Result"]
        host = _text(src.get("host"))
        table = _table(columns, [_run_row(r, host) for r in runs], "No runs.")
        summary = f"{_source_name(src)} on {_t(host)}: {len(runs)} tests"
        if failed:
            summary += f', <span class="bad">{len(failed)} not passed</span>'
        blocks.append(
            f"<details{' open' if failed else ''}><summary>{summary}</summary>{table}</details>"
        )
    return _section("runs", "Restore tests", "".join(blocks) or "<p>No sources.</p>")


def _run_row(run: dict[str, Any], source_host: str | None) -> str:
    """One restore test; its host is named only when it is not the source's."""
    ok = run.get("ok")
    snapshot = _code(run.get("snapshot"))
    taken = run.get("snapshot_time")
    if taken is not None:
        age = human_duration(run.get("snapshot_age_seconds"))
        snapshot += f"<br><small>taken {_when(taken)}, age {_e(age)}</small>"
    result = "passed" if ok is True else ("FAILED" if ok is False else "unknown")
    case = _dict(run.get("case"))
    if case:
        result += f"<br><small>{_case_ref(case)}</small>"
    host = _text(run.get("host"))
    when = _when(run.get("at"))
    if host and host != source_host:
        when += f"<br><small>on {_t(host)}</small>"
    return (
        f'<tr class="{"pass" if ok is True else "fail"}"><td>{when}</td><td>{snapshot}</td>'
        f'<td class="nw">{_e(human_duration(run.get("rpo_seconds")))}</td>'
        f"<td>{_against(run.get('rto_seconds'), run.get('rto_target_seconds'))}</td>"
        f"<td>{_steps(_dicts(run.get('steps')))}</td><td>{_compared(_dict(run.get('compared')))}</td>"
        f'<td class="{"ok" if ok is True else "bad"}">{result}</td></tr>'
    )


def _steps(steps: list[dict[str, Any]]) -> str:
    if not steps:
        return DASH
    items = []
    for step in steps:
        ok = step.get("ok")
        mark = '<span class="ok">✓</span>' if ok is True else '<span class="bad">✗</span>'
        summary = _text(step.get("summary"))
        # a passed step's summary says what was checked (kept as a tooltip and in the JSON);
        # a failed one's says what went wrong, which belongs on the page and on paper
        tip = f' title="{_e(summary)}"' if summary and ok is True else ""
        name = _text(step.get("name")) or ""
        short = len(printable(name)) <= 16  # a long (or escaped) name may wrap, no other
        line = ' class="nw"' if short else ""
        items.append(
            f"<li{line}{tip}>{mark} {_t(name)} "
            f"{_e(human_duration(step.get('seconds')))}"
            + (f'<br><small class="why">{_t(summary)}</small>' if tip == "" and summary else "")
            + "</li>"
        )
    return f'<ul class="steps">{"".join(items)}</ul>'


def _compared(compared: dict[str, Any]) -> str:
    shown = []
    for key, words in (
        ("files_rechunked", "files re-chunked"),
        ("tables_counted", "tables counted"),
        ("sql_assertions", "SQL assertions"),
    ):
        if _num(compared.get(key)) is not None:
            shown.append(f'<span class="nw">{_e(_count(compared.get(key)))} {words}</span>')
    fingerprint = _text(compared.get("schema_fingerprint"))
    if fingerprint:
        short = fingerprint if len(fingerprint) <= 20 else fingerprint[:19] + "…"
        shown.append(f'schema <code title="{_e(fingerprint)}">{_t(short)}</code>')
    return "<br>".join(shown) or DASH


# --- service levels -----------------------------------------------------------------------


def _sla(sla: dict[str, Any]) -> str:
    return "".join(
        [
            _calendar(_dict(sla.get("calendar")), _dict(sla.get("targets"))),
            _sla_table(_dicts(sla.get("rows"))),
            _sla_charts(sla),
            _breaches(_dicts(sla.get("breaches"))),
        ]
    )


def _calendar(cal: dict[str, Any], targets: dict[str, Any]) -> str:
    holidays = _dicts(cal.get("holidays_in_period"))
    days = ", ".join(_t(_text(d)) for d in _list(cal.get("weekdays"))) or DASH
    facts = [
        ("Business hours", _t(_text(cal.get("hours")))),
        ("Working days", days),
        ("Time zone", _t(_text(cal.get("timezone")))),
        (
            "Holidays in the period",
            ", ".join(f"{_t(_text(h.get('date')))} {_t(_text(h.get('name')))}" for h in holidays)
            or "none",
        ),
    ]
    rows = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in facts)
    trs = []
    for severity in _ordered(targets):
        t = _dict(targets[severity])
        business = t.get("business")
        clock = "business hours" if business is True else DASH
        clock = "around the clock" if business is False else clock
        trs.append(
            f"<tr><td>{_t(severity)}</td><td>{_target(t, 'response')}</td>"
            f"<td>{_target(t, 'resolution')}</td><td>{clock}</td></tr>"
        )
    table = _table(["Severity", "Respond within", "Resolve within", "Clock"], trs, "No targets.")
    return (
        '<section id="calendar"><h2>Calendar and targets</h2>'
        f'<p class="calendar">{_t(_text(cal.get("description")) or "No calendar described.")}</p>'
        f'<dl class="facts">{rows}</dl>'
        "<p>Times below are UTC; business-hours clocks run in the calendar's time zone.</p>"
        f"{table}</section>\n"
    )


def _target(target: dict[str, Any], which: str) -> str:
    written = _text(target.get(which))
    seconds = target.get(f"{which}_seconds")
    return _t(written) if written else _e(human_duration(seconds))


def _sla_table(rows: list[dict[str, Any]]) -> str:
    columns = [
        "Severity",
        "Cases",
        "Response median",
        "Response p90",
        "Resolution median",
        "Resolution p90",
        "Breaches",
        "Compliance",
    ]
    trs = []
    for row in rows:
        breached = _num(row.get("breached"))
        durations = "".join(
            f'<td class="n">{_e(human_duration(row.get(key)))}</td>'
            for key in (
                "respond_median_seconds",
                "respond_p90_seconds",
                "resolve_median_seconds",
                "resolve_p90_seconds",
            )
        )
        trs.append(
            f'<tr class="{"fail" if breached else "pass"}">'
            f"<td>{_t(_text(row.get('severity')))}</td>"
            f'<td class="n">{_e(_count(row.get("cases")))}</td>{durations}'
            f'<td class="n{" bad" if breached else ""}">{_e(_count(breached))}</td>'
            f'<td class="n">{_e(_pct(row.get("compliance_percent")))}</td></tr>'
        )
    return _section("levels", "Service levels", _table(columns, trs, "No severities."))


def _sla_charts(sla: dict[str, Any]) -> str:
    return (
        '<section id="charts"><h2>Charts</h2>'
        + _figure(_weekly_chart(_dicts(sla.get("weekly"))), "Cases opened and resolved per week")
        + _figure(
            _response_chart(_dicts(sla.get("responses")), _dict(sla.get("targets"))),
            "Time to first response of every case",
        )
        + "</section>\n"
    )


def _weekly_chart(weeks: list[dict[str, Any]]) -> str:
    names = [_text(w.get("week")) or "?" for w in weeks]
    years = {n[:5] for n in names if len(n) == 8 and n[4:6] == "-W"}
    if len(years) == 1 and all(n[:5] in years for n in names):
        names = [n[5:] for n in names]  # one year: `W45`, the period above says which
    opened = tuple(_num(w.get("opened")) for w in weeks)
    resolved = tuple(_num(w.get("resolved")) for w in weeks)
    desc = f"{len(weeks)} weeks; " + (
        f"{_count(sum(v for v in opened if v))} cases opened, "
        f"{_count(sum(v for v in resolved if v))} resolved."
    )
    bars = [svg.Bars("opened", opened), svg.Bars("resolved", resolved)]
    axis = svg.Axis(_count)
    return svg.bar_chart(
        "chart-weekly", "Cases opened and resolved per week", desc, names, bars, axis
    )


def _response_chart(responses: list[dict[str, Any]], targets: dict[str, Any]) -> str:
    by_severity: dict[str, list[svg.Point]] = {}
    for r in responses:
        when = _time(r.get("opened"))
        if when is None:
            continue
        severity = _text(r.get("severity")) or "?"
        seconds, target = _num(r.get("response_seconds")), _num(r.get("target_seconds"))
        over = seconds is not None and target is not None and seconds > target
        missed = r.get("met") is False or over
        by_severity.setdefault(severity, []).append(svg.Point(when.timestamp(), seconds, missed))
    names = [s for s in _ordered(by_severity)]
    series = [
        svg.Series(n, tuple(sorted(by_severity[n], key=lambda p: p.x)), line=False) for n in names
    ]
    lines = []
    for index, name in enumerate(names):
        value = _num(_dict(targets.get(name)).get("response_seconds"))
        if value is not None:
            lines.append(svg.Target(value, f"{name} {human_duration(value)}", index))
    missed = sum(p.missed for s in series for p in s.points)
    desc = (
        f"{sum(len(s.points) for s in series)} cases; {missed} responded to after their target; "
        + "; ".join(f"{t.label} target" for t in lines)
    )
    axis = svg.Axis(human_duration, log=True, ticks=_DURATION_TICKS)
    return svg.line_chart(
        "chart-responses", "Response times against target", desc, series, axis, lines
    )


def _breaches(breaches: list[dict[str, Any]]) -> str:
    if not breaches:
        none = "<p>No case breached its targets in this period.</p>"
        return _section("breaches", "Breached cases", none)
    articles = []
    for case in breaches:
        facts = [
            ("Severity", _t(_text(case.get("severity")))),
            ("Status", _t(_text(case.get("status")))),
            ("Host", _t(_text(case.get("host")))),
            ("Opened", _when(case.get("opened"))),
            ("Response", _case_clock(case, "response")),
            ("Resolution", _case_clock(case, "resolution")),
        ]
        rows = "".join(f"<dt>{n}</dt><dd>{v}</dd>" for n, v in facts)
        events = "".join(
            f"<li><time>{_when(e.get('at'))}</time> "
            f"<strong>{_t(_text(e.get('kind')))}</strong>"
            + (f" by {_t(_text(e.get('actor')))}" if _text(e.get("actor")) else "")
            + (f": {_t(_text(e.get('text')))}" if _text(e.get("text")) else "")
            + "</li>"
            for e in _dicts(case.get("timeline"))
        )
        articles.append(
            f'<article class="case"><h3>Case #{_e(_count(case.get("id")))}: '
            f"{_t(_text(case.get('title')))}</h3>"
            f'<dl class="facts">{rows}</dl>'
            f'<ol class="timeline">{events or "<li>No timeline recorded.</li>"}</ol></article>'
        )
    return _section("breaches", "Breached cases", "".join(articles))


# --- fleet --------------------------------------------------------------------------------


def _per_host(hosts: list[dict[str, Any]]) -> str:
    columns = ["Host", "Status", "Sources", "Tests", "Passed", "Failed", "Coverage", "Worst RTO"]
    rows = []
    for h in hosts:
        ok = h.get("ok")
        error = _text(h.get("error"))
        status = (
            '<span class="ok">ok</span>'
            if ok is True
            else f'<span class="bad">failed</span>{": " + _t(error) if error else ""}'
        )
        failed = _num(h.get("failed"))
        rows.append(
            f'<tr class="{"pass" if ok is True and not failed else "fail"}">'
            f"<td>{_t(_text(h.get('host')))}</td><td>{status}</td>"
            + "".join(
                f'<td class="n">{_e(_count(h.get(k)))}</td>' for k in ("sources", "tests", "passed")
            )
            + f'<td class="n{" bad" if failed else ""}">{_e(_count(failed))}</td>'
            f'<td class="n">{_e(_pct(h.get("coverage_percent")))}</td>'
            f'<td class="n">{_e(human_duration(h.get("worst_rto_seconds")))}</td></tr>'
        )
    return _section("per-host", "Hosts", _table(columns, rows, "No hosts."))


# --- small pieces -------------------------------------------------------------------------


def _figure(chart: str, caption: str) -> str:
    return f'<figure class="chart">{chart}<figcaption>{_e(caption)}</figcaption></figure>'


def _section(section_id: str, title: str, body: str) -> str:
    return f'<section id="{section_id}"><h2>{_e(title)}</h2>{body}</section>\n'


def _table(columns: list[str], rows: list[str], none: str) -> str:
    """A table with its header; one row saying `none` when there are no rows."""
    head = "".join(f'<th scope="col">{_e(n)}</th>' for n in columns)
    body = "".join(rows) or f'<tr><td colspan="{len(columns)}">{_e(none)}</td></tr>'
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _source_name(src: dict[str, Any]) -> str:
    name, kind = _text(src.get("name")), _text(src.get("kind"))
    return _t(name) + (f" <small>{_t(kind)}</small>" if kind and kind != name else "")


def _against(value: Any, target: Any) -> str:
    """`9m12s / 6h` marked over or within target; `(no target)` when none is set."""
    v, t = _num(value), _num(target)
    if t is None:
        return f'<span class="nw">{_e(human_duration(v))}</span> <small>(no target)</small>'
    over = v is not None and v > t
    mark = ' <span class="bad">over</span>' if over else ""
    shown = f'<span class="bad">{_e(human_duration(v))}</span>' if over else _e(human_duration(v))
    return f'<span class="nw">{shown} / {_e(human_duration(t))}</span>{mark}'


def _case_ref(case: dict[str, Any]) -> str:
    if not case:
        return "no case"
    severity, status = _text(case.get("severity")), _text(case.get("status"))
    extra = ", ".join(_t(x) for x in (severity, status) if x)
    return f"case #{_e(_count(case.get('id')))} {_t(_text(case.get('title')))}" + (
        f" <small>({extra})</small>" if extra else ""
    )


def _case_clock(case: dict[str, Any], which: str) -> str:
    """How long the response or resolution took and whether it met its due time."""
    if not case:
        return DASH
    seconds = _num(case.get(f"{which}_seconds"))
    met = case.get(f"{which}_met")
    due = case.get(f"{which}_due")
    text = _e(human_duration(seconds)) if seconds is not None else "not yet"
    if met is True:
        text += ' <span class="ok">met</span>'
    elif met is False:
        text += ' <span class="bad">missed</span>'
    if due is not None:
        text += f"<br><small>due {_when(due)}</small>"
    return text


def _ordered(keys: Any) -> list[str]:
    """Severities critical → minor first, then any other in name order."""
    names = [str(k) for k in keys]
    return [s for s in SEVERITIES if s in names] + sorted(n for n in names if n not in SEVERITIES)


def _when(value: Any) -> str:
    """A time for a table cell: date and time each kept on one line."""
    text = utc_time(value)
    if _time(value) is None:
        return _e(text)
    day, _, clock = text.partition(" ")
    return f'<span class="nw">{day}</span> <span class="nw">{clock}</span>'


def _count(value: Any) -> str:
    v = _num(value)
    if v is None:
        return DASH
    return f"{v:,.0f}" if v == int(v) else f"{v:,.1f}"


def _pct(value: Any) -> str:
    v = _num(value)
    if v is None:
        return DASH
    return (f"{v:.0f}" if v == int(v) else f"{v:.1f}") + "\u00a0%"


def _days(value: Any) -> str:
    v = _num(value)
    if v is None:
        return DASH
    return "already full" if v <= 0 else f"{v:.1f} days" if v != int(v) else f"{v:.0f} days"


def _code(value: Any) -> str:
    text = _text(value)
    return f"<code>{_t(text)}</code>" if text else DASH


def _t(text: str | None) -> str:
    """Data text, escaped; isolated with <bdi> when not plain ASCII so right-to-left text
    cannot reorder what surrounds it."""
    if not text:
        return DASH
    more = ""
    if len(text) > SHOWN_CHARACTERS:  # a 100 kB name would be a cell dozens of screens tall
        hidden = len(text) - SHOWN_CHARACTERS
        more = f" <small>(+{hidden} characters, in the embedded document)</small>"
        text = text[:SHOWN_CHARACTERS] + "…"
    escaped = _e(text)
    return (escaped if text.isascii() else f"<bdi>{escaped}</bdi>") + more


def _e(text: str) -> str:
    """HTML-escaped; control and direction characters as escapes, lone surrogates as U+FFFD."""
    return html.escape(_SURROGATE.sub("\ufffd", printable(text)), quote=True)


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    try:
        return when.astimezone(UTC)
    except (OverflowError, ValueError):
        return None


def _epoch(point: dict[str, Any]) -> float | None:
    when = _time(point.get("at"))
    return when.timestamp() if when else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in _list(value) if isinstance(v, dict)]


CSS = """
:root{--bg:#fff;--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--panel:#f6f8fa;--ok:#1a7f37;
--bad:#cf222e;--accent:#0969da;--c0:#0969da;--c1:#bf3989;--c2:#1a7f37;--c3:#9a6700;
--c4:#8250df;--c5:#0e7490;--c6:#bc4c00;--c7:#59636e}
@media screen and (prefers-color-scheme:dark){:root{--bg:#0d1117;--fg:#e6edf3;--muted:#9198a1;
--line:#3d444d;--panel:#151b23;--ok:#3fb950;--bad:#f85149;--accent:#4493f8;--c0:#4493f8;
--c1:#db61a2;--c2:#3fb950;--c3:#d29922;--c4:#a371f7;--c5:#39c5cf;--c6:#f0883e;--c7:#9198a1}}
*{box-sizing:border-box}
html{background:var(--bg);color:var(--fg)}
body{margin:0 auto;max-width:64rem;padding:1.5rem 1.25rem;overflow-wrap:anywhere;
font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
h1{font-size:1.7em;margin:0 0 .4em}
h2{font-size:1.25em;margin:1.6em 0 .5em;padding-bottom:.2em;border-bottom:1px solid var(--line)}
h3{font-size:1.05em;margin:1em 0 .4em}
.headline{font-size:1.15em;font-weight:600;margin:0 0 1em;padding:.7em .9em;
border-left:5px solid var(--accent);background:var(--panel)}
dl.facts{display:grid;grid-template-columns:minmax(8em,max-content) 1fr;gap:.25em 1.2em;
margin:0 0 1em;padding:.7em .9em;border:1px solid var(--line);border-radius:6px}
dl.facts dt{color:var(--muted)}
dl.facts dd{margin:0;min-width:0}
code{font:.88em/1.3 ui-monospace,"DejaVu Sans Mono",monospace}
small{color:var(--muted)}
table{border-collapse:collapse;width:100%;font-size:.88em;margin:.4em 0 1em}
th,td{padding:.3em .45em;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{background:var(--panel);font-weight:600}
th{overflow-wrap:normal}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.nw{white-space:nowrap}
tr.fail td:first-child{box-shadow:inset 3px 0 var(--bad)}
.ok{color:var(--ok)}
.bad{color:var(--bad);font-weight:600}
ul.steps{margin:0;padding:0;list-style:none}
ul.steps small.why{white-space:normal}
ol.timeline{margin:.3em 0 1em;padding-left:1.4em}
ol.timeline time{font-variant-numeric:tabular-nums;color:var(--muted)}
details{margin:.4em 0;border:1px solid var(--line);border-radius:6px;padding:.3em .6em}
summary{cursor:pointer;font-weight:600}
details table{margin-top:.5em}
article.case{border:1px solid var(--line);border-radius:6px;padding:.2em .9em;margin:.8em 0}
figure.chart{margin:1em 0 1.5em}
figcaption{color:var(--muted);font-size:.9em;text-align:center}
svg.chart{display:block;width:100%;height:auto;color:var(--fg)}
svg.chart text{fill:currentColor;font-size:12px;font-family:inherit}
svg.chart .tick,svg.chart .axis-label{fill:var(--muted)}
svg.chart .axis{stroke:var(--muted);stroke-width:1}
svg.chart .grid{stroke:var(--line);stroke-dasharray:2 3}
svg.chart .frame{fill:none;stroke:var(--line)}
svg.chart .no-data{fill:var(--muted);font-size:15px}
svg.chart polyline.series{fill:none;stroke:var(--c);stroke-width:1.6;stroke-linejoin:round}
svg.chart .dot,svg.chart .bar{fill:var(--c);stroke:none}
svg.chart line.target{stroke:var(--c,var(--fg));stroke-width:1.4;stroke-dasharray:7 4}
svg.chart text.target-label{fill:var(--c,currentColor);font-weight:600;paint-order:stroke;
stroke:var(--bg);stroke-width:3px;stroke-linejoin:round}
svg.chart .miss{fill:none;stroke:var(--bad);stroke-width:1.8}
svg.chart .value{font-size:10px}
.s0{--c:var(--c0)}.s1{--c:var(--c1)}.s2{--c:var(--c2)}.s3{--c:var(--c3)}
.s4{--c:var(--c4)}.s5{--c:var(--c5)}.s6{--c:var(--c6)}.s7{--c:var(--c7)}
.empty{margin:1.5em 0;padding:1.5em;border:2px dashed var(--line);border-radius:8px;
text-align:center;font-size:1.1em}
footer{margin-top:2.5em;padding-top:.6em;border-top:1px solid var(--line);color:var(--muted);
font-size:.85em}
@page{size:auto;margin:12mm}
@media print{
*{-webkit-print-color-adjust:exact;print-color-adjust:exact}
body{max-width:none;padding:0;font-size:10pt}
tr,figure,article.case,dl.facts,.headline{break-inside:avoid}
thead{display:table-header-group}
h2,h3,summary{break-after:avoid}
details{border:0;padding:0}
details::details-content{content-visibility:visible;display:block}
summary{list-style:none}
}
"""
