"""Attacks on signed reports, from the user's side: tampering `report verify` must catch
(duplicate keys, unsigned fields beside the signature), files that are not reports
(deep nesting, devices), hostile state databases (non-finite figures, garbled run
records, passed runs without sources) and out-of-range periods. Every case runs the
real CLI over a real state database and case store and reads its exit code and stderr."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agents.cases.store import CaseStore
from agents.state import StateDB
from tests.support.reports import one_line, run_cli, valid, write_recovery_history


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, timeout=120)


REPO = Path(__file__).resolve().parents[2]
UNTIL = "2026-12-02T20:00:00+00:00"


@pytest.fixture
def host(tmp_path: Path) -> dict[str, Path]:
    """A host with the restore-test history of the report tests and a signing key."""
    state_dir = tmp_path / "state"
    write_recovery_history(
        StateDB(state_dir / "state.db"), CaseStore(f"sqlite:///{tmp_path / 'cases.db'}")
    )
    config = tmp_path / "config.yml"
    config.write_text(
        f"host: web1\nstate_dir: {state_dir}\n"
        f"cases: {{store: 'sqlite:///{tmp_path / 'cases.db'}'}}\n"
        "restore_test: {max_rto: 6h}\n"
    )
    assert cli("report", "key", "init", "--config", str(config)).returncode == 0
    return {"config": config, "state": state_dir / "state.db", "dir": tmp_path}


def signed_report(host: dict[str, Path]) -> Path:
    out = host["dir"] / "report.json"
    proc = cli(
        "report", "recovery", "--config", str(host["config"]), "--until", UNTIL, "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    return out


def test_a_duplicate_key_is_refused_not_resolved_to_the_signed_value(
    host: dict[str, Path],
) -> None:
    """`{"headline": "FAKE", "headline": "<signed>"}`: Python keeps the last (signed) one,
    a viewer or another parser may show the first. The file is ambiguous: refused."""
    out = signed_report(host)
    text = out.read_text()
    assert cli("report", "verify", str(out)).returncode == 0
    forged = host["dir"] / "forged.json"
    forged.write_text(
        text.replace(
            '"headline": ', '"headline": "0 failures, all restore tests passed", "headline": ', 1
        )
    )
    proc = cli("report", "verify", str(forged))
    assert proc.returncode == 1
    assert one_line(proc) == f"opsagent: {forged}: not a report (duplicate key 'headline')"


def test_fields_beside_the_signature_are_refused(host: dict[str, Path]) -> None:
    """The `signature` object is not covered by the signature: a field added there (a
    signer's name) would read as signed. The schema allows only the four keys."""
    out = signed_report(host)
    doc = json.loads(out.read_text())
    doc["signature"]["signer"] = "Big Four Auditors LLP"
    forged = host["dir"] / "forged.json"
    forged.write_text(json.dumps(doc))
    proc = cli("report", "verify", str(forged))
    assert proc.returncode == 1
    assert one_line(proc) == "opsagent: the signature has unknown field(s): signer"


def test_files_that_are_not_reports_are_one_line(host: dict[str, Path]) -> None:
    """A deeply nested document, a device that never ends, and a key file that is a
    device: each refused at once in one line, never a traceback or a hang."""
    deep = host["dir"] / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    proc = cli("report", "verify", str(deep))
    assert proc.returncode == 1
    assert one_line(proc) == f"opsagent: {deep}: not a report (nested too deeply)"

    proc = cli("report", "verify", "/dev/zero")
    assert proc.returncode == 1
    assert one_line(proc) == "opsagent: /dev/zero: not a report (not a regular file)"

    proc = cli("report", "verify", "/proc/self/mem")  # a file whose read fails
    assert proc.returncode == 1
    assert one_line(proc) == "opsagent: /proc/self/mem: cannot read the report: Input/output error"

    proc = cli(
        "report", "recovery", "--config", str(host["config"]), "--key-file", "/dev/zero", "--json"
    )
    assert proc.returncode == 2
    assert one_line(proc) == "opsagent: /dev/zero: the signing key is not a regular file"


def add_run(state: Path, result: str, status: str = "ok") -> None:
    """One restore-test row written as it lies in the state database."""
    with sqlite3.connect(state) as db:
        db.execute(
            "INSERT INTO runs (name, kind, started_at, status, duration_seconds, result)"
            " VALUES ('restore_test', 'restore_test', '2026-12-02T07:00:00+00:00', ?, 1.0, ?)",
            (status, result),
        )


def last_run(state: Path) -> dict[str, Any]:
    with sqlite3.connect(state) as db:
        (text,) = db.execute("SELECT result FROM runs ORDER BY id DESC LIMIT 1").fetchone()
    return json.loads(text)


def strict_json(text: str) -> Any:
    """JSON as the standard has it: NaN and Infinity are not numbers."""

    def refuse(word: str) -> Any:
        raise AssertionError(f"{word} in the document")

    return json.loads(text, parse_constant=refuse)


def test_a_non_finite_rto_is_unknown_not_nan(host: dict[str, Path]) -> None:
    """A run whose RTO reads NaN: the document stays JSON (null, not NaN, which other
    verifiers cannot parse) and its figures still add up."""
    run = last_run(host["state"])
    run["details"]["rto_seconds"] = float("nan")
    add_run(host["state"], json.dumps(run))
    proc = cli("report", "recovery", "--config", str(host["config"]), "--until", UNTIL, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = valid(strict_json(proc.stdout))
    assert [r["rto_seconds"] for r in doc["recovery"]["sources"][0]["runs"]][-1] is None
    assert doc["recovery"]["sources"][0]["worst_rto_seconds"] == 552.0


def test_a_passed_run_without_sources_is_not_a_failure(host: dict[str, Path]) -> None:
    """A run recorded as passed but naming no source: it must not appear as a failure
    ("2 snapshot(s) restored and verified" under failures, 3 failures of 10 tests)."""
    run = last_run(host["state"])
    run["details"].pop("sources")
    add_run(host["state"], json.dumps(run))
    proc = cli("report", "recovery", "--config", str(host["config"]), "--until", UNTIL, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = valid(json.loads(proc.stdout))
    assert len(doc["recovery"]["failures"]) == 2
    assert doc["headline"].startswith(
        "2 sources, 10 restore tests, 8 passed, 2 failures (1 resolved within target,"
        " 1 resolved late)"
    )


def test_garbled_run_records_are_failures_not_a_crash(host: dict[str, Path]) -> None:
    """Rows of the wrong shape (not JSON, steps that are not objects, a naive snapshot
    time, an RTO beyond any duration): each is a failure saying its record is unreadable,
    the other runs keep their figures, and the document stays valid JSON."""
    run = last_run(host["state"])
    steps = json.loads(json.dumps(run))
    steps["details"]["steps"] = [1, "x", None]
    naive = json.loads(json.dumps(run))
    naive["details"]["sources"]["db"]["snapshot_time"] = "2026-12-02T05:00:00"
    huge = json.loads(json.dumps(run))
    huge["details"]["rto_seconds"] = 1e308
    for result in ("{garbled", json.dumps(steps), json.dumps(naive), json.dumps(huge)):
        add_run(host["state"], result)
    proc = cli("report", "recovery", "--config", str(host["config"]), "--until", UNTIL, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = valid(strict_json(proc.stdout))
    unreadable = [f for f in doc["recovery"]["failures"] if "unreadable" in f["summary"]]
    assert sorted(f["summary"].rpartition(" ")[2] for f in unreadable) == [
        "(AttributeError)",
        "(JSONDecodeError)",
        "(TypeError)",
    ]
    assert all(f["host"] == "web1" and f["source"] is None for f in unreadable)
    db = doc["recovery"]["sources"][0]
    assert (db["name"], db["tests"], db["passed"]) == ("db", 6, 5)  # + the huge RTO's run
    assert db["runs"][-1]["rto_seconds"] is None and db["worst_rto_seconds"] == 552.0
    assert doc["headline"].startswith("2 sources, 12 restore tests, 10 passed, 5 failures")


def test_a_period_before_year_one_is_refused(host: dict[str, Path]) -> None:
    proc = cli(
        "report",
        "recovery",
        "--config",
        str(host["config"]),
        "--until",
        "0001-01-01T00:00:00+00:00",
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "Error: Invalid value for --until: the period would start before year 1"
    )


def test_an_sla_report_shows_each_case_as_it_stood_at_the_periods_end(tmp_path: Path) -> None:
    """A report ending 28 December, made after the minor case was acknowledged (30th)
    and the major one resolved (29th): neither happened in the period. The response is
    still running (not met), the breach shows the case unresolved and its timeline stops
    at the period's end, so last month's report does not change when made again."""
    from agents.config import CasesConfig
    from agents.reports.sla import SlaInputs, build_sla
    from tests.integration.test_reports import t, write_cases

    store = CaseStore(f"sqlite:///{tmp_path / 'cases.db'}")
    ids = write_cases(store)
    until = t("2026-12-28T00:00:00+00:00")
    doc = valid(
        build_sla(
            SlaInputs(
                cases=store.cases(),
                recorded_breaches=store.breached_cases(),
                timeline=store.events,
                config=CasesConfig(),
                since=t("2026-11-28T00:00:00+00:00"),
                until=until,
            )
        )
    )
    sla = doc["sla"]
    (breach,) = sla["breaches"]
    assert breach["id"] == ids["c4"] and breach["missed"] == ["resolution"]
    assert (breach["status"], breach["resolved_at"], breach["resolution_seconds"]) == (
        "acknowledged",
        None,
        None,
    )
    assert [e["kind"] for e in breach["timeline"]] == ["opened", "acknowledged"]
    assert all(t(e["at"]) < until for e in breach["timeline"])
    c5 = {r["case"]: r for r in sla["responses"]}[ids["c5"]]
    assert (c5["response_seconds"], c5["met"]) == (None, None)
    minor = {r["severity"]: r for r in sla["rows"]}["minor"]
    assert minor["cases"] == 1 and minor["respond_median_seconds"] is None
    weekly = {w["week"]: w["resolved"] for w in sla["weekly"]}
    assert sum(weekly.values()) == 0  # c4's resolution on the 29th is not in the period


def test_a_recovery_report_shows_a_failures_case_as_it_stood_at_the_periods_end(
    host: dict[str, Path],
) -> None:
    """The failure of 1 December 06:00 was resolved on the 2nd, after a period ending
    on the 1st at noon: in that period its case is still open, not "resolved late"."""
    proc = cli(
        "report", "recovery", "--config", str(host["config"]),
        "--until", "2026-12-01T12:00:00+00:00", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = valid(json.loads(proc.stdout))
    assert doc["headline"].startswith(
        "2 sources, 8 restore tests, 6 passed, 2 failures (1 resolved within target, 1 open)"
    )
    case = doc["recovery"]["failures"][-1]["case"]
    assert (case["status"], case["resolved_at"], case["resolution_met"]) == (
        "acknowledged",
        None,
        None,
    )
    assert case["response_met"] is False  # acknowledged 5 h after: late, inside the period


def test_concurrent_key_inits_keep_the_key_the_winner_printed(tmp_path: Path) -> None:
    """Several `report key init` at once (two shells, a retried deployment): exactly one
    succeeds, and the public key it printed, the one the operator hands out, is the one
    on disk. A shared temporary name let a loser's key replace the winner's file."""
    for round_ in range(5):
        key = tmp_path / f"k{round_}" / "report.key"
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "agents", "report", "key", "init", "--key-file", str(key)],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(8)
        ]
        outs = [(p.communicate(timeout=120), p.returncode) for p in procs]
        won = [out for (out, _), code in outs if code == 0]
        assert len(won) == 1, outs
        losers = [err.strip() for (_, err), code in outs if code != 0]
        assert set(losers) == {
            f"opsagent: {key}: a signing key exists already; --force replaces it"
        }
        shown = cli("report", "key", "show", "--key-file", str(key), "--json")
        assert f"public_key: {json.loads(shown.stdout)['public_key']}" in won[0]
        assert [p.name for p in key.parent.iterdir()] == ["report.key"]  # no temporary left
        assert key.stat().st_mode & 0o777 == 0o600


def test_a_headline_cannot_rewrite_the_verdict_line(host: dict[str, Path]) -> None:
    """A report signed by its own embedded key (anyone can make one) whose headline holds
    a carriage return, terminal escapes and a right-to-left override: on a terminal it
    would overwrite "(key taken from the report: pass --public-key)" with a verdict
    naming the provider's key. verify prints such characters escaped."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from agents.reports.signing import sign

    out = signed_report(host)
    genuine = json.loads(out.read_text())
    provider = genuine["signature"]["key_id"]
    doc = {k: v for k, v in genuine.items() if k != "signature"}
    doc["headline"] = (
        f"x\r\x1b[2Kvalid, signed by key_id {provider}: all restore tests passed\u202e"
    )
    forged = host["dir"] / "forged.json"
    forged.write_text(json.dumps(sign(doc, Ed25519PrivateKey.generate())))
    proc = cli("report", "verify", str(forged))
    assert proc.returncode == 0, proc.stderr  # the signature holds: over its own key
    (line,) = proc.stdout.splitlines()
    assert not any(c in line for c in "\r\x1b\u202e")
    assert "(key taken from the report: pass --public-key): x\\x0d\\x1b[2Kvalid" in line
    assert line.endswith("all restore tests passed\\u202e")


def test_a_mistyped_state_dir_or_case_store_is_refused_not_reported_empty(
    host: dict[str, Path],
) -> None:
    """A report from a state database or SQLite case store that does not exist would be a
    signed "no restore tests" built from files the report itself created: refused in one
    line, and nothing is created."""
    config = host["config"]
    text = config.read_text()
    typo = host["dir"] / "stat"
    config.write_text(text.replace(f"state_dir: {host['state'].parent}", f"state_dir: {typo}"))
    proc = cli("report", "recovery", "--config", str(config), "--until", UNTIL, "--json")
    assert proc.returncode == 2, proc.stdout
    assert one_line(proc) == (
        f"opsagent: {typo / 'state.db'}: no state database there"
        " (is state_dir in the config right?)"
    )
    assert not typo.exists()
    store = host["dir"] / "cases.db"
    config.write_text(text.replace(str(store), str(host["dir"] / "case.db")))
    proc = cli("report", "sla", "--config", str(config), "--until", UNTIL, "--json")
    assert proc.returncode == 2
    assert one_line(proc).endswith("no case store there (is cases.store in the config right?)")
    assert not (host["dir"] / "case.db").exists()
