"""Sample report documents (opsagent-report/1) for the HTML rendering's tests.

They follow the contract in docs (issue #21) field for field: a recovery report with several
sources, passes, failures and a coverage series; a service-level report with breaches; a fleet
report with a per-host table; empty reports; a report full of hostile strings. Built from fixed
numbers (no clock, no randomness) and signed with a fixed Ed25519 key, like a real report.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

UNTIL = datetime(2026, 12, 2, 20, 0, tzinfo=UTC)
SINCE = UNTIL - timedelta(days=90)
HOSTILE = [
    "</script><script>alert('title')</script>",
    '<img src=x onerror="alert(1)">',
    "\"quotes\" 'single' & &amp; <b>bold</b>",
    "<!--<script>",
    "bad \ufffd byte",
    "\u202eevil\u202c right-to-left override",
    "שרת-גיבוי",
    "nul\x00 and escape \x1b[31m",
    "x" * 300,
]


def recovery_doc() -> dict[str, Any]:
    """90 days, four sources on three hosts; two failed tests with cases, one over its RTO."""
    sources = [
        _source("files", "files", "web1", 6 * 3600.0, 26 * 3600.0, 552.0),
        _source("orders-db", "postgres", "db1", 2 * 3600.0, 26 * 3600.0, 1310.0),
        _source("shop", "mysql", "db1", 3600.0, 26 * 3600.0, 840.0),
        _source("media", "files", "web2", None, None, 2900.0),
    ]
    _fail(sources[1]["runs"][4], "compare", _case(7, "orders-db restore test failed", True))
    slow = sources[2]["runs"][9]
    slow["rto_seconds"] = 4100.0
    _fail(slow, "restore", _case(9, "shop restore slower than its RTO", False))
    for src in sources:
        runs = src["runs"]
        src["tests"] = len(runs)
        src["passed"] = sum(r["ok"] for r in runs)
        src["failed"] = len(runs) - src["passed"]
        src["worst_rto_seconds"] = max(r["rto_seconds"] for r in runs)
    runs = [(s, r) for s in sources for r in s["runs"]]
    doc = _base("recovery", ["db1", "web1", "web2"])
    doc["headline"] = (
        "4 sources, 60 restore tests, 58 passed, 2 failures, 1 resolved within target; "
        "100 % of packs re-read in the last 31 days; worst RTO 1h8m (target 1h)"
    )
    doc["recovery"] = {
        "sources": sources,
        "coverage": {
            "packs_total": 1234,
            "packs_read_in_period": 1234,
            "percent": 100.0,
            "window_days": 31,
            "days_to_full": 0.0,
            "series": [
                {
                    "date": (SINCE + timedelta(days=d)).date().isoformat(),
                    "percent": min(100.0, round(12.0 + d * 3.2, 1)),
                }
                for d in range(90)
            ],
        },
        "rto_series": [
            {
                "at": r["at"],
                "source": s["name"],
                "rto_seconds": r["rto_seconds"],
                "target_seconds": s["rto_target_seconds"],
            }
            for s, r in sorted(runs, key=lambda sr: sr[1]["at"])
        ],
        "failures": [
            {
                "at": r["at"],
                "source": s["name"],
                "host": r["host"],
                "summary": next(st["summary"] for st in r["steps"] if not st["ok"]),
                "case": r["case"],
            }
            for s, r in runs
            if not r["ok"]
        ],
    }
    return signed(doc)


def sla_doc() -> dict[str, Any]:
    """30 days of cases: three severities, two breaches with their timelines, a holiday."""
    doc = _base("sla", ["db1", "web1"])
    doc["title"] = "Service levels"
    doc["period"] = {
        "since": (UNTIL - timedelta(days=91)).isoformat(),
        "until": UNTIL.isoformat(),
        "days": 91,
    }
    doc["filters"] = {"source": None, "labels": {"client": "acme"}}
    doc["headline"] = (
        "31 cases, 29 within target (93.5 %); 2 breaches: 1 critical, 1 major; "
        "critical median response 22m (target 4h)"
    )
    targets = {
        "critical": _target(4 * 3600, 24 * 3600, False, "4h", "24h"),
        "major": _target(10 * 3600, 3 * 86400, True, "1 business day", "3 business days"),
        "minor": _target(2 * 86400, 10 * 86400, True, "2 business days", "10 business days"),
    }
    responses = []
    for i in range(31):
        severity = ("critical", "major", "minor")[i % 3]
        opened = UNTIL - timedelta(days=90) + timedelta(days=i * 2.9, hours=i % 7)
        seconds = 600.0 + (i * 977) % (8 * 3600) * (1 if severity != "minor" else 6)
        target = targets[severity]["response_seconds"]
        if i == 12:
            seconds = 6 * 3600.0  # the critical breach
        responses.append(
            {
                "case": 100 + i,
                "severity": severity,
                "opened": opened.isoformat(),
                "response_seconds": seconds,
                "target_seconds": float(target),
                "met": seconds <= target,
            }
        )
    r12, r19 = responses[12]["opened"], responses[19]["opened"]
    doc["sla"] = {
        "calendar": {
            "description": "Mon-Fri 08:00-18:00 America/Toronto, CA-ON public holidays",
            "timezone": "America/Toronto",
            "hours": "08:00-18:00",
            "weekdays": ["mon", "tue", "wed", "thu", "fri"],
            "holidays_in_period": [{"date": "2026-10-12", "name": "Thanksgiving"}],
        },
        "targets": targets,
        "rows": [
            _row("critical", 11, 1320.0, 9000.0, 14000.0, 60000.0, 1),
            _row("major", 10, 5400.0, 30000.0, 90000.0, 200000.0, 1),
            _row("minor", 10, 40000.0, 120000.0, 300000.0, 700000.0, 0),
        ],
        "breaches": [
            {
                **_case(112, "Disk full on db1, PostgreSQL read-only", False, "critical", r12),
                "timeline": _timeline(r12, 5 * 3600, 40 * 3600),
            },
            {
                **_case(119, "Backups of web1 late two days running", True, "major", r19),
                "response_met": False,
                "timeline": _timeline(r19, 5 * 3600, 7200),
            },
        ],
        "weekly": [
            {"week": f"2026-W{w}", "opened": (w * 7) % 5 + 1, "resolved": (w * 5) % 4 + 1}
            for w in range(36, 49)
        ],
        "responses": responses,
    }
    return signed(doc)


def fleet_doc() -> dict[str, Any]:
    """The recovery report merged over a fleet: a per-host table with one unreachable host."""
    doc = copy.deepcopy(recovery_doc())
    doc.pop("signature")
    doc["hosts"] = ["db1", "db3", "web1", "web2"]
    doc["per_host"] = [
        _host("db1", 2, 30, 28, 100.0, 4100.0),
        {
            "host": "db3",
            "ok": False,
            "error": "ssh: connection timed out after 30s",
            "sources": None,
            "tests": None,
            "passed": None,
            "failed": None,
            "coverage_percent": None,
            "worst_rto_seconds": None,
        },
        _host("web1", 1, 15, 15, 100.0, 552.0),
        _host("web2", 1, 15, 15, 97.5, 2900.0),
    ]
    return signed(doc)


def empty_doc(kind: str = "recovery") -> dict[str, Any]:
    """A report over a period with no facts: says so, every list empty."""
    doc = _base(kind, ["web1"])
    doc["empty"] = True
    if kind == "recovery":
        doc["headline"] = "No restore tests in this period"
        doc["recovery"] = {
            "sources": [],
            "coverage": {
                "packs_total": 0,
                "packs_read_in_period": 0,
                "percent": None,
                "window_days": 31,
                "days_to_full": None,
                "series": [],
            },
            "rto_series": [],
            "failures": [],
        }
    else:
        doc["title"] = "Service levels"
        doc["headline"] = "No cases in this period"
        doc["sla"] = {
            "calendar": None,
            "targets": {},
            "rows": [],
            "breaches": [],
            "weekly": [],
            "responses": [],
        }
    return signed(doc)


def hostile_doc(kind: str = "recovery") -> dict[str, Any]:
    """Every string a person or a remote host controls replaced by something nasty."""
    doc = copy.deepcopy(recovery_doc() if kind == "recovery" else sla_doc())
    doc.pop("signature")
    counter = iter(range(10**6))

    def nasty(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: nasty(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [nasty(v, key) for v in value]
        keep = key in {"schema", "kind", "at", "since", "until", "opened", "date"} or key.endswith(
            ("_at", "_due", "_time")
        )
        if isinstance(value, str) and not keep:
            return HOSTILE[next(counter) % len(HOSTILE)]
        return value

    doc = nasty(doc)
    doc["title"] = HOSTILE[0]
    doc["hosts"] = list(HOSTILE)
    doc["filters"] = {"source": HOSTILE[1], "labels": {HOSTILE[2]: HOSTILE[0]}}
    return signed(doc)


def unsigned(doc: dict[str, Any]) -> dict[str, Any]:
    """The document without its signature (as `--no-sign` would write it)."""
    return {k: v for k, v in doc.items() if k != "signature"}


def signed(doc: dict[str, Any]) -> dict[str, Any]:
    """The document signed as the contract says: Ed25519 over its canonical JSON."""
    key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"opsagent test key").digest())
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    body = unsigned(doc)
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return {
        **body,
        "signature": {
            "algorithm": "ed25519",
            "key_id": "sha256:" + hashlib.sha256(public).hexdigest(),
            "public_key": base64.b64encode(public).decode(),
            "value": base64.b64encode(key.sign(canonical.encode())).decode(),
        },
    }


def _base(kind: str, hosts: list[str]) -> dict[str, Any]:
    return {
        "schema": "opsagent-report/1",
        "kind": kind,
        "title": "Recovery evidence" if kind == "recovery" else "Service levels",
        "generated_at": UNTIL.isoformat(),
        "period": {"since": SINCE.isoformat(), "until": UNTIL.isoformat(), "days": 90},
        "hosts": hosts,
        "opsagent_version": "0.9.0",
        "repository": {
            "url": "s3://acme-backups/opsagent",
            "key_fingerprint": "sha256:" + hashlib.sha256(b"repository key").hexdigest(),
        },
        "filters": {"source": None, "labels": {}},
        "headline": "",
        "empty": False,
    }


def _source(
    name: str,
    kind: str,
    host: str,
    rto_target: float | None,
    rpo_target: float | None,
    rto: float,
) -> dict[str, Any]:
    runs = []
    for n in range(15):
        at = SINCE + timedelta(days=3 + n * 6, hours=2, minutes=len(name))
        age = 3600.0 * (1 + (n * 7 + len(name)) % 20)
        took = rto * (0.8 + ((n * 13) % 9) / 20)
        runs.append(
            {
                "at": at.isoformat(),
                "host": host,
                "run_id": hashlib.sha256(f"{name}{n}".encode()).hexdigest()[:16],
                "ok": True,
                "snapshot": hashlib.sha256(f"snap{name}{n}".encode()).hexdigest()[:8],
                "snapshot_time": (at - timedelta(seconds=age)).isoformat(),
                "snapshot_age_seconds": age,
                "rpo_seconds": age,
                "rto_seconds": round(took, 1),
                "rto_target_seconds": rto_target,
                "steps": _steps(kind, took),
                "compared": {
                    "files_rechunked": 1200 + n if kind == "files" else None,
                    "tables_counted": 14 if kind != "files" else None,
                    "schema_fingerprint": (
                        "sha256:" + hashlib.sha256(name.encode()).hexdigest()
                        if kind != "files"
                        else None
                    ),
                    "sql_assertions": 3 if kind != "files" else None,
                },
                "case": None,
            }
        )
    return {
        "name": name,
        "kind": kind,
        "host": host,
        "tests": 0,
        "passed": 0,
        "failed": 0,
        "worst_rto_seconds": None,
        "rto_target_seconds": rto_target,
        "rpo_target_seconds": rpo_target,
        "runs": runs,
    }


def _steps(kind: str, took: float) -> list[dict[str, Any]]:
    names = ["fetch", "restore", "compare"] if kind == "files" else ["fetch", "load", "compare"]
    shares = (0.2, 0.7, 0.1)
    summaries = {
        "fetch": "snapshot tree and packs fetched",
        "restore": "files restored to a scratch directory",
        "load": f"dump loaded into a scratch {kind} database",
        "compare": "contents match the snapshot",
    }
    return [
        {"name": n, "ok": True, "seconds": round(took * s, 1), "summary": summaries[n]}
        for n, s in zip(names, shares, strict=True)
    ]


def _fail(run: dict[str, Any], step: str, case: dict[str, Any]) -> None:
    run["ok"] = False
    run["case"] = case
    for s in run["steps"]:
        if s["name"] == step or (step == "restore" and s["name"] == "load"):
            s["ok"] = False
            s["summary"] = "3 rows differ in table orders" if step == "compare" else "took too long"
            break


def _case(
    number: int, title: str, within: bool, severity: str = "major", opened_at: str = ""
) -> dict[str, Any]:
    opened = datetime.fromisoformat(opened_at) if opened_at else UNTIL - timedelta(days=40 - number)
    response = 1800.0 if within else 5 * 3600.0
    resolution = 7200.0 if within else 40 * 3600.0
    return {
        "id": number,
        "title": title,
        "severity": severity,
        "status": "resolved",
        "host": "db1",
        "opened": opened.isoformat(),
        "responded_at": (opened + timedelta(seconds=response)).isoformat(),
        "resolved_at": (opened + timedelta(seconds=resolution)).isoformat(),
        "response_due": (opened + timedelta(hours=4)).isoformat(),
        "resolution_due": (opened + timedelta(hours=24)).isoformat(),
        "response_seconds": response,
        "resolution_seconds": resolution,
        "response_met": within,
        "resolution_met": within,
    }


def _timeline(opened: str, respond: float, resolve: float) -> list[dict[str, Any]]:
    start = datetime.fromisoformat(opened)
    return [
        {"at": opened, "kind": "opened", "actor": "opsagent", "text": "alert fired"},
        {
            "at": (start + timedelta(seconds=respond)).isoformat(),
            "kind": "responded",
            "actor": "alice",
            "text": "looking into it",
        },
        {
            "at": (start + timedelta(seconds=resolve)).isoformat(),
            "kind": "resolved",
            "actor": "alice",
            "text": "space freed, WAL archiving fixed",
        },
    ]


def _target(
    response: int, resolution: int, business: bool, r_text: str, s_text: str
) -> dict[str, Any]:
    return {
        "response_seconds": response,
        "resolution_seconds": resolution,
        "business": business,
        "response": r_text,
        "resolution": s_text,
    }


def _row(
    severity: str,
    cases: int,
    r_med: float,
    r_p90: float,
    s_med: float,
    s_p90: float,
    breached: int,
) -> dict[str, Any]:
    return {
        "severity": severity,
        "cases": cases,
        "respond_median_seconds": r_med,
        "respond_p90_seconds": r_p90,
        "resolve_median_seconds": s_med,
        "resolve_p90_seconds": s_p90,
        "breached": breached,
        "compliance_percent": round(100.0 * (cases - breached) / cases, 1),
    }


def _host(
    host: str, sources: int, tests: int, passed: int, coverage: float, rto: float
) -> dict[str, Any]:
    return {
        "host": host,
        "ok": True,
        "error": None,
        "sources": sources,
        "tests": tests,
        "passed": passed,
        "failed": tests - passed,
        "coverage_percent": coverage,
        "worst_rto_seconds": rto,
    }
