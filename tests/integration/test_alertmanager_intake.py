"""A real Alertmanager posting to the intake: firing opens a case, resolved resolves it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry

from agents.cases.store import CaseStore
from agents.config import CasesConfig
from agents.results import Severity
from exporters.alertmanager import PATH, AlertmanagerIntake, intake_app
from exporters.http import ExporterServer, exporter_app
from tests.support import services


def post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def start_intake(tmp_path: Path) -> tuple[ExporterServer, CaseStore]:
    store = CaseStore(f"sqlite:///{tmp_path / 'cases.db'}")
    app = exporter_app(
        CollectorRegistry(),
        lambda: True,
        {PATH: intake_app(AlertmanagerIntake(store, CasesConfig()))},
    )
    return ExporterServer("127.0.0.1", 0, app).start(), store


def test_real_alertmanager_opens_and_resolves_a_case(tmp_path: Path) -> None:
    server, store = start_intake(tmp_path)
    config = f"""
route: {{receiver: opsagent, group_wait: 0s, group_interval: 1s, repeat_interval: 1h}}
receivers:
  - name: opsagent
    webhook_configs: [{{url: "http://127.0.0.1:{server.port}{PATH}", send_resolved: true}}]
"""
    am = services.start_alertmanager(tmp_path / "am", config)
    try:
        now = datetime.now(UTC)
        alert = {
            "labels": {"alertname": "DiskFilling", "severity": "critical", "instance": "app-01"},
            "annotations": {"summary": "/ will be full in 3 hours"},
            "startsAt": now.isoformat(),
            "endsAt": (now + timedelta(minutes=10)).isoformat(),
        }
        status, _ = post(f"{am.url}/api/v2/alerts", json.dumps([alert]).encode())
        assert status == 200
        services.wait_for("a case from Alertmanager", lambda: store.cases("open"), timeout=20)
        case = store.cases("open")[0]
        assert case.severity is Severity.CRITICAL
        assert case.title == "DiskFilling: / will be full in 3 hours"
        assert case.host == "app-01" and case.fingerprint.startswith("alertmanager:")
        alert["endsAt"] = datetime.now(UTC).isoformat()
        post(f"{am.url}/api/v2/alerts", json.dumps([alert]).encode())
        services.wait_for(
            "the case to resolve", lambda: store.get(case.id).status == "resolved", timeout=20
        )
    finally:
        am.process.stop()
        server.stop()


def test_bad_bodies_change_nothing(tmp_path: Path) -> None:
    server, store = start_intake(tmp_path)
    url = f"http://127.0.0.1:{server.port}{PATH}"
    try:
        assert post(url, b"not json")[0] == 400
        assert post(url, json.dumps({"version": "3", "alerts": []}).encode())[0] == 400
        half_bad = {
            "version": "4",
            "alerts": [
                {"status": "firing", "fingerprint": "a1", "labels": {"alertname": "Ok"}},
                {"status": "maybe", "fingerprint": "a2"},
            ],
        }
        assert post(url, json.dumps(half_bad).encode())[0] == 400
        assert post(url, b"x" * (1 << 20 | 1))[0] == 413
        assert store.cases() == []
        good = {
            "version": "4",
            "receiver": "r",
            "status": "firing",
            "truncatedAlerts": 3,
            "alerts": [
                {
                    "status": "firing",
                    "fingerprint": "a1",
                    "labels": {"alertname": "Backlog", "severity": "warning"},
                    "annotations": {},
                }
            ],
        }
        assert post(url, json.dumps(good).encode()) == (200, {"firing": 1, "resolved": 0})
        case = store.cases()[0]
        assert case.severity is Severity.MODERATE
        assert any("truncated 3 alert(s)" in (e.text or "") for e in store.events(case.id))
    finally:
        server.stop()
