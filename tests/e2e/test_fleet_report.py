"""`opsagent fleet report recovery` over a real OpenSSH server: each host's own report
(run by its own opsagent with its own state), merged with a per-host table; a host that
fails is a row with its error, and the merged report is signed by the operator."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import yaml

from agents.cases.store import CaseStore
from agents.state import StateDB
from tests.support.reports import SCHEMA, write_recovery_history
from tests.support.services import SshServer

REPO = Path(__file__).resolve().parents[2]


def test_fleet_recovery_report_merges_hosts_and_keeps_failed_ones(
    sshd: SshServer, tmp_path: Path
) -> None:
    configs = {}
    for name in ("web1", "web2"):
        state_dir = tmp_path / name
        configs[name] = tmp_path / f"{name}.yml"
        configs[name].write_text(
            f"host: {name}\nstate_dir: {state_dir}\n"
            f"cases: {{store: 'sqlite:///{state_dir / 'cases.db'}'}}\n"
            "restore_test: {max_rto: 6h}\n"
        )
    # web1: the history of the integration test, signed with its own key; web2: nothing
    write_recovery_history(
        StateDB(tmp_path / "web1" / "state.db"),
        CaseStore(f"sqlite:///{tmp_path / 'web1' / 'cases.db'}"),
    )
    StateDB(tmp_path / "web2" / "state.db")  # an agent that ran, with no restore test yet
    host_key = subprocess.run(
        [sys.executable, "-m", "agents", "report", "key", "init", "--config", str(configs["web1"])],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert host_key.returncode == 0, host_key.stderr
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "known_hosts": str(sshd.known_hosts),
                "state_dir": str(tmp_path / "operator"),
                "defaults": {
                    "user": sshd.user,
                    "key_file": str(sshd.client_key),
                    "opsagent": f"env PYTHONPATH={REPO} {sys.executable} -m agents",
                    "command_timeout": "120s",
                },
                "hosts": [
                    {
                        "name": "web1",
                        "address": "127.0.0.1",
                        "port": sshd.port,
                        "config": str(configs["web1"]),
                    },
                    {
                        "name": "web2",
                        "address": "127.0.0.1",
                        "port": sshd.port,
                        "config": str(configs["web2"]),
                    },
                    {
                        "name": "broken",
                        "address": "127.0.0.1",
                        "port": sshd.port,
                        "config": str(tmp_path / "missing.yml"),
                    },
                ],
            }
        )
    )
    operator_key = tmp_path / "operator.key"
    base = [sys.executable, "-m", "agents"]
    init = subprocess.run(
        [*base, "report", "key", "init", "--key-file", str(operator_key)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert init.returncode == 0, init.stderr
    out = tmp_path / "fleet.json"
    proc = subprocess.run(
        [
            *base,
            "fleet",
            "report",
            "recovery",
            "--inventory",
            str(inventory),
            "--all",
            "--until",
            "2026-12-02T20:00:00+00:00",
            "--key-file",
            str(operator_key),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "opsagent: broken: " in proc.stderr
    doc = json.loads(out.read_text())
    jsonschema.Draft202012Validator(SCHEMA).validate(doc)
    rows = {r["host"]: r for r in doc["per_host"]}
    assert list(rows) == ["web1", "web2", "broken"]
    web1, web2, broken = rows["web1"], rows["web2"], rows["broken"]
    assert (web1["ok"], web1["sources"], web1["tests"], web1["passed"], web1["failed"]) == (
        True,
        2,
        10,
        8,
        2,
    )
    assert web1["worst_rto_seconds"] == 552.0 and web1["key_id"].startswith("sha256:")
    assert (web2["ok"], web2["tests"], web2["key_id"]) == (True, 0, None)  # unsigned, empty
    assert broken["ok"] is False and "missing.yml" in broken["error"]
    assert doc["hosts"] == ["broken", "web1", "web2"]
    assert doc["headline"] == (
        "3 hosts (1 did not answer): 2 sources, 10 restore tests, 8 passed, 2 failures"
        " (1 resolved within target, 1 resolved late); worst RTO 9m12s (target 6h)"
    )
    assert {s["host"] for s in doc["recovery"]["sources"]} == {"web1"}
    assert len(doc["recovery"]["failures"]) == 2
    verified = subprocess.run(
        [*base, "report", "verify", str(out), "--key-file", str(operator_key)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert verified.returncode == 0, verified.stderr
