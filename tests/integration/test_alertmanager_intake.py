"""A real Alertmanager posting to the intake: firing opens a case, resolved resolves it;
hostile and generated bodies on both stores: 2xx or 4xx, never 5xx, and 4xx records nothing."""

from __future__ import annotations

import io
import json
import logging
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from agents.cases.store import CaseStore
from agents.config import CasesConfig
from agents.results import Severity
from exporters.alertmanager import PATH, AlertmanagerIntake, intake_app
from exporters.http import ExporterServer, WSGIApp, exporter_app
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
        {PATH: intake_app(AlertmanagerIntake(store, CasesConfig(), "agent-host"))},
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


# --- one message, whole or not at all, on both stores ----------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> CaseStore:
    """An empty case store of each kind: the embedded SQLite one and a real PostgreSQL."""
    if request.param == "sqlite":
        return CaseStore(f"sqlite:///{tmp_path / 'cases.db'}")
    return CaseStore(request.getfixturevalue("pg_database").dsn)


def call(app: WSGIApp, body: bytes) -> tuple[int, dict[str, Any]]:
    """POST a body to a WSGI app in this thread; the status code and the JSON answer."""
    answer: list[str] = []
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": PATH,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    data = b"".join(app(environ, lambda status, headers: answer.append(status)))
    return int(answer[0].split()[0]), json.loads(data)


def snapshot(store: CaseStore) -> list[tuple[dict[str, Any], int]]:
    """Every case and the length of its timeline: what a refused message must not change."""
    return [(case.to_dict(), len(store.events(case.id))) for case in store.cases()]


def message(*alerts: dict[str, Any], **extra: Any) -> bytes:
    return json.dumps({"version": "4", "receiver": "r", "alerts": list(alerts), **extra}).encode()


def firing(fingerprint: str, **labels: str) -> dict[str, Any]:
    return {
        "status": "firing",
        "fingerprint": fingerprint,
        "labels": {"alertname": "Disk", **labels},
        "annotations": {"summary": "filling"},
    }


GOOD = firing("good", instance="app-01")
HOSTILE = {
    "100k-deep arrays": b"[" * 100_000 + b"]" * 100_000,
    "100k-deep objects": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "5000-deep inside an alert": message(GOOD, {**firing("x"), "extra": "deep"}).replace(
        b'"deep"', b"[" * 5000 + b"]" * 5000
    ),
    "a 900-deep version": message(GOOD, version="deep").replace(b'"deep"', b"[" * 900 + b"]" * 900),
    "NUL in a summary": message(GOOD, {**firing("x"), "annotations": {"summary": "a\0b"}}),
    "NUL in a label name": message(GOOD, firing("x", **{"inst\0ance": "h"})),
    "NUL in a fingerprint": message(GOOD, firing("x\0y")),
    "NUL in the receiver": message(GOOD, receiver="r\0"),
    "unpaired surrogate": message(GOOD, firing("x", instance="\ud800")),
    "surrogate bytes": message(GOOD).replace(b"app-01", b"app-\xed\xa0\x80"),
    "invalid UTF-8": message(GOOD).replace(b"app-01", b"app-\xff\xfe"),
    "a 5000-digit number": message(GOOD).replace(b'"r"', b"1" * 5000),
    "a huge count": message(GOOD, truncatedAlerts=2**70),
    "an infinite count": message(GOOD).replace(b'"r"', b'"r", "truncatedAlerts": 1e999'),
    "NaN": message(GOOD).replace(b'"r"', b'"r", "truncatedAlerts": NaN'),
    "an array": b"[]",
    "a string": b'"version 4"',
    "a number": b"4",
    "null": b"null",
    "empty": b"",
    "a label that is a number": message(GOOD, firing("x", instance=5)),  # type: ignore[arg-type]
    "labels that are a list": message(GOOD, {**firing("x"), "labels": ["a"]}),
    "a receiver that is an object": message(GOOD, receiver={"a": 1}),
    "a fingerprint that is a number": message(GOOD, {**firing("x"), "fingerprint": 7}),
    "a fingerprint of 10k characters": message(GOOD, firing("f" * 10_000)),
    "one alert of two malformed": message(GOOD, {"status": "maybe", "fingerprint": "a2"}),
    "an alert that is a string": message(GOOD, "firing"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_bodies_are_400_and_record_nothing(
    store: CaseStore, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = intake_app(AlertmanagerIntake(store, CasesConfig(), "agent-host"))
    status, answer = call(app, HOSTILE[name])
    assert status == 400, answer
    assert answer["error"] and "\n" not in answer["error"]
    assert store.cases() == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert call(app, message(GOOD)) == (200, {"firing": 1, "resolved": 0})


def test_an_alert_without_instance_gets_the_agents_host(store: CaseStore) -> None:
    app = intake_app(AlertmanagerIntake(store, CasesConfig(), "agent-host"))
    assert call(app, message(firing("a"), firing("b", instance="  ")))[0] == 200
    assert [case.host for case in store.cases()] == ["agent-host", "agent-host"]


def test_a_flapping_alert_reopens_its_case(store: CaseStore) -> None:
    app = intake_app(AlertmanagerIntake(store, CasesConfig(reopen_within="1h"), "h"))
    resolved = {**firing("flap"), "status": "resolved"}
    assert call(app, message(firing("flap")))[0] == 200
    assert call(app, message(resolved)) == (200, {"firing": 0, "resolved": 1})
    assert call(app, message(firing("flap")))[0] == 200
    [case] = store.cases()
    assert case.status == "reopened" and case.occurrences == 2
    assert [e.kind for e in store.events(case.id)] == ["opened", "resolved", "reopened"]

    eager = intake_app(AlertmanagerIntake(store, CasesConfig(reopen_within="0s"), "h"))
    assert call(eager, message(resolved))[0] == 200
    assert call(eager, message(firing("flap")))[0] == 200
    newest, first = store.cases()
    assert (first.id, first.status) == (case.id, "resolved")
    assert newest.status == "open" and newest.id != case.id


def test_an_unreachable_store_is_503_in_one_log_line(
    pg_database: services.Database, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture
) -> None:
    """PostgreSQL refusing connections: 503 (Alertmanager resends), one warning, no
    traceback; once it is back the resent message is recorded."""
    import psycopg

    store = CaseStore(pg_database.dsn)
    app = exporter_app(
        CollectorRegistry(),
        lambda: True,
        {PATH: intake_app(AlertmanagerIntake(store, CasesConfig(), "h"))},
    )
    server = ExporterServer("127.0.0.1", 0, app).start()
    url = f"http://127.0.0.1:{server.port}{PATH}"
    name = pg_database.name

    def allow(connections: bool) -> None:
        with psycopg.connect(services.PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(connections).lower()}')
            if not connections:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (name,),
                )

    try:
        assert post(url, message(firing("one")))[0] == 200
        allow(False)
        caplog.clear()
        assert post(url, message(firing("two"))) == (503, {"error": "case store unavailable"})
        warnings = [r for r in caplog.records if r.name == "opsagent.alertmanager"]
        assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
        assert "\n" not in warnings[0].getMessage() and not warnings[0].exc_info
        allow(True)
        assert post(url, message(firing("two")))[0] == 200
    finally:
        allow(True)
        server.stop()
    # a new store: this thread's connection was one of those terminated
    fingerprints = sorted(c.fingerprint for c in CaseStore(pg_database.dsn).cases())
    assert fingerprints == ["alertmanager:one", "alertmanager:two"]
    assert "Traceback" not in capfd.readouterr().err


# --- generated bodies ------------------------------------------------------------------

texts = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", " ", "\0", "a\0", "\ud800", "x\udfff", "instance", "severity"]),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**80), 2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    texts,
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(texts, inner, max_size=3)),
    max_leaves=10,
)
alerts = st.fixed_dictionaries(
    {},
    optional={
        "status": st.one_of(st.sampled_from(["firing", "resolved"]), values),
        "fingerprint": st.one_of(st.sampled_from(["f1", "f2", "f3"]), texts, values),
        "labels": st.one_of(st.dictionaries(texts, texts, max_size=4), values),
        "annotations": st.one_of(st.dictionaries(texts, texts, max_size=3), values),
    },
)
label_names = st.sampled_from(["alertname", "instance", "severity", "job"])
well_formed = st.fixed_dictionaries(
    {
        "version": st.just("4"),
        "receiver": st.text(max_size=8),
        "alerts": st.lists(
            st.fixed_dictionaries(
                {
                    "status": st.sampled_from(["firing", "resolved"]),
                    "fingerprint": st.sampled_from(["f1", "f2", "f3"]),
                    "labels": st.dictionaries(label_names, st.text(max_size=8), max_size=4),
                    "annotations": st.dictionaries(st.just("summary"), texts, max_size=1),
                }
            ),
            max_size=3,
        ),
    }
)
messages = st.one_of(
    values,
    well_formed,
    st.fixed_dictionaries(
        {"version": st.one_of(st.just("4"), values), "alerts": st.lists(alerts, max_size=3)},
        optional={"receiver": values, "truncatedAlerts": st.one_of(st.integers(0, 3), values)},
    ),
)
bodies = st.one_of(
    messages.map(lambda m: json.dumps(m).encode()),
    st.binary(max_size=200),
    messages.map(lambda m: json.dumps(m).encode()).flatmap(
        lambda b: st.binary(max_size=4).map(
            lambda noise: b[: len(b) // 2] + noise + b[len(b) // 2 :]
        )
    ),
    st.integers(1, 100_000).map(lambda n: b"[" * n + b"]" * n),
)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(body=bodies)
def test_generated_bodies_answer_2xx_or_4xx_and_4xx_changes_nothing(
    store: CaseStore, caplog: pytest.LogCaptureFixture, body: bytes
) -> None:
    app = intake_app(AlertmanagerIntake(store, CasesConfig(), "agent-host"))
    before = snapshot(store)
    caplog.clear()
    status, answer = call(app, body)
    event(f"HTTP {status}")
    assert 200 <= status < 500, answer
    if status >= 400:
        assert snapshot(store) == before
    assert all(case.host for case in store.cases())
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
