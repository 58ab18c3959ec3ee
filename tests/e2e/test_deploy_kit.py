"""The deployment kit against the real tools: promtool, amtool, Prometheus scraping a real
`opsagent run` (after a backup and a restore test), Alertmanager routing and inhibition,
systemd-analyze, the Grafana dashboards' queries, the runbooks and the IAM policies."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.support import services
from tests.support.services import free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PROM = DEPLOY / "prometheus"
RUNBOOK_PREFIX = "https://github.com/opsagent/opsagent/blob/main/deploy/runbooks/"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "grafana_generate", DEPLOY / "grafana/generate.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _alert_rules() -> list[dict[str, Any]]:
    rules = []
    for path in sorted((PROM / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules += [r for r in group["rules"] if "alert" in r]
    return rules


def _run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, **kwargs)


# --- promtool ----------------------------------------------------------------------------


def test_promtool_checks_config_rules_and_runs_the_rule_unit_tests() -> None:
    promtool = services.need("promtool")
    config = _run([promtool, "check", "config", str(PROM / "prometheus.yml")])
    assert config.returncode == 0, config.stdout + config.stderr
    rules = _run([promtool, "check", "rules", *map(str, sorted((PROM / "rules").glob("*.yml")))])
    assert rules.returncode == 0, rules.stdout + rules.stderr
    tests = sorted((PROM / "tests").glob("*.yml"))
    assert tests
    unit = _run([promtool, "test", "rules", *map(str, tests)])
    assert unit.returncode == 0, unit.stdout + unit.stderr
    assert "SUCCESS" in unit.stdout + unit.stderr


def test_every_alerting_rule_has_a_firing_and_a_quiet_unit_test() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in (PROM / "tests").glob("*.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {r["alert"] for r in _alert_rules()}
    assert len(names) >= 14
    assert names - fired == set(), "alerts with no test where they fire"
    assert names - quiet == set(), "alerts with no test where they stay quiet"


def test_every_alerting_rule_has_severity_summary_and_an_existing_runbook() -> None:
    for rule in _alert_rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "major", "moderate", "minor"}, name
        assert rule["labels"]["case"] in {"intake", "agent"}, name
        assert rule["annotations"]["summary"], name
        url = rule["annotations"]["runbook_url"]
        assert url.startswith(RUNBOOK_PREFIX), name
        page = DEPLOY / "runbooks" / url.removeprefix(RUNBOOK_PREFIX)
        assert page.is_file(), f"{name}: {page} missing"


# --- amtool and a real Alertmanager ---------------------------------------------------


def test_amtool_checks_the_config_and_routes_by_severity() -> None:
    amtool = services.need("amtool")
    config = str(DEPLOY / "alertmanager/alertmanager.yml")
    checked = _run([amtool, "check-config", config])
    assert checked.returncode == 0, checked.stdout + checked.stderr

    def receivers(*labels: str) -> str:
        out = _run([amtool, "config", "routes", "test", f"--config.file={config}", *labels])
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    assert receivers("severity=critical", "case=agent") == "pager"
    assert receivers("severity=critical", "case=intake") == "opsagent-cases,pager"
    assert receivers("severity=major", "case=intake") == "opsagent-cases,pager"
    # moderate/minor: the pager route (muted outside support hours) and the chat
    assert receivers("severity=moderate", "case=agent") == "pager,team-chat"
    assert receivers("severity=minor", "case=intake") == "opsagent-cases,pager,team-chat"


def _am_config_for_test(sink_url: str, intake_url: str) -> str:
    """The shipped config with its receivers pointed at loopback (no traffic leaves)."""
    config = yaml.safe_load((DEPLOY / "alertmanager/alertmanager.yml").read_text())
    config["receivers"] = [
        {
            "name": r["name"],
            "webhook_configs": [
                {"url": intake_url if r["name"] == "opsagent-cases" else f"{sink_url}/{r['name']}"}
            ],
        }
        for r in config["receivers"]
    ]
    config["route"]["group_wait"] = "1s"
    for route in config["route"]["routes"]:
        route["group_wait"] = "1s"
    return yaml.safe_dump(config)


def test_alertmanager_mutes_only_the_down_host_and_feeds_the_case_intake(
    tmp_path: Path,
) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[tuple[str, dict[str, Any]]] = []

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, json.loads(body)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    sink = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{sink.server_address[1]}"
    am = services.start_alertmanager(tmp_path / "am", _am_config_for_test(url, f"{url}/intake"))
    try:
        alerts = [
            {
                "labels": {
                    "alertname": "OpsagentAgentDown",
                    "instance": "app1:9108",
                    "severity": "critical",
                    "component": "opsagent",
                    "case": "intake",
                }
            },
            {
                "labels": {
                    "alertname": "OpsagentBackupStale",
                    "instance": "app1:9108",
                    "severity": "critical",
                    "component": "opsagent",
                    "case": "agent",
                    "source": "docs",
                }
            },
            {
                "labels": {
                    "alertname": "OpsagentBackupStale",
                    "instance": "app2:9108",
                    "severity": "critical",
                    "component": "opsagent",
                    "case": "agent",
                    "source": "docs",
                }
            },
        ]
        request = urllib.request.Request(
            f"{am.url}/api/v2/alerts",
            data=json.dumps(alerts).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        urllib.request.urlopen(request, timeout=10).read()

        def state() -> dict[str, list[str]]:
            body = urllib.request.urlopen(f"{am.url}/api/v2/alerts", timeout=10).read()
            return {
                f"{a['labels']['alertname']}@{a['labels']['instance']}": a["status"]["inhibitedBy"]
                for a in json.loads(body)
            }

        wait_for("inhibition computed", lambda: len(state()) == 3 and any(state().values()))
        now = state()
        assert now["OpsagentBackupStale@app1:9108"], "app1's symptom is muted while it is down"
        assert now["OpsagentBackupStale@app2:9108"] == [], "app2 is up: nothing muted there"
        assert now["OpsagentAgentDown@app1:9108"] == []

        def paged() -> set[tuple[str, str]]:
            return {
                (a["labels"]["alertname"], a["labels"]["instance"])
                for p, m in list(received)
                if p == "/pager"
                for a in m["alerts"]
            }

        # each (alertname, instance) group is sent on its own: wait for app2's page too
        wait_for(
            "notifications",
            lambda: (
                "/intake" in {p for p, _ in received}
                and ("OpsagentBackupStale", "app2:9108") in paged()
            ),
            timeout=30,
        )
        intake = [m for p, m in received if p == "/intake"]
        assert {a["labels"]["alertname"] for m in intake for a in m["alerts"]} == {
            "OpsagentAgentDown"
        }, "only case=intake alerts reach the case intake"
        assert ("OpsagentBackupStale", "app1:9108") not in paged()
    finally:
        am.process.stop()
        sink.shutdown()


# --- a real agent, scraped by a real Prometheus with the shipped rules -------------------


@dataclass
class Live:
    prometheus: services.PrometheusServer
    instance: str
    config: Path


def _metrics(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()


def _opsagent(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-m", "agents", *args, "--config", str(config)])


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """`opsagent run` with a files source, a backup and a passing restore test done, a
    check failing and a case acknowledged and resolved; Prometheus scraping it every
    second with the shipped recording and alerting rules."""
    tmp = tmp_path_factory.mktemp("live")
    data = tmp / "data"
    (data / "docs").mkdir(parents=True)
    for i in range(20):
        (data / "docs" / f"doc{i}.txt").write_text(f"document {i}\n" * (i + 1) * 100)
    key = tmp / "repo.key"
    key.write_text("live-test-password\n")
    key.chmod(0o600)
    flag = tmp / "flag"
    port = free_port()
    config = tmp / "config.yml"
    config.write_text(
        f"""
host: live-host
state_dir: {tmp / "state"}
exporter: {{listen: "127.0.0.1:{port}"}}
monitor:
  checks:
    - {{name: root-disk, kind: disk, path: {tmp}, min_free_percent: 1, interval: 2s}}
    - {{name: closed-port, kind: tcp, host: 127.0.0.1, port: {free_port()}, interval: 1s,
        severity: minor, failures_before_alert: 1}}
    - {{name: flag, kind: command, command: [test, -f, "{flag}"], interval: 1s,
        severity: moderate, failures_before_alert: 1, successes_before_recovery: 1}}
backup:
  repository: {tmp / "repo"}
  password_file: {key}
  schedule: {{every: 1h}}
  sources:
    - {{name: docs, kind: files, paths: ["{data / "docs"}"]}}
  retention: {{keep_last: 5}}
restore_test:
  schedule: {{every: 10s}}
  sandbox: {{kind: local, root: {tmp / "sandbox"}}}
  max_rto: 1h
  max_rpo: 26h
"""
    )
    init = _opsagent(config, "backup", "init")
    assert init.returncode == 0, init.stderr
    agent = subprocess.Popen(
        [sys.executable, "-m", "agents", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    prometheus = None
    try:
        wait_for(
            "a backup and a passing restore test",
            lambda: (
                'opsagent_backup_up{source="docs"} 1.0' in (m := _metrics(port))
                and "opsagent_restore_test_up 1.0" in m
            ),
            timeout=60,
            proc=agent,
        )
        cases = json.loads(_opsagent(config, "cases", "list", "--json").stdout)
        flag_case = next(c for c in cases if "flag" in c["title"])
        acked = _opsagent(config, "cases", "ack", str(flag_case["id"]), "--by", "tester")
        assert acked.returncode == 0, acked.stderr
        flag.touch()  # the check passes: the case resolves itself
        wait_for(
            "the flag case resolved",
            lambda: any(
                c["id"] == flag_case["id"] and c["status"] == "resolved"
                for c in json.loads(_opsagent(config, "cases", "list", "--json").stdout)
            ),
            timeout=20,
        )
        prom_dir = tmp / "prometheus"
        (prom_dir / "targets").mkdir(parents=True)
        (prom_dir / "targets" / "agent.yml").write_text(
            yaml.safe_dump([{"targets": [f"127.0.0.1:{port}"], "labels": {"env": "test"}}])
        )
        shipped = yaml.safe_load((PROM / "prometheus.yml").read_text())
        shipped["global"] |= {"scrape_interval": "1s", "evaluation_interval": "1s"}
        shipped["rule_files"] = [str(PROM / "rules" / "*.yml")]
        shipped["alerting"] = {"alertmanagers": []}
        for job in shipped["scrape_configs"]:
            job["scrape_interval"] = "1s"
            job["scrape_timeout"] = "1s"
            if job["job_name"] == "prometheus":
                job["static_configs"] = [{"targets": ["$SELF"]}]
            for sd in job.get("file_sd_configs", []):
                sd["files"] = [str(prom_dir / "targets" / "*.yml")]
                sd["refresh_interval"] = "1s"
        prometheus = services.start_prometheus(prom_dir, yaml.safe_dump(shipped))
        live = Live(prometheus, f"127.0.0.1:{port}", config)
        wait_for(
            "ten scrapes of the agent and evaluated rules",
            lambda: (
                _query(live, 'count_over_time(up{job="opsagent"}[1m])')[0]["value"][1] >= "10"
                and _query(live, "opsagent:backup_age_seconds")
            ),
            timeout=60,
        )
        yield live
    finally:
        if prometheus is not None:
            prometheus.process.stop()
        agent.terminate()
        agent.communicate(timeout=60)


def _query(live: Live, expr: str) -> list[dict[str, Any]]:
    url = f"{live.prometheus.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        body = json.loads(urllib.request.urlopen(url, timeout=30).read())
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{expr}: {exc.read().decode()}") from None
    assert body["status"] == "success", (expr, body)
    return body["data"]["result"]


def _substitute(expr: str, instance: str) -> str:
    return (
        expr.replace("$instance", instance)
        .replace("$__rate_interval", "15s")
        .replace("$__interval", "1s")
        .replace("$__range", "1h")
    )


def test_every_dashboard_panel_query_returns_data_from_a_live_agent(live: Live) -> None:
    generate = _generator()
    empty = []
    queried = 0
    for dashboard in generate.dashboards():
        for _row, panels in dashboard.rows:
            for panel in panels:
                for query in panel.queries:
                    if isinstance(query, generate.Sql):
                        continue  # SQL: tests/integration/test_grafana_cases_sql.py
                    result = _query(live, _substitute(query.expr, live.instance))
                    queried += 1
                    if not result and not panel.may_be_empty:
                        empty.append(f"{dashboard.uid} / {panel.title}: {query.expr}")
    assert queried >= 50
    assert empty == [], "panels with no data though the agent has produced it"


def test_every_alert_expression_evaluates_and_the_rules_are_healthy(live: Live) -> None:
    for rule in _alert_rules():
        _query(live, rule["expr"])  # raises on a query error
    body = json.loads(urllib.request.urlopen(f"{live.prometheus.url}/api/v1/rules").read())
    rules = [r for g in body["data"]["groups"] for r in g["rules"]]
    assert len(rules) == len(_alert_rules()) + 7
    wait_for(
        "every rule evaluated",
        lambda: all(
            r["health"] == "ok"
            for g in json.loads(
                urllib.request.urlopen(f"{live.prometheus.url}/api/v1/rules").read()
            )["data"]["groups"]
            for r in g["rules"]
        ),
        timeout=20,
    )


def test_the_live_agent_trips_exactly_the_alerts_it_should(live: Live) -> None:
    """A healthy backup and restore test: no backup/restore alert is pending or firing;
    the closed-port check is (it needs 5 minutes to fire: pending is what we can see)."""
    alerts = json.loads(urllib.request.urlopen(f"{live.prometheus.url}/api/v1/alerts").read())
    names = {a["labels"]["alertname"] for a in alerts["data"]["alerts"]}
    assert "OpsagentCheckFailing" in names
    quiet = {
        "OpsagentBackupFailed",
        "OpsagentBackupStale",
        "OpsagentRestoreTestFailed",
        "OpsagentRestoreTestStale",
        "OpsagentRTOOverTarget",
        "OpsagentRPOOverTarget",
        "OpsagentAgentDown",
    }
    assert names & quiet == set()
    failing = [
        a for a in alerts["data"]["alerts"] if a["labels"]["alertname"] == "OpsagentCheckFailing"
    ]
    assert {a["labels"]["check"] for a in failing} == {"closed-port"}


# --- Grafana files ---------------------------------------------------------------------


def test_dashboards_json_is_what_the_generator_writes(tmp_path: Path) -> None:
    generate = _generator()
    written = generate.write(tmp_path)
    shipped = sorted(p.name for p in (DEPLOY / "grafana/dashboards").glob("*.json"))
    assert sorted(p.name for p in written) == shipped
    for path in written:
        assert path.read_text() == (DEPLOY / "grafana/dashboards" / path.name).read_text(), (
            f"{path.name} is stale: run python deploy/grafana/generate.py"
        )
    titles = {json.loads(p.read_text())["title"] for p in written}
    assert titles == {
        "opsagent / Fleet overview",
        "opsagent / Host",
        "opsagent / Backups and restore tests",
        "opsagent / Cases and SLA",
        "opsagent / Cases (case store)",
    }


def test_grafana_provisioning_points_at_the_dashboards_datasource() -> None:
    datasources = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/opsagent.yml").read_text()
    )["datasources"]
    uids = {d["uid"] for d in datasources}
    providers = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/opsagent.yml").read_text()
    )["providers"]
    assert providers[0]["options"]["path"]
    for path in (DEPLOY / "grafana/dashboards").glob("*.json"):
        model = json.loads(path.read_text())
        for panel in model["panels"]:
            if panel["type"] == "row":
                continue
            assert panel["datasource"]["uid"] in uids, (path.name, panel["title"])
            assert panel["targets"], (path.name, panel["title"])
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, (path.name, panel["title"])


# --- systemd -----------------------------------------------------------------------------


def test_systemd_units_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    units = sorted((DEPLOY / "systemd").glob("opsagent*"))
    assert {u.name for u in units} == {
        "opsagent.service",
        "opsagent-backup.service",
        "opsagent-backup.timer",
        "opsagent-restore-test.service",
        "opsagent-restore-test.timer",
    }
    # ExecStart must name an executable that exists: point it at this checkout's agent
    agent = tmp_path / "opt/opsagent/bin/opsagent"
    agent.parent.mkdir(parents=True)
    agent.symlink_to(Path(sys.executable).with_name("opsagent"))
    for unit in units:
        text = unit.read_text().replace("/opt/opsagent", str(tmp_path / "opt/opsagent"))
        (tmp_path / unit.name).write_text(text)
    out = _run(
        [analyze, "verify", *(str(tmp_path / u.name) for u in units)],
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"},
    )
    problems = [
        line
        for line in (out.stdout + out.stderr).splitlines()
        if line.strip() and "opsagent" in line
    ]
    assert out.returncode == 0 and problems == [], out.stdout + out.stderr
    service = (DEPLOY / "systemd/opsagent.service").read_text()
    for setting in (
        "User=opsagent",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "ProtectHome=",
        "CapabilityBoundingSet=\n",
    ):
        assert setting in service, setting
    for timer in ("opsagent-backup.timer", "opsagent-restore-test.timer"):
        text = (DEPLOY / "systemd" / timer).read_text()
        assert "Persistent=true" in text and "RandomizedDelaySec=" in text


# --- runbooks -----------------------------------------------------------------------------


def _runbook_commands() -> list[tuple[str, str]]:
    commands = []
    for page in sorted((DEPLOY / "runbooks").glob("*.md")):
        in_code = False
        for line in page.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith("```"):
                in_code = not in_code
                continue
            if in_code and stripped.startswith("opsagent "):
                commands.append((page.name, stripped))
    return commands


def test_every_opsagent_command_in_the_runbooks_exists() -> None:
    import shlex

    commands = _runbook_commands()
    assert len(commands) >= 30
    env = {**os.environ, "OPSAGENT_CONFIG": "/nonexistent/config.yml"}
    for page, command in commands:
        argv = shlex.split(command)[1:]
        out = _run([sys.executable, "-m", "agents", *argv, "--help"], env=env)
        assert out.returncode == 0, f"{page}: `{command}`: {out.stderr.strip()}"


def test_every_alert_and_case_kind_has_a_runbook_page() -> None:
    pages = {p.stem for p in (DEPLOY / "runbooks").glob("*.md")}
    for rule in _alert_rules():
        assert rule["annotations"]["runbook_url"].removeprefix(RUNBOOK_PREFIX)[:-3] in pages
    for kind in ("check", "backup", "restore-test", "maintenance", "alert"):
        assert f"case-{kind}" in pages
    index = (DEPLOY / "runbooks/README.md").read_text()
    for page in pages - {"README"}:
        assert f"({page}.md)" in index, f"{page} not linked from the runbook index"
    linked = set(re.findall(r"\]\(([\w-]+)\.md\)", index))
    assert linked <= pages


# --- docs/metrics.md against a live scrape ------------------------------------------------


def _documented_metrics() -> dict[str, bool]:
    """Metric names in docs/metrics.md's tables -> whether the row says it may be absent."""
    documented = {}
    for line in (REPO / "docs/metrics.md").read_text().splitlines():
        if not line.startswith("| `opsagent_"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        conditional = "only when" in cells[-1].lower()
        for name in re.findall(r"`(opsagent_[a-z0-9_]+)`", cells[0]):
            documented[name] = conditional
    return documented


def test_metrics_reference_matches_a_live_scrape(live: Live) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    body = urllib.request.urlopen(f"http://{live.instance}/metrics", timeout=10).read().decode()
    scraped = {}
    for family in text_string_to_metric_families(body):
        name = family.name + ("_total" if family.type == "counter" else "")
        scraped[name] = family
    documented = _documented_metrics()
    undocumented = sorted(set(scraped) - set(documented))
    assert undocumented == [], "exported but not in docs/metrics.md"
    missing = sorted(
        n for n, conditional in documented.items() if n not in scraped and not conditional
    )
    assert missing == [], "documented (unconditionally) but not exported"
    type_of = {}
    for line in (REPO / "docs/metrics.md").read_text().splitlines():
        if line.startswith("| `opsagent_"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            for name in re.findall(r"`(opsagent_[a-z0-9_]+)`", cells[0]):
                type_of[name] = cells[1]
    for name, family in scraped.items():
        assert type_of[name] == family.type, f"{name}: documented {type_of[name]}, is {family.type}"
