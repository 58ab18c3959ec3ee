"""Merging hosts' recovery reports: sources and failures of every host, packs of every
repository weighted together, a host that failed or whose report was changed a row with
its error."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from agents.reports.merge import merge_recovery
from agents.reports.recovery import RecoveryInputs, build_recovery
from agents.reports.signing import create_key, sign
from tests.support.reports import UNTIL, restore_run, valid

SINCE = UNTIL - timedelta(days=90)


def host_report(host: str, packs: int, fresh: int, rto: float, fail: str | None = None) -> dict:
    """A host's report: one restore test, `fresh` of `packs` packs read a day ago."""
    checked = {f"{host}-{i}": UNTIL - timedelta(days=1) for i in range(fresh)}
    return build_recovery(
        RecoveryInputs(
            runs=[restore_run("2026-11-15T10:00:00+00:00", rto, fail=fail, host=host)],
            cases=[],
            since=SINCE,
            until=UNTIL,
            packs={f"{host}-{i}": 100 for i in range(packs)},
            pack_checks=checked,
            full_every=timedelta(days=7),
            daily_budget=100,
            rto_target=3600.0,
            hosts=[host],
        )
    )


def test_hosts_merge_and_a_failed_or_changed_host_is_a_row(tmp_path: Path) -> None:
    key = create_key(tmp_path / "host.key")
    web1 = sign(host_report("web1", packs=10, fresh=10, rto=300.0), key)
    web2 = host_report("web2", packs=30, fresh=15, rto=700.0, fail="db")  # unsigned
    changed = sign(host_report("web3", packs=5, fresh=5, rto=100.0), key)
    changed["recovery"]["sources"][0]["passed"] = 2
    doc = merge_recovery(
        [
            ("web1", web1, None),
            ("web2", web2, None),
            ("web3", changed, None),
            ("web4", None, "web4 (127.0.0.1:22): connection refused"),
            ("web5", {"kind": "sla"}, None),
        ],
        SINCE,
        UNTIL,
        UNTIL,
    )
    valid(doc)
    rows = {r["host"]: r for r in doc["per_host"]}
    assert rows["web1"]["ok"] and rows["web1"]["key_id"] == web1["signature"]["key_id"]
    assert (rows["web1"]["tests"], rows["web1"]["coverage_percent"]) == (2, 100.0)
    assert rows["web2"]["ok"] and rows["web2"]["key_id"] is None
    assert (rows["web2"]["passed"], rows["web2"]["failed"]) == (1, 1)
    assert rows["web3"]["ok"] is False
    assert rows["web3"]["error"] == (
        "the host's report does not verify: signature does not match:"
        " the document was changed after it was signed"
    )
    assert rows["web4"]["error"] == "web4 (127.0.0.1:22): connection refused"
    assert rows["web5"]["error"] == "the host did not answer with a recovery report"
    cov = doc["recovery"]["coverage"]
    # 10 + 15 of 40 packs fresh; web2's 15 stale packs need 15 days at 100 bytes a day
    assert (cov["packs_total"], cov["packs_read_in_period"], cov["percent"]) == (40, 25, 62.5)
    assert cov["days_to_full"] == 15.0
    last = cov["series"][-1]
    assert last == {"date": "2026-12-02", "percent": 62.5}
    assert {s["host"] for s in doc["recovery"]["sources"]} == {"web1", "web2"}
    assert doc["headline"] == (
        "5 hosts (3 did not answer): 4 sources, 4 restore tests, 3 passed, 1 failure"
        " (1 without a case); 62.5 % of packs re-read in the last 7 days;"
        " worst RTO 11m40s (target 1h)"
    )
