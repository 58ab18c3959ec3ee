"""Generate opsagent's Grafana dashboards as JSON (deploy/grafana/dashboards/*.json).

The dashboards are kept in the repository as JSON, so Grafana provisioning needs nothing
but the files; this script is their source. Edit here, run
`python deploy/grafana/generate.py`, and commit both; the test suite fails when the JSON
is not what this script writes, and runs every panel query against a real Prometheus
scraping a real agent.

Plain dictionaries, no dashboard library: the JSON model used (schemaVersion 39) is small
and stable, and one dependency fewer is one upgrade fewer.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "opsagent-prometheus"}
HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards"


@dataclass
class Query:
    expr: str
    legend: str = ""
    instant: bool = False


@dataclass
class Panel:
    title: str
    queries: list[Query]
    kind: str = "timeseries"  # timeseries | stat | table | bargauge
    unit: str = "short"
    width: int = 12
    height: int = 8
    description: str = ""
    # empty on a healthy, young install (no breach yet, no certificate seen): the live
    # test accepts no series for these and only checks that the queries run
    may_be_empty: bool = False
    thresholds: list[tuple[float, str]] = field(default_factory=list)


@dataclass
class Dashboard:
    uid: str
    title: str
    description: str
    rows: list[tuple[str, list[Panel]]]
    host_variable: bool = False


def _target(query: Query, ref: str) -> dict[str, Any]:
    target: dict[str, Any] = {
        "datasource": DATASOURCE,
        "expr": query.expr,
        "refId": ref,
        "legendFormat": query.legend or "__auto",
    }
    if query.instant:
        target |= {"instant": True, "range": False, "format": "table"}
    return target


def _panel(panel: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    steps = [{"color": "green", "value": None}] + [
        {"color": color, "value": value} for value, color in panel.thresholds
    ]
    out: dict[str, Any] = {
        "id": pid,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": panel.width, "h": panel.height},
        "targets": [_target(q, chr(ord("A") + i)) for i, q in enumerate(panel.queries)],
        "fieldConfig": {
            "defaults": {
                "unit": panel.unit,
                "thresholds": {"mode": "absolute", "steps": steps},
            },
            "overrides": [],
        },
        "options": {},
    }
    if panel.kind == "table":
        out["transformations"] = [{"id": "merge", "options": {}}]
    if panel.kind == "stat":
        out["options"] = {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "background"}
    return out


def render(dashboard: Dashboard) -> dict[str, Any]:
    """The Grafana JSON model of one dashboard, rows laid out top to bottom."""
    panels: list[dict[str, Any]] = []
    pid = 1
    y = 0
    for row_title, row_panels in dashboard.rows:
        panels.append(
            {
                "id": pid,
                "type": "row",
                "title": row_title,
                "collapsed": False,
                "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
                "panels": [],
            }
        )
        pid += 1
        y += 1
        x = 0
        line_height = 0
        for panel in row_panels:
            if x + panel.width > 24:
                x, y = 0, y + line_height
                line_height = 0
            panels.append(_panel(panel, pid, x, y))
            pid += 1
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    templating: list[dict[str, Any]] = []
    if dashboard.host_variable:
        templating.append(
            {
                "name": "instance",
                "label": "Host",
                "type": "query",
                "datasource": DATASOURCE,
                "query": {"query": 'label_values(up{job="opsagent"}, instance)', "refId": "I"},
                "definition": 'label_values(up{job="opsagent"}, instance)',
                "refresh": 2,
                "sort": 1,
                "includeAll": False,
                "multi": False,
            }
        )
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": ["opsagent"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "1m",
        "time": {"from": "now-24h", "to": "now"},
        "templating": {"list": templating},
        "annotations": {"list": []},
        "links": [
            {
                "title": "opsagent dashboards",
                "type": "dashboards",
                "tags": ["opsagent"],
                "asDropdown": True,
            }
        ],
        "panels": panels,
    }


H = '{instance="$instance"}'  # the host selector of the Host dashboard


def dashboards() -> list[Dashboard]:
    """Every dashboard opsagent ships."""
    fleet = Dashboard(
        uid="opsagent-fleet",
        title="opsagent / Fleet overview",
        description="Every host: agent up, checks failing, backups, restore tests, open cases.",
        rows=[
            (
                "Fleet",
                [
                    Panel(
                        "Agents up",
                        [Query('sum(up{job="opsagent"})', "up")],
                        kind="stat",
                        width=4,
                        height=4,
                    ),
                    Panel(
                        "Agents down",
                        [Query('count(up{job="opsagent"} == 0) or vector(0)', "down")],
                        kind="stat",
                        width=4,
                        height=4,
                        thresholds=[(1, "red")],
                    ),
                    Panel(
                        "Checks failing",
                        [Query("sum(instance:opsagent_checks_failing:count)", "failing")],
                        kind="stat",
                        width=4,
                        height=4,
                        thresholds=[(1, "red")],
                    ),
                    Panel(
                        "Oldest last backup",
                        [Query("max(opsagent:backup_age_seconds)", "age")],
                        kind="stat",
                        unit="s",
                        width=4,
                        height=4,
                        thresholds=[(26 * 3600, "red")],
                    ),
                    Panel(
                        "Restore tests failing",
                        [Query("count(opsagent_restore_test_up == 0) or vector(0)", "failing")],
                        kind="stat",
                        width=4,
                        height=4,
                        thresholds=[(1, "red")],
                    ),
                    Panel(
                        "Open critical cases",
                        [Query('sum(opsagent_cases_open{severity="critical"})', "critical")],
                        kind="stat",
                        width=4,
                        height=4,
                        thresholds=[(1, "red")],
                    ),
                ],
            ),
            (
                "Hosts",
                [
                    Panel(
                        "Every host",
                        [
                            Query('up{job="opsagent"}', instant=True),
                            Query("instance:opsagent_checks_failing:count", instant=True),
                            Query("max by (instance) (opsagent:backup_age_seconds)", instant=True),
                            Query("opsagent_restore_test_up", instant=True),
                            Query("opsagent:restore_test_age_seconds", instant=True),
                            Query(
                                'sum by (instance) (opsagent_cases_open{severity="critical"})',
                                instant=True,
                            ),
                            Query(
                                'sum by (instance) (opsagent_cases_open{severity="major"})',
                                instant=True,
                            ),
                            Query(
                                'sum by (instance) (opsagent_cases_open{severity=~"moderate|minor"})',  # noqa: E501
                                instant=True,
                            ),
                        ],
                        kind="table",
                        width=24,
                        height=10,
                        description="Columns: up, checks failing, last backup age (s), last"
                        " restore test passed, restore test age (s), open cases: critical,"
                        " major, moderate+minor.",
                    ),
                    Panel(
                        "Open cases by severity",
                        [Query("sum by (severity) (opsagent_cases_open)", "{{severity}}")],
                        kind="bargauge",
                        width=8,
                    ),
                    Panel(
                        "Last backup age by host",
                        [Query("max by (instance) (opsagent:backup_age_seconds)", "{{instance}}")],
                        unit="s",
                        width=8,
                    ),
                    Panel(
                        "Checks failing by host",
                        [Query("instance:opsagent_checks_failing:count", "{{instance}}")],
                        width=8,
                    ),
                ],
            ),
        ],
    )
    host = Dashboard(
        uid="opsagent-host",
        title="opsagent / Host",
        description="One host: CPU, memory, disks, network and its checks.",
        host_variable=True,
        rows=[
            (
                "Resources",
                [
                    Panel(
                        "CPU by mode",
                        [
                            Query(
                                "sum by (mode) (rate(opsagent_cpu_seconds_total"
                                + H
                                + "[$__rate_interval]))",
                                "{{mode}}",
                            )
                        ],
                        unit="s",
                        width=8,
                    ),
                    Panel(
                        "Load",
                        [
                            Query("opsagent_load1" + H, "1m"),
                            Query("opsagent_load5" + H, "5m"),
                            Query("opsagent_load15" + H, "15m"),
                        ],
                        width=8,
                    ),
                    Panel(
                        "Memory",
                        [
                            Query("opsagent_memory_used_bytes" + H, "used"),
                            Query("opsagent_memory_available_bytes" + H, "available"),
                            Query("opsagent_memory_total_bytes" + H, "total"),
                        ],
                        unit="bytes",
                        width=8,
                    ),
                    Panel(
                        "Disk space used",
                        [
                            Query(
                                "1 - opsagent_filesystem_avail_bytes"
                                + H
                                + " / opsagent_filesystem_size_bytes"
                                + H,
                                "{{mountpoint}}",
                            )
                        ],
                        unit="percentunit",
                        width=8,
                        thresholds=[(0.8, "orange"), (0.9, "red")],
                    ),
                    Panel(
                        "Disk full forecast (24 h ahead)",
                        [
                            Query(
                                "predict_linear(opsagent_filesystem_avail_bytes"
                                + H
                                + "[6h], 86400)",
                                "{{mountpoint}}",
                            )
                        ],
                        unit="bytes",
                        width=8,
                        description="Free bytes in 24 h at the last 6 h rate; below 0 pages.",
                    ),
                    Panel(
                        "Network",
                        [
                            Query(
                                "rate(opsagent_network_receive_bytes_total"
                                + H
                                + "[$__rate_interval])",
                                "rx {{interface}}",
                            ),
                            Query(
                                "-rate(opsagent_network_transmit_bytes_total"
                                + H
                                + "[$__rate_interval])",
                                "tx {{interface}}",
                            ),
                        ],
                        unit="Bps",
                        width=8,
                    ),
                ],
            ),
            (
                "Checks",
                [
                    Panel(
                        "Checks",
                        [
                            Query("opsagent_check_up" + H, instant=True),
                            Query("opsagent_check_consecutive_failures" + H, instant=True),
                            Query("opsagent_check_duration_seconds" + H, instant=True),
                        ],
                        kind="table",
                        width=12,
                        description="Columns: up, failures in a row, last duration (s).",
                    ),
                    Panel(
                        "Check state over time",
                        [Query("opsagent_check_up" + H, "{{check}}")],
                        width=12,
                    ),
                    Panel(
                        "Check duration",
                        [Query("opsagent_check_duration_seconds" + H, "{{check}}")],
                        unit="s",
                        width=12,
                    ),
                    Panel(
                        "Certificate days left",
                        [Query("opsagent_check_certificate_days_left" + H, "{{check}}")],
                        unit="d",
                        width=12,
                        may_be_empty=True,
                        description="Only https checks report a certificate.",
                        thresholds=[(0, "red"), (3, "orange"), (14, "green")],
                    ),
                    Panel(
                        "Agent process",
                        [
                            Query("opsagent_process_resident_memory_bytes" + H, "RSS"),
                            Query("opsagent_process_open_fds" + H, "open fds"),
                        ],
                        width=12,
                    ),
                ],
            ),
        ],
    )
    backups = Dashboard(
        uid="opsagent-backups",
        title="opsagent / Backups and restore tests",
        description="Backup duration and size, repository growth and dedup, RPO and RTO"
        " against their targets, restore-test step timings.",
        host_variable=True,
        rows=[
            (
                "Backups",
                [
                    Panel(
                        "Backup duration",
                        [Query("opsagent_backup_duration_seconds" + H, "{{source}}")],
                        unit="s",
                        width=8,
                    ),
                    Panel(
                        "Snapshot size",
                        [Query("opsagent_backup_last_size_bytes" + H, "{{source}}")],
                        unit="bytes",
                        width=8,
                    ),
                    Panel(
                        "Added and stored per backup",
                        [
                            Query("opsagent_backup_last_added_bytes" + H, "added {{source}}"),
                            Query("opsagent_backup_last_stored_bytes" + H, "stored {{source}}"),
                        ],
                        unit="bytes",
                        width=8,
                    ),
                    Panel(
                        "Repository size",
                        [
                            Query("opsagent_repository_size_bytes" + H, "stored"),
                            Query("opsagent_repository_logical_bytes" + H, "logical"),
                        ],
                        unit="bytes",
                        width=8,
                    ),
                    Panel(
                        "Dedup ratio",
                        [Query("instance:opsagent_repository_dedup:ratio" + H, "logical/stored")],
                        width=8,
                    ),
                    Panel(
                        "Snapshots",
                        [Query("opsagent_repository_snapshots" + H, "snapshots")],
                        width=8,
                    ),
                ],
            ),
            (
                "Recovery objectives",
                [
                    Panel(
                        "RPO: age of the last backup against the target",
                        [
                            Query("opsagent:backup_age_seconds" + H, "{{source}}"),
                            Query("opsagent_restore_test_rpo_seconds" + H, "at restore test"),
                            Query("opsagent_restore_test_rpo_target_seconds" + H, "target"),
                        ],
                        unit="s",
                        width=12,
                    ),
                    Panel(
                        "RTO: time to recover against the target",
                        [
                            Query("opsagent_restore_test_rto_seconds" + H, "measured"),
                            Query("opsagent_restore_test_rto_target_seconds" + H, "target"),
                        ],
                        unit="s",
                        width=12,
                    ),
                ],
            ),
            (
                "Restore tests",
                [
                    Panel(
                        "Restore test result",
                        [Query("opsagent_restore_test_up" + H, "passed")],
                        kind="stat",
                        width=6,
                        thresholds=[(0, "red"), (1, "green")],
                    ),
                    Panel(
                        "Last passing restore test",
                        [Query("opsagent:restore_test_age_seconds" + H, "age")],
                        kind="stat",
                        unit="s",
                        width=6,
                    ),
                    Panel(
                        "Data verified (rolling window)",
                        [Query("opsagent_restore_test_data_coverage_ratio" + H, "coverage")],
                        unit="percentunit",
                        width=12,
                    ),
                    Panel(
                        "Restore test step timings",
                        [Query("opsagent_restore_test_step_duration_seconds" + H, "{{step}}")],
                        unit="s",
                        width=24,
                    ),
                    Panel(
                        "Job runs",
                        [
                            Query(
                                "increase(opsagent_job_runs_total" + H + "[1h])",
                                "{{task}} {{status}}",
                            )
                        ],
                        width=24,
                    ),
                ],
            ),
        ],
    )
    cases = Dashboard(
        uid="opsagent-cases",
        title="opsagent / Cases and SLA",
        description="Open cases by severity, SLA breaches, time to respond and resolve.",
        rows=[
            (
                "Cases",
                [
                    Panel(
                        "Open cases by severity",
                        [
                            Query(
                                "sum by (severity) (instance:opsagent_cases_open:sum)",
                                "{{severity}}",
                            )
                        ],
                        width=12,
                    ),
                    Panel(
                        "Open cases by host",
                        [
                            Query(
                                "sum by (instance, severity) (opsagent_cases_open) > 0",
                                "{{instance}} {{severity}}",
                            )
                        ],
                        kind="table",
                        width=12,
                        may_be_empty=True,
                        description="Hosts with open cases only.",
                    ),
                    Panel(
                        "SLA breaches (24 h)",
                        [
                            Query(
                                "sum by (severity, target)"
                                " (increase(opsagent_sla_breaches_total[24h]))",
                                "{{severity}} {{target}}",
                            )
                        ],
                        width=12,
                        may_be_empty=True,
                        description="Empty until a case misses a target.",
                    ),
                    Panel(
                        "SLA compliance (30 days)",
                        [
                            Query(
                                "min by (severity) (opsagent_sla_compliance_ratio)", "{{severity}}"
                            )
                        ],
                        unit="percentunit",
                        width=12,
                    ),
                    Panel(
                        "Time to respond (median, 30 days)",
                        [
                            Query(
                                'max by (severity) (opsagent_cases_respond_seconds{quantile="0.5"})',  # noqa: E501
                                "{{severity}}",
                            )
                        ],
                        unit="s",
                        width=12,
                    ),
                    Panel(
                        "Time to resolve (median and p90, 30 days)",
                        [
                            Query(
                                "max by (severity, quantile) (opsagent_cases_resolve_seconds)",
                                "{{severity}} p{{quantile}}",
                            )
                        ],
                        unit="s",
                        width=12,
                    ),
                    Panel(
                        "Notifications",
                        [
                            Query(
                                "sum by (notifier)"
                                " (increase(opsagent_notifications_delivered_total[1h]))",
                                "{{notifier}} delivered",
                            ),
                            Query(
                                "sum by (notifier)"
                                " (increase(opsagent_notifications_failed_total[1h]))",
                                "{{notifier}} failed for good",
                            ),
                            Query(
                                "max by (notifier) (opsagent_notifications_waiting)",
                                "{{notifier}} waiting",
                            ),
                            Query(
                                "max by (notifier) (opsagent_notifications_undeliverable)",
                                "{{notifier}} undeliverable",
                            ),
                        ],
                        width=24,
                        may_be_empty=True,
                        description="Empty when no notifier is configured.",
                    ),
                ],
            ),
        ],
    )
    return [fleet, host, backups, cases]


def write(out: Path = OUT) -> list[Path]:
    """Write every dashboard as pretty JSON; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for dashboard in dashboards():
        path = out / f"{dashboard.uid}.json"
        path.write_text(json.dumps(render(dashboard), indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT):
        print(written_path)
