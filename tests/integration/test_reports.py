"""Recovery and SLA reports built from real histories (restore-test runs in the state
database, cases in the SQLite and PostgreSQL case stores, a real restore test of a real
repository), their figures worked out by hand; signed, validated against the schema,
verified by `opsagent report verify`."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from agents.cases.store import CaseStore
from agents.config import CasesConfig
from agents.reports.recovery import RecoveryInputs, build_recovery
from agents.reports.sla import SlaInputs, build_sla
from agents.results import Severity
from agents.state import StateDB
from tests.support.reports import (
    SNAP_DB,
    UNTIL,
    t,
    valid,
    write_recovery_history,
)
from tests.support.reports import (
    run_cli as cli,
)

REPO = Path(__file__).resolve().parents[2]


PACKS = {f"pack{i:02d}": 100 for i in range(10)}  # ten packs of 100 bytes


def check_packs(state: StateDB) -> None:
    """Six packs re-read on 20 November, two on 1 October (outside a 31-day window), two
    never: 60 % covered, 400 bytes to read at 200 a day: 2 days to full coverage."""
    state.record_pack_checks([f"pack{i:02d}" for i in range(6)], t("2026-11-20T12:00:00+00:00"))
    state.record_pack_checks(["pack06", "pack07"], t("2026-10-01T12:00:00+00:00"))


def recovery_inputs(state: StateDB, store: CaseStore, **extra: Any) -> RecoveryInputs:
    since = UNTIL - timedelta(days=90)
    return RecoveryInputs(
        runs=state.runs_between("restore_test", since, UNTIL),
        cases=store.cases(),
        since=since,
        until=UNTIL,
        packs=PACKS,
        pack_checks=state.pack_checks(),
        full_every=timedelta(days=31),
        daily_budget=200,
        rto_target=6 * 3600.0,
        rpo_target=26 * 3600.0,
        source_kinds={"files": "files", "db": "postgres"},
        hosts=["web1"],
        **extra,
    )


def test_recovery_report_figures_worked_out_by_hand(tmp_path: Path) -> None:
    state = StateDB(tmp_path / "state.db")
    store = CaseStore(f"sqlite:///{tmp_path / 'cases.db'}")
    ids = write_recovery_history(state, store)
    check_packs(state)
    doc = valid(build_recovery(recovery_inputs(state, store)))

    assert doc["headline"] == (
        "2 sources, 10 restore tests, 8 passed, 2 failures (1 resolved within target,"
        " 1 resolved late); 60 % of packs re-read in the last 31 days;"
        " worst RTO 9m12s (target 6h)"
    )
    assert doc["empty"] is False and doc["hosts"] == ["web1"]
    assert doc["period"] == {
        "since": "2026-09-03T20:00:00+00:00",
        "until": "2026-12-02T20:00:00+00:00",
        "days": 90,
    }
    rec = doc["recovery"]
    db, files = rec["sources"]  # sorted by name
    assert (db["name"], db["kind"], db["tests"], db["passed"], db["failed"]) == (
        "db",
        "postgres",
        5,
        4,
        1,
    )
    assert (files["tests"], files["passed"], files["failed"]) == (5, 4, 1)
    # files restored in the runs of 30 Oct (300 s), 1 Nov (400), 2 Nov (552), 2 Dec (120)
    assert files["worst_rto_seconds"] == 552.0 and db["worst_rto_seconds"] == 552.0
    assert [r["at"][:10] for r in files["runs"]] == [
        "2026-10-30",
        "2026-11-01",
        "2026-11-02",
        "2026-12-01",
        "2026-12-02",
    ]
    ok_run = db["runs"][0]
    assert ok_run["snapshot"] == SNAP_DB[:8]
    assert ok_run["snapshot_age_seconds"] == 3600.0 and ok_run["rpo_seconds"] == 3600.0
    assert ok_run["compared"] == {
        "files_rechunked": None,
        "tables_counted": 3,
        "schema_fingerprint": "sha256:5c4e",
        "sql_assertions": 2,
    }
    assert [s["name"] for s in ok_run["steps"]] == ["database", "sql", "data"]
    assert files["runs"][0]["compared"]["files_rechunked"] == 60

    first, second = rec["failures"]
    assert (first["source"], first["at"]) == ("db", "2026-11-01T05:30:00+00:00")
    assert (
        first["summary"] == f"db snapshot {SNAP_DB[:8]} app: row counts differ: invoices 499 != 500"
    )
    case = first["case"]
    assert case["id"] == ids["first"] and case["severity"] == "critical"
    # 4 h on the wall clock from 05:30Z, across the DST change: 09:30Z, not 08:30Z
    assert case["response_due"] == "2026-11-01T09:30:00+00:00"
    assert case["resolution_due"] == "2026-11-02T05:30:00+00:00"
    assert (case["response_seconds"], case["resolution_seconds"]) == (5400.0, 36000.0)
    assert (case["response_met"], case["resolution_met"]) == (True, True)
    late = second["case"]
    assert (second["source"], late["id"]) == ("files", ids["second"])
    assert (late["response_seconds"], late["resolution_seconds"]) == (18000.0, 90000.0)
    assert (late["response_met"], late["resolution_met"]) == (False, False)
    assert files["runs"][3]["case"] == late and files["runs"][2]["case"] is None

    cov = rec["coverage"]
    assert (cov["packs_total"], cov["packs_read_in_period"], cov["percent"]) == (10, 6, 60.0)
    assert (cov["window_days"], cov["days_to_full"]) == (31, 2.0)
    series = {p["date"]: p["percent"] for p in cov["series"]}
    assert len(series) == 91  # 3 September to 2 December
    # the two packs read on 1 October count for 31 days, until 1 November 12:00
    assert (series["2026-10-01"], series["2026-10-31"], series["2026-11-01"]) == (20.0, 20.0, 0.0)
    assert (series["2026-11-19"], series["2026-11-20"], series["2026-12-02"]) == (0.0, 60.0, 60.0)
    assert [p["rto_seconds"] for p in rec["rto_series"]] == [300.0, 400.0, 552.0, 500.0, 120.0]
    assert rec["rto_series"][0]["target_seconds"] == 21600.0


def test_recovery_report_of_one_source_and_of_an_empty_period(tmp_path: Path) -> None:
    state = StateDB(tmp_path / "state.db")
    store = CaseStore(f"sqlite:///{tmp_path / 'cases.db'}")
    write_recovery_history(state, store)
    check_packs(state)
    doc = valid(build_recovery(recovery_inputs(state, store, source="files")))
    assert doc["filters"]["source"] == "files"
    assert [s["name"] for s in doc["recovery"]["sources"]] == ["files"]
    assert doc["headline"].startswith(
        "1 source, 5 restore tests, 4 passed, 1 failure (1 resolved late); "
    )

    empty_state = StateDB(tmp_path / "empty.db")
    inputs = recovery_inputs(empty_state, store)
    doc = valid(build_recovery(inputs))
    assert doc["empty"] is True
    assert doc["headline"] == "No restore tests in the period 2026-09-03 to 2026-12-02"
    assert doc["recovery"]["sources"] == [] and doc["recovery"]["failures"] == []
    assert doc["hosts"] == ["web1"]


# --- an SLA history: business calendar, DST change, Christmas -------------------------

SLA_SINCE, SLA_UNTIL = t("2026-10-25T00:00:00+00:00"), t("2026-12-31T00:00:00+00:00")


def write_cases(store: CaseStore) -> dict[str, int]:
    """Cases opened by hand at chosen times, acknowledged and resolved at chosen times,
    one breach recorded by the agent's upkeep; returns their ids."""
    ids = {}
    old = store.open_case_by_hand(
        "before the period", Severity.MAJOR, "app-01", t("2026-10-20T14:00:00+00:00"), "ops"
    )
    store.acknowledge(old.id, t("2026-10-20T15:00:00+00:00"), "ops")
    # major, Friday 17:00 EDT: 1 business hour on Friday, 9 on Monday (after the DST
    # change, EST): response due Monday 17:00 EST = 22:00Z
    c1 = store.open_case_by_hand(
        "disk filling", Severity.MAJOR, "app-01", t("2026-10-30T21:00:00+00:00"), "ops"
    )
    ids["c1"] = c1.id
    store.acknowledge(c1.id, t("2026-11-02T21:30:00+00:00"), "ana")
    store.resolve(c1.id, t("2026-11-04T17:00:00+00:00"), "ana", "cleaned up")
    # critical, 01:00 EDT on the DST night: 4 h of wall clock, due 09:00Z
    c3 = store.open_case_by_hand(
        "site down", Severity.CRITICAL, "app-02", t("2026-11-01T05:00:00+00:00"), "ops"
    )
    ids["c3"] = c3.id
    store.record_breaches(t("2026-11-01T09:30:00+00:00"))  # the agent's upkeep
    store.acknowledge(c3.id, t("2026-11-01T10:00:00+00:00"), "bo")
    store.resolve(c3.id, t("2026-11-01T20:00:00+00:00"), "bo", "restarted")
    # major, Monday 21 December 09:00 EST: resolution due Thursday 24 09:00 EST,
    # resolved on the 29th: late (nobody's upkeep recorded it)
    c4 = store.open_case_by_hand(
        "replication lag", Severity.MAJOR, "db-01", t("2026-12-21T14:00:00+00:00"), "ops"
    )
    ids["c4"] = c4.id
    store.acknowledge(c4.id, t("2026-12-21T15:00:00+00:00"), "ana")
    store.resolve(c4.id, t("2026-12-29T15:00:00+00:00"), "ana", "resynced")
    # minor, Thursday 24 December 10:00 EST: 3 business days skip Christmas, Boxing Day
    # (observed Monday 28), the weekend: 8 h on the 24th, 10 on the 29th and 30th, 2 on
    # the 31st: response due 31 December 10:00 EST = 15:00Z
    c5 = store.open_case_by_hand(
        "certificate renewal", Severity.MINOR, "bastion", t("2026-12-24T15:00:00+00:00"), "ops"
    )
    ids["c5"] = c5.id
    store.acknowledge(c5.id, t("2026-12-30T20:00:00+00:00"), "bo")
    return ids


def sla_doc(store: CaseStore, hosts: list[str] | None = None, **labels: str) -> dict[str, Any]:
    return valid(
        build_sla(
            SlaInputs(
                cases=store.cases(),
                recorded_breaches=store.breached_cases(),
                timeline=store.events,
                config=CasesConfig(),
                since=SLA_SINCE,
                until=SLA_UNTIL,
                hosts=hosts,
                labels=labels,
            )
        )
    )


def test_sla_report_figures_worked_out_by_hand(store_url: str) -> None:
    store = CaseStore(store_url)
    ids = write_cases(store)
    doc = sla_doc(store)
    sla = doc["sla"]
    assert doc["headline"] == (
        "4 cases opened (1 critical, 2 major, 1 minor); 2 breached; 50 % within target"
    )
    assert doc["hosts"] == ["app-01", "app-02", "bastion", "db-01"]
    rows = {r["severity"]: r for r in sla["rows"]}
    assert list(rows) == ["critical", "major", "moderate", "minor"]
    assert rows["critical"] == {
        "severity": "critical",
        "cases": 1,
        "respond_median_seconds": 18000.0,
        "respond_p90_seconds": 18000.0,
        "resolve_median_seconds": 54000.0,
        "resolve_p90_seconds": 54000.0,
        "breached": 1,
        "compliance_percent": 0.0,
    }
    # major: responded in 1 h and 3 d 30 min (Fri 21:00Z to Mon 21:30Z); resolved in
    # 4 d 20 h and 8 d 1 h: nearest-rank median the first, p90 the second
    assert rows["major"] == {
        "severity": "major",
        "cases": 2,
        "respond_median_seconds": 3600.0,
        "respond_p90_seconds": 261000.0,
        "resolve_median_seconds": 417600.0,
        "resolve_p90_seconds": 694800.0,
        "breached": 1,
        "compliance_percent": 50.0,
    }
    assert rows["moderate"]["cases"] == 0 and rows["moderate"]["compliance_percent"] is None
    assert rows["minor"]["cases"] == 1 and rows["minor"]["compliance_percent"] == 100.0

    calendar = sla["calendar"]
    assert calendar["timezone"] == "America/Toronto" and calendar["hours"] == "08:00-18:00"
    assert calendar["weekdays"] == ["mon", "tue", "wed", "thu", "fri"]
    assert calendar["holidays_in_period"] == [
        {"date": "2026-12-25", "name": "Christmas Day"},
        {"date": "2026-12-26", "name": "Boxing Day"},
        {"date": "2026-12-28", "name": "Boxing Day (observed)"},
    ]
    assert sla["targets"]["major"]["response_seconds"] == 36000.0  # 1 business day
    assert sla["targets"]["critical"]["response_seconds"] == 14400.0

    by_id = {b["id"]: b for b in sla["breaches"]}
    assert list(by_id) == [ids["c3"], ids["c4"]]
    assert by_id[ids["c3"]]["missed"] == ["response"]
    assert [e["kind"] for e in by_id[ids["c3"]]["timeline"]] == [
        "opened",
        "sla breached",
        "acknowledged",
        "resolved",
    ]
    assert by_id[ids["c4"]]["missed"] == ["resolution"]
    assert by_id[ids["c4"]]["resolution_due"] == "2026-12-24T14:00:00+00:00"

    responses = {r["case"]: r for r in sla["responses"]}
    c1 = responses[ids["c1"]]
    assert c1["target_seconds"] == 262800.0 and c1["met"] is True  # due Mon 22:00Z
    c5 = responses[ids["c5"]]
    assert (c5["response_seconds"], c5["target_seconds"], c5["met"]) == (536400.0, 604800.0, True)
    weekly = {w["week"]: (w["opened"], w["resolved"]) for w in sla["weekly"]}
    assert list(weekly) == [f"2026-W{n}" for n in range(43, 54)]
    assert weekly["2026-W44"] == (2, 1)  # c1 on Friday, c3 on Sunday 1 November
    assert weekly["2026-W45"] == (0, 1)
    assert weekly["2026-W52"] == (2, 0) and weekly["2026-W53"] == (0, 1)
    assert weekly["2026-W48"] == (0, 0)


def test_a_breach_recorded_after_the_period_is_not_in_it(tmp_path: Path) -> None:
    """The upkeep records c3's missed response at 09:30Z; a period ending at 09:00Z (the
    due time, clock still running) has no breach, one ending at 09:45Z has it."""
    store = CaseStore(f"sqlite:///{tmp_path / 'cases.db'}")
    ids = write_cases(store)

    def critical(until: str) -> dict[str, Any]:
        doc = build_sla(
            SlaInputs(
                cases=store.cases(),
                recorded_breaches=store.breached_cases(),
                timeline=store.events,
                config=CasesConfig(),
                since=SLA_SINCE,
                until=t(until),
            )
        )
        return doc["sla"]

    early = critical("2026-11-01T09:00:00+00:00")
    assert early["rows"][0]["breached"] == 0 and early["breaches"] == []
    assert early["responses"][-1]["met"] is None  # not acknowledged yet, not yet due
    late = critical("2026-11-01T09:45:00+00:00")
    assert [b["id"] for b in late["breaches"]] == [ids["c3"]]
    assert late["breaches"][0]["missed"] == ["response"]


def test_sla_report_empty_period(tmp_path: Path) -> None:
    store = CaseStore(f"sqlite:///{tmp_path / 'cases.db'}")
    doc = sla_doc(store)
    assert doc["empty"] is True
    assert doc["headline"] == "No cases opened in the period 2026-10-25 to 2026-12-31"
    assert all(r["cases"] == 0 for r in doc["sla"]["rows"])


# --- the command line: --label on the shared store, signing, verify ------------------


INVENTORY = """
known_hosts: {known}
hosts:
  - {{name: app-01, address: 10.0.1.11, labels: {{client: acme}}}}
  - {{name: app-02, address: 10.0.1.12, labels: {{client: acme}}}}
  - {{name: db-01, address: 10.0.2.21, labels: {{client: acme, env: production}}}}
  - {{name: bastion, address: 10.0.0.1}}
"""


def test_sla_report_by_label_from_the_shared_store(store_url: str, tmp_path: Path) -> None:
    ids = write_cases(CaseStore(store_url))
    config = tmp_path / "config.yml"
    config.write_text(
        f"host: operator\nstate_dir: {tmp_path / 'state'}\ncases: {{store: '{store_url}'}}\n"
    )
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(INVENTORY.format(known=tmp_path / "known_hosts"))
    key = tmp_path / "report.key"
    assert cli("report", "key", "init", "--key-file", str(key)).returncode == 0
    out = tmp_path / "sla.json"
    proc = cli(
        "report",
        "sla",
        "--config",
        str(config),
        "--since",
        "67d",
        "--until",
        "2026-12-31T00:00:00+00:00",
        "--label",
        "client=acme",
        "--inventory",
        str(inventory),
        "--key-file",
        str(key),
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    doc = valid(json.loads(out.read_text()))
    assert doc["filters"]["labels"] == {"client": "acme"}
    assert doc["hosts"] == ["app-01", "app-02", "db-01"]
    assert doc["headline"] == (
        "3 cases opened for client=acme (1 critical, 2 major); 2 breached; 33.3 % within target"
    )
    assert ids["c5"] not in {r["case"] for r in doc["sla"]["responses"]}  # bastion: no label
    assert doc["sla"]["rows"][3]["cases"] == 0
    weekly = {w["week"]: (w["opened"], w["resolved"]) for w in doc["sla"]["weekly"]}
    assert weekly["2026-W52"] == (1, 0)
    verified = cli("report", "verify", str(out), "--key-file", str(key))
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.startswith(f"valid, signed by key_id {doc['signature']['key_id']}")

    nobody = cli(
        "report",
        "sla",
        "--config",
        str(config),
        "--label",
        "client=nobody",
        "--inventory",
        str(inventory),
        "--json",
    )
    assert nobody.returncode == 2
    assert nobody.stderr.strip().splitlines() == [
        "opsagent: no host of the inventory has the label(s) client=nobody"
    ]


def test_signed_recovery_report_verifies_and_fails_when_changed(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state = StateDB(state_dir / "state.db")
    store = CaseStore(f"sqlite:///{tmp_path / 'cases.db'}")
    write_recovery_history(state, store)
    config = tmp_path / "config.yml"
    config.write_text(
        f"host: web1\nstate_dir: {state_dir}\n"
        f"cases: {{store: 'sqlite:///{tmp_path / 'cases.db'}'}}\n"
        "restore_test: {max_rto: 6h}\n"
    )
    common = ["--config", str(config), "--until", "2026-12-02T20:00:00+00:00"]

    unsigned = cli("report", "recovery", *common, "--json")
    assert unsigned.returncode == 0, unsigned.stderr
    assert "the report is unsigned" in unsigned.stderr
    doc = valid(json.loads(unsigned.stdout))
    assert doc["signed"] is False and doc["signature"] is None
    assert doc["repository"] is None  # no backup section: no repository to name
    assert doc["headline"] == (
        "2 sources, 10 restore tests, 8 passed, 2 failures (1 resolved within target,"
        " 1 resolved late); worst RTO 9m12s (target 6h)"
    )
    assert doc["recovery"]["history_from"] == "2026-08-01T10:00:00+00:00"
    longer = json.loads(cli("report", "recovery", *common, "--since", "200d", "--json").stdout)
    assert longer["headline"].endswith("; history kept from 2026-08-01")
    assert longer["recovery"]["sources"][0]["tests"] == 6  # the run of 1 August too
    unsigned_file = tmp_path / "unsigned.json"
    unsigned_file.write_text(unsigned.stdout)
    proc = cli("report", "verify", str(unsigned_file))
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "opsagent: not signed: the document has no signature"
    ]

    init = cli("report", "key", "init", "--config", str(config))
    assert init.returncode == 0, init.stderr
    key = state_dir / "report-signing.key"
    assert key.stat().st_mode & 0o777 == 0o600
    again = cli("report", "key", "init", "--config", str(config))
    assert again.returncode == 2 and "exists already" in again.stderr
    shown = json.loads(cli("report", "key", "show", "--config", str(config), "--json").stdout)

    out = tmp_path / "recovery.json"
    proc = cli("report", "recovery", *common, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    doc = valid(json.loads(out.read_text()))
    assert doc["signature"]["key_id"] == shown["key_id"] and doc["signed"] is True
    ok = cli("report", "verify", str(out), "--public-key", shown["public_key"])
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == f"valid, signed by key_id {shown['key_id']}: {doc['headline']}"

    # one character of one figure changed: 552.0 -> 553.0
    text = out.read_text()
    assert text.count('"worst_rto_seconds": 552.0') == 2
    changed = tmp_path / "changed.json"
    changed.write_text(text.replace('"worst_rto_seconds": 552.0', '"worst_rto_seconds": 553.0', 1))
    proc = cli("report", "verify", str(changed), "--public-key", shown["public_key"])
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "opsagent: signature does not match: the document was changed after it was signed"
    ]
    # the same figure in the headline
    changed.write_text(text.replace("worst RTO 9m12s", "worst RTO 9m11s"))
    assert cli("report", "verify", str(changed)).returncode == 1

    other = tmp_path / "other.key"
    assert cli("report", "key", "init", "--key-file", str(other)).returncode == 0
    proc = cli("report", "verify", str(out), "--key-file", str(other))
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"opsagent: signed by another key: {shown['key_id']}, expected sha256:")


def test_real_restore_test_in_a_signed_report(tmp_path: Path) -> None:
    """A real backup and restore test of files, then the report through the CLI: the run,
    what it compared, the repository's packs and its key fingerprint."""
    from agents.backup.runner import init_repository, run_backup
    from agents.config import parse_config
    from agents.restore_test.runner import run_restore_test
    from agents.state import StateDB
    from tests.support.trees import make_tree

    docs = tmp_path / "docs"
    make_tree(docs, small_files=20, large_mib=1)
    (tmp_path / "repo.key").write_text("pw\n")
    path = tmp_path / "config.yml"
    path.write_text(
        f"""
host: rt-host
state_dir: {tmp_path / "state"}
backup:
  repository: {tmp_path / "repo"}
  password_file: {tmp_path / "repo.key"}
  sources:
    - {{name: docs, kind: files, paths: ["{docs}"]}}
restore_test:
  sandbox: {{kind: local, root: {tmp_path / "sandbox"}}}
  max_rto: 1h
  verify: {{data: {{full_every: 7d}}}}
"""
    )
    config = parse_config(path.read_text(), str(path))
    assert config.backup is not None
    init_repository(config.backup, config.host)
    assert run_backup(config).ok
    result = run_restore_test(config, StateDB(config.state_db))
    assert result.ok, result.summary
    StateDB(config.state_db).record_result(result)
    files = sum(1 for p in docs.rglob("*") if p.is_file() and not p.is_symlink())

    assert cli("report", "key", "init", "--config", str(path)).returncode == 0
    out = tmp_path / "report.json"
    proc = cli("report", "recovery", "--config", str(path), "--since", "1d", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    doc = valid(json.loads(out.read_text()))
    (source,) = doc["recovery"]["sources"]
    (row,) = source["runs"]
    assert (source["name"], source["kind"], source["tests"], source["passed"]) == (
        "docs",
        "files",
        1,
        1,
    )
    assert row["compared"]["files_rechunked"] == files
    assert row["run_id"] == result.details["run_id"]
    assert 0 <= row["snapshot_age_seconds"] < 600
    assert [s["name"] for s in row["steps"]] == ["restore", "files", "data"]
    cov = doc["recovery"]["coverage"]
    assert cov["packs_total"] >= 1 and cov["percent"] == 100.0 and cov["days_to_full"] == 0.0
    fingerprint = doc["repository"]["key_fingerprint"]
    assert fingerprint.startswith("sha256:") and len(fingerprint) == 71
    assert "pw" not in json.dumps(doc["repository"])
    assert doc["headline"].startswith(
        "1 source, 1 restore test, 1 passed, no failures; 100 % of packs re-read in the last 7 days"
    )
    assert cli("report", "verify", str(out)).returncode == 0

    # the same repository, the same fingerprint; the report never holds the key itself
    again = json.loads(cli("report", "recovery", "--config", str(path), "--json").stdout)
    assert again["repository"]["key_fingerprint"] == fingerprint


def test_bad_input_is_one_line_and_an_exit_code(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text(f"host: h\nstate_dir: {tmp_path / 'state'}\n")
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(INVENTORY.format(known=tmp_path / "known_hosts"))
    not_json = tmp_path / "notes.json"
    not_json.write_text("{ not json")
    for args, code, line in (
        (
            ["report", "recovery", "--config", str(config), "--out", "r.txt"],
            2,
            "Error: Invalid value for --out: takes a .json or .html file",
        ),
        (
            ["report", "recovery", "--config", str(config), "--until", "soon"],
            2,
            "Error: Invalid value for --until: expected ISO 8601, got 'soon'",
        ),
        (
            ["report", "sla", "--config", str(config), "--label", "client"],
            2,
            "opsagent: --label takes key=value, got 'client'",
        ),
        (
            ["report", "key", "show", "--config", str(config)],
            2,
            f"opsagent: {tmp_path / 'state' / 'report-signing.key'}: no signing key"
            " (create one with `opsagent report key init`)",
        ),
        (
            ["report", "verify", str(not_json)],
            1,
            f"opsagent: {not_json}: not a report (neither JSON nor HTML)",
        ),
        (
            ["report", "verify", str(config), "--public-key", "AAAA"],
            2,
            "opsagent: the public key has 3 bytes, an Ed25519 key has 32",
        ),
    ):
        proc = cli(*args)
        assert proc.returncode == code, (args, proc.stderr)
        assert proc.stderr.strip().splitlines()[-1] == line
        assert "Traceback" not in proc.stderr


def test_real_database_restore_test_shows_what_was_compared(
    tmp_path: Path, pg_database: Any
) -> None:
    """A real PostgreSQL backup and restore test with an SQL assertion: the report gives
    the tables counted, the schema fingerprint recorded at backup time and the assertion."""
    import psycopg

    from agents.backup.runner import init_repository, open_repository, run_backup
    from agents.config import parse_config
    from agents.restore_test.runner import run_restore_test
    from tests.support import services

    with psycopg.connect(pg_database.dsn, autocommit=True) as conn:
        conn.execute("create table invoices (id serial primary key, amount int)")
        conn.execute("create table clients (id serial primary key, name text)")
        conn.execute("insert into invoices (amount) select i from generate_series(1, 50) i")
    (tmp_path / "repo.key").write_text("pw\n")
    path = tmp_path / "config.yml"
    path.write_text(
        f"""
host: db-host
state_dir: {tmp_path / "state"}
backup:
  repository: {tmp_path / "repo"}
  password_file: {tmp_path / "repo.key"}
  sources:
    - {{name: app, kind: postgres, dsn: "{pg_database.dsn}", globals: false}}
restore_test:
  sandbox: {{kind: local, root: {tmp_path / "sandbox"}, postgres_dsn: "{services.PG_ADMIN_DSN}"}}
  verify: {{sql: ["select count(*) = 50 from invoices"]}}
"""
    )
    config = parse_config(path.read_text(), str(path))
    assert config.backup is not None
    init_repository(config.backup, config.host)
    assert run_backup(config).ok
    result = run_restore_test(config, StateDB(config.state_db))
    assert result.ok, result.summary
    StateDB(config.state_db).record_result(result)
    (snapshot,) = [
        open_repository(config.backup).load_snapshot(s)
        for s in open_repository(config.backup).snapshot_ids()
    ]
    facts = next(iter(snapshot.facts["databases"].values()))

    proc = cli("report", "recovery", "--config", str(path), "--since", "1d", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = valid(json.loads(proc.stdout))
    (source,) = doc["recovery"]["sources"]
    (row,) = source["runs"]
    assert (source["name"], source["kind"], source["passed"]) == ("app", "postgres", 1)
    assert row["compared"] == {
        "files_rechunked": None,
        "tables_counted": 2,
        "schema_fingerprint": facts["schema_fingerprint"],
        "sql_assertions": 1,
    }
    assert facts["schema_fingerprint"]
    assert [s["name"] for s in row["steps"]] == ["database", "sql", "data"]
    assert row["snapshot"] == snapshot.id[:8]
