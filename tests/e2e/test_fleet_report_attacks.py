"""`opsagent fleet report recovery` against hosts that misbehave, over a real OpenSSH
server: one answers with another host's signed report (its tests would count twice),
one replays its own signed report of another period, one answers text, one runs an
opsagent without `report`, two answer documents of another format. Each is a row with
its error; the honest host's figures stand alone in the merged report."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from agents.cases.store import CaseStore
from agents.state import StateDB
from tests.support.reports import run_cli as cli
from tests.support.reports import valid, write_recovery_history
from tests.support.services import SshServer

REPO = Path(__file__).resolve().parents[2]
UNTIL = "2026-12-02T20:00:00+00:00"
AGENT = f"env PYTHONPATH={REPO} {sys.executable} -m agents"


# a recovery report in name only (another build's format): the merge must not crash on it
SKEWED = {
    "schema": "opsagent-report/1",
    "kind": "recovery",
    "hosts": ["skewed"],
    "period": {"since": "2026-09-03T20:00:00+00:00", "until": UNTIL},
    "filters": {"source": None},
    "signature": None,
    "recovery": {"tests": 99},
}
V2 = {**SKEWED, "schema": "opsagent-report/2"}
# an opsagent without `report`, whose error line also tries to clear the operator's screen
OLD = r"printf 'Error: No such command \033[2Jreport.\n' >&2; exit 2"


def fake(script: str) -> str:
    """An `opsagent` command for the inventory that ignores its arguments."""
    return f"sh -c {shlex.quote(script)} fake"


def fleet_report(
    sshd: SshServer, tmp_path: Path, hosts: list[dict[str, Any]], name: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    inventory = tmp_path / f"{name}.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "known_hosts": str(sshd.known_hosts),
                "state_dir": str(tmp_path / "operator"),
                "defaults": {
                    "user": sshd.user,
                    "key_file": str(sshd.client_key),
                    "opsagent": AGENT,
                    "command_timeout": "120s",
                },
                "hosts": [{"address": "127.0.0.1", "port": sshd.port, **h} for h in hosts],
            }
        )
    )
    out = tmp_path / f"{name}.json"
    proc = cli(
        "fleet", "report", "recovery", "--inventory", str(inventory), "--all",
        "--until", UNTIL, "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc, valid(json.loads(out.read_text()))


def test_hosts_that_lie_or_answer_garbage_are_rows_with_their_error(
    sshd: SshServer, tmp_path: Path
) -> None:
    state_dir = tmp_path / "web1"
    write_recovery_history(
        StateDB(state_dir / "state.db"), CaseStore(f"sqlite:///{state_dir / 'cases.db'}")
    )
    config = tmp_path / "web1.yml"
    config.write_text(
        f"host: web1\nstate_dir: {state_dir}\n"
        f"cases: {{store: 'sqlite:///{state_dir / 'cases.db'}'}}\n"
        "restore_test: {max_rto: 6h}\n"
    )
    assert cli("report", "key", "init", "--config", str(config)).returncode == 0
    now = tmp_path / "web1-now.json"
    old = tmp_path / "web1-old.json"
    for path, until in ((now, UNTIL), (old, "2026-11-15T00:00:00+00:00")):
        proc = cli("report", "recovery", "--config", str(config), "--until", until, "--json")
        assert proc.returncode == 0, proc.stderr
        path.write_text(proc.stdout)

    web1 = {"name": "web1", "config": str(config)}
    proc, doc = fleet_report(
        sshd,
        tmp_path,
        [
            web1,
            {"name": "web2", "opsagent": fake(f"cat {now}")},  # web1's report, as its own
            {"name": "text", "opsagent": fake("echo all good")},
            {"name": "old", "opsagent": fake(OLD)},
            {"name": "skewed", "opsagent": fake(f"echo {shlex.quote(json.dumps(SKEWED))}")},
            {"name": "v2", "opsagent": fake(f"echo {shlex.quote(json.dumps(V2))}")},
        ],
        "liars",
    )
    rows = {r["host"]: r for r in doc["per_host"]}
    assert rows["web1"]["ok"] is True and rows["web1"]["tests"] == 10
    assert rows["web2"]["ok"] is False
    assert rows["web2"]["error"] == "the host answered with the report of web1"
    assert rows["text"]["ok"] is False and rows["old"]["ok"] is False
    assert "No such command" in rows["old"]["error"]
    assert "opsagent: old: Error: No such command \\x1b[2Jreport." in proc.stderr
    assert "\x1b" not in proc.stderr
    assert rows["skewed"]["ok"] is False
    assert rows["skewed"]["error"] == "the host's report is not readable (KeyError: 'sources')"
    assert rows["v2"]["error"] == (
        "the host's report is 'opsagent-report/2', not opsagent-report/1 (another version)"
    )
    assert "opsagent: web2: the host answered with the report of web1" in proc.stderr
    assert sum(s["tests"] for s in doc["recovery"]["sources"]) == 10  # web1's, once
    assert len(doc["recovery"]["failures"]) == 2
    assert doc["headline"].startswith(
        "6 hosts (5 did not answer): 2 sources, 10 restore tests, 8 passed, 2 failures"
    )

    # web1 replays its own signed report of an earlier period: the signature holds,
    # the period is not the one asked for
    _, doc = fleet_report(sshd, tmp_path, [{**web1, "opsagent": fake(f"cat {old}")}], "replay")
    (row,) = doc["per_host"]
    assert row["ok"] is False
    assert row["error"] == (
        "the host's report covers 2026-08-17T00:00:00+00:00 to 2026-11-15T00:00:00+00:00,"
        " not the period asked for"
    )
    assert doc["recovery"]["sources"] == [] and doc["recovery"]["failures"] == []

    # two inventory entries that reach the same agent under other names: once only
    _, doc = fleet_report(
        sshd,
        tmp_path,
        [{"name": "alias1", "config": str(config)}, {"name": "alias2", "config": str(config)}],
        "aliases",
    )
    rows = {r["host"]: r for r in doc["per_host"]}
    assert rows["alias1"]["ok"] is True and rows["alias1"]["tests"] == 10
    assert rows["alias2"]["ok"] is False
    assert rows["alias2"]["error"] == "the host answered with the report of web1, as alias1 did"
    assert sum(s["tests"] for s in doc["recovery"]["sources"]) == 10
