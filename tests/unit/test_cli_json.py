"""The `--json` of the case, audit and fleet commands is the documented schema: each
document validates against its model's JSON schema and prints no undocumented key, and
the case changes made by hand are audited as before."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from agents.records import DOCUMENTS
from agents.records.audit import AuditEntry
from agents.records.cases import (
    CaseDetail,
    CaseListItem,
    DueDocument,
    NotificationsDocument,
)
from agents.records.fleet import FleetRun, UpgradePlan, UpgradeRun
from agents.records.sla import SlaRow
from tests.unit.test_records import REPO, _problems


def _valid(value: Any, model: type[BaseModel]) -> None:
    """`value` fits the model's schema, and every key printed is one of its fields."""
    schema = model.model_json_schema()
    assert _problems(value, schema, schema.get("$defs", {})) == []


@pytest.fixture
def opsagent(tmp_path: Path) -> Any:
    """Run `opsagent ...` on a config with a SQLite case store; returns the exit code and
    standard output. (A process of its own: invoking the click group in this process
    would change the help options `agents.docs` renders for test_docs.)"""
    config = tmp_path / "agent.yml"
    config.write_text(
        f"host: h1\nstate_dir: {tmp_path / 'state'}\ncases:\n  notify:\n"
        '    - {kind: webhook, name: ops, url: "http://127.0.0.1:9/hook"}\n'
    )
    env = os.environ | {"OPSAGENT_CONFIG": str(config), "PYTHONPATH": str(REPO)}

    def run(*args: str) -> tuple[int, str]:
        done = subprocess.run(
            [sys.executable, "-m", "agents", *args], env=env, capture_output=True, text=True
        )
        return done.returncode, done.stdout

    return run


def _json(opsagent: Any, *args: str) -> Any:
    code, out = opsagent(*args, "--json")
    assert code == 0, out
    return json.loads(out)


def test_case_commands_print_their_documented_documents(opsagent: Any) -> None:
    for args in (
        ("open", "--severity", "major", "--title", "web down", "--host", "web1", "--by", "al"),
        ("open", "--severity", "critical", "--title", "db down", "--body", "x", "--by", "bo"),
        ("open", "--severity", "minor", "--title", "disk"),
        ("ack", "1", "--by", "carol"),
        ("comment", "1", "looking", "--by", "carol"),
        ("severity", "2", "major", "--why", "less bad", "--by", "bo"),
        ("resolve", "3", "--note", "fixed", "--by", "al"),
        ("close", "3", "--by", "al"),
        ("reopen", "3", "--note", "again", "--by", "al"),
        ("retry", "--failed"),
        ("retire-notifier", "old"),
    ):
        code, out = opsagent("cases", *args)
        assert code == 0, out

    listed = _json(opsagent, "cases", "list")
    assert [c["id"] for c in listed] == [3, 2, 1]
    for case in listed:
        _valid(case, CaseListItem)
        assert list(case) == sorted(CaseListItem.model_fields)
    assert listed[2]["acknowledged_by"] == "carol" and listed[0]["status"] == "reopened"

    shown = _json(opsagent, "cases", "show", "1")
    _valid(shown, CaseDetail)
    assert list(shown) == sorted(CaseDetail.model_fields)
    assert [e["kind"] for e in shown["events"]][:2] == ["opened", "acknowledged"]
    assert shown["notifications"] and shown["notifications"][0]["event"] == "opened"

    outbox = _json(opsagent, "cases", "notifications", "--case", "2")
    _valid(outbox, NotificationsDocument)
    ids = [n["id"] for n in outbox["notifications"]]
    assert ids == sorted(ids, reverse=True) and len(ids) == 2

    for row in _json(opsagent, "cases", "sla"):
        _valid(row, SlaRow)

    due = _json(opsagent, "cases", "due", "--severity", "major", "--opened", "2026-01-05T09:00")
    _valid(due, DueDocument)
    assert due == {
        "severity": "major",
        "opened": "2026-01-05T09:00:00-05:00",
        "response_due": "2026-01-06T09:00:00-05:00",
        "resolution_due": "2026-01-08T09:00:00-05:00",
        "calendar": {"timezone": "America/Toronto", "hours": "08:00-18:00", "weekdays": "mon-fri"},
    }

    audit = _json(opsagent, "audit")
    for entry in audit:
        _valid(entry, AuditEntry)
        assert list(entry) == sorted(AuditEntry.model_fields)
    assert [(e["action"], e["target"], e["outcome"], e["detail"]) for e in reversed(audit)] == [
        ("case open", "web down", "ok", {"by": "al", "severity": "major"}),
        ("case open", "db down", "ok", {"by": "bo", "severity": "critical"}),
        ("case open", "disk", "ok", {"by": audit[-3]["detail"]["by"], "severity": "minor"}),
        ("case ack", "#1", "ok", {"by": "carol"}),
        ("case comment", "#1", "ok", {"by": "carol"}),
        ("case severity", "#2", "ok", {"by": "bo", "to": "major"}),
        ("case resolve", "#3", "ok", {"by": "al", "note": "fixed"}),
        ("case close", "#3", "ok", {"by": "al"}),
        ("case reopen", "#3", "ok", {"by": "al"}),
        ("case notifications retry", "all", "ok", {"requeued": 0}),
        ("notifier retire", "old", "ok", {"dropped": 0}),
    ]


def test_a_refused_case_change_is_audited_as_refused(opsagent: Any) -> None:
    opsagent("cases", "open", "--severity", "minor", "--title", "disk", "--by", "al")
    code, _ = opsagent("cases", "close", "1", "--by", "al")
    assert code == 2
    refused = _json(opsagent, "audit")[0]
    assert (refused["action"], refused["target"]) == ("case close", "#1")
    assert refused["outcome"].startswith("refused: ")


def test_a_change_to_an_unreachable_store_is_audited_as_refused(tmp_path: Path) -> None:
    """Every case change made by hand is audited, also when the store cannot be reached."""
    from tests.support.services import free_port

    config = tmp_path / "agent.yml"
    store = f"postgresql://postgres@127.0.0.1:{free_port()}/cases"  # nothing listens
    config.write_text(f"host: h1\nstate_dir: {tmp_path / 'state'}\ncases: {{store: '{store}'}}\n")
    env = os.environ | {"OPSAGENT_CONFIG": str(config), "PYTHONPATH": str(REPO)}
    changes = [
        ("case ack", ["ack", "1"]),
        ("case comment", ["comment", "1", "x"]),
        ("case resolve", ["resolve", "1"]),
        ("case reopen", ["reopen", "1"]),
        ("case close", ["close", "1"]),
        ("notifier retire", ["retire-notifier", "hook"]),
    ]
    for _, args in changes:
        done = subprocess.run(
            [sys.executable, "-m", "agents", "cases", *args],
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 3, done.stderr
        assert done.stderr.startswith("opsagent: case store "), done.stderr
        assert "Traceback" not in done.stderr
    audit = subprocess.run(
        [sys.executable, "-m", "agents", "audit", "--json"], env=env, capture_output=True, text=True
    )
    entries = json.loads(audit.stdout)
    assert sorted(e["action"] for e in entries) == sorted(action for action, _ in changes)
    assert all(e["outcome"].startswith("refused: case store ") for e in entries)


def _hosts() -> list[Any]:
    from agents.fleet.runner import HostResult

    return [
        HostResult("a", "10.0.0.1", "ok", 0, "out", "", "", 1.23456, {"agent": {"version": "2"}}),
        HostResult("b", "10.0.0.2", "failed", 3, "", "err", "", 0.5),
        HostResult("c", "10.0.0.3", "error", None, "", "", "refused", 0.0, None),
    ]


def test_fleet_documents_are_what_was_printed_before_and_documented() -> None:
    from agents.fleet import upgrade
    from agents.fleet.commands import plan_document, run_document, upgrade_document, versions_of
    from agents.ssh import Target

    results = _hosts()
    hosts = [r.to_dict() for r in results]
    plain = run_document(results).to_dict()
    assert plain == {"hosts": hosts} and "data" not in plain["hosts"][1]
    _valid(plain, FleetRun)
    status = run_document(results, versions_of(results)).to_dict()
    assert status == {"hosts": hosts, "versions": {"2": ["a"]}, "mixed_versions": False}
    _valid(status, FleetRun)
    assert run_document([], versions_of([])).to_dict() == {
        "hosts": [],
        "versions": {},
        "mixed_versions": False,
    }

    chosen = [
        Target(name, f"10.0.0.{i}", 22, "ops", None, upgrade_command="up {version}")
        for i, name in enumerate("abc")
    ]
    rollout = upgrade.plan(chosen, "2.1", 1, 5)
    planned = plan_document(rollout, chosen, "2.1").to_dict()
    assert planned == rollout.to_dict() | {"commands": {t.name: "up 2.1" for t in chosen}}
    _valid(planned, UpgradePlan)
    rollout.upgraded, rollout.failed, rollout.stopped_at = ["a"], {"b": "no"}, "batch 1"
    done = upgrade_document(rollout, results).to_dict()
    assert done == rollout.to_dict() | {"hosts": hosts}
    _valid(done, UpgradeRun)


def test_every_document_of_the_command_line_is_in_docs() -> None:
    documented = {model for _, _, model in DOCUMENTS}
    for model in (
        CaseListItem,
        CaseDetail,
        NotificationsDocument,
        DueDocument,
        AuditEntry,
        FleetRun,
        UpgradePlan,
        UpgradeRun,
    ):
        assert model in documented
