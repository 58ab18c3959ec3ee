"""Generate opsagent's Grafana dashboards as JSON (deploy/grafana/dashboards/*.json).

The dashboards are kept in the repository as JSON, so Grafana provisioning needs nothing
but the files; this script is their source. Edit here, run
`python deploy/grafana/generate.py`, and commit both; the test suite fails when the JSON
is not what this script writes, runs every Prometheus panel query against a real
Prometheus scraping a real agent, and every SQL panel query (the case store dashboard),
expanded as Grafana expands it, against a real PostgreSQL case store.

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
# the case store, read directly (provisioning/datasources/opsagent.yml; Grafana before 10.2.3
# calls the type `postgres`)
CASE_STORE = {"type": "grafana-postgresql-datasource", "uid": "opsagent-cases-pg"}
HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards"


@dataclass
class Query:
    expr: str
    legend: str = ""
    instant: bool = False


@dataclass
class Sql:
    """A query of the case store in SQL, with Grafana's macros and `$variables`."""

    sql: str
    format: str = "table"  # table | time_series


@dataclass
class Panel:
    title: str
    queries: list[Query] | list[Sql]
    kind: str = "timeseries"  # timeseries | stat | table | bargauge
    unit: str = "short"
    width: int = 12
    height: int = 8
    description: str = ""
    # empty on a healthy, young install (no breach yet, no certificate seen): the live
    # test accepts no series for these and only checks that the queries run
    may_be_empty: bool = False
    thresholds: list[tuple[float, str]] = field(default_factory=list)
    # per-column settings of a table (Grafana field overrides), by column name
    columns: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    custom: dict[str, Any] = field(default_factory=dict)  # e.g. filterable table headers


@dataclass
class Dashboard:
    uid: str
    title: str
    description: str
    rows: list[tuple[str, list[Panel]]]
    host_variable: bool = False
    variables: list[dict[str, Any]] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)  # (title, uid) of others
    time_from: str = "now-24h"


def _datasource(panel: Panel) -> dict[str, str]:
    """The data source a panel's queries go to: the case store for SQL, else Prometheus."""
    return CASE_STORE if isinstance(panel.queries[0], Sql) else DATASOURCE


def _target(query: Query | Sql, ref: str) -> dict[str, Any]:
    if isinstance(query, Sql):
        return {
            "datasource": CASE_STORE,
            "editorMode": "code",
            "format": query.format,
            "rawQuery": True,
            "rawSql": query.sql,
            "refId": ref,
        }
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
        "datasource": _datasource(panel),
        "gridPos": {"x": x, "y": y, "w": panel.width, "h": panel.height},
        "targets": [_target(q, chr(ord("A") + i)) for i, q in enumerate(panel.queries)],
        "fieldConfig": {
            "defaults": {
                "unit": panel.unit,
                "thresholds": {"mode": "absolute", "steps": steps},
            },
            "overrides": [
                {"matcher": {"id": "byName", "options": name}, "properties": properties}
                for name, properties in panel.columns.items()
            ],
        },
        "options": {},
    }
    if panel.custom:
        out["fieldConfig"]["defaults"]["custom"] = panel.custom
    if panel.kind == "table" and isinstance(panel.queries[0], Query):
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
    templating += dashboard.variables
    # each dashboard opens on its own default range (months here, hours there)
    links: list[dict[str, Any]] = [
        {"title": title, "type": "link", "url": f"/d/{uid}", "keepTime": False}
        for title, uid in dashboard.links
    ]
    links.append(
        {
            "title": "opsagent dashboards",
            "type": "dashboards",
            "tags": ["opsagent"],
            "asDropdown": True,
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
        "time": {"from": dashboard.time_from, "to": "now"},
        "templating": {"list": templating},
        "annotations": {"list": []},
        "links": links,
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
        links=[("Cases (case store)", "opsagent-case-store")],
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
    return [fleet, host, backups, cases, case_store()]


# --- the case store dashboard: SQL on the case store's PostgreSQL tables ------------------
#
# Times are ISO-8601 text with an offset in the store, cast with ::timestamptz. Months are
# calendar months in UTC (date_trunc): Grafana's $__timeGroup has no calendar month ('1M'
# is a fixed number of seconds). A target is met when the case was responded to
# (acknowledged or resolved, whichever came first) or resolved no later than its due
# time, missed when that happened later or the due time passed with the case still
# waiting, and pending otherwise; compliance is met / (met + missed).

OPEN = "('open', 'acknowledged', 'reopened')"
PICKED = "severity IN ($severity) AND host IN ($host)"
SEARCH = "strpos(lower(title || ' ' || host || ' ' || fingerprint), lower('$search')) > 0"
RANK = "array_position(ARRAY['critical', 'major', 'moderate', 'minor'], severity)"
MONTH_START = "date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
# every picked case with its clocks and the outcome of each target
OUTCOMES = f"""WITH c AS (
  SELECT id, severity, status, title, host, source, fingerprint, occurrences,
    first_seen::timestamptz AS opened,
    coalesce(clock_start, first_seen)::timestamptz AS started,
    response_due::timestamptz AS response_due,
    resolution_due::timestamptz AS resolution_due,
    acknowledged_at::timestamptz AS acknowledged, acknowledged_by,
    least(acknowledged_at::timestamptz, resolved_at::timestamptz) AS responded,
    resolved_at::timestamptz AS resolved
  FROM cases
  WHERE {PICKED}
), o AS (
  SELECT c.*,
    CASE WHEN responded <= response_due THEN 'met'
      WHEN responded IS NOT NULL OR response_due < now() THEN 'missed'
      ELSE 'pending' END AS response,
    CASE WHEN resolved <= resolution_due THEN 'met'
      WHEN resolved IS NOT NULL OR resolution_due < now() THEN 'missed'
      ELSE 'pending' END AS resolution
  FROM c
)
"""


def _compliance(target: str) -> str:
    """Percent of a target's decided outcomes that were met (NULL when none is decided)."""
    return (
        f"round(100.0 * count(*) FILTER (WHERE {target} = 'met')"
        f" / nullif(count(*) FILTER (WHERE {target} <> 'pending'), 0), 1)"
    )


def _seconds(expr: str) -> str:
    """An interval in seconds, as float8 (what percentile_cont and round take)."""
    return f"extract(epoch FROM {expr})::float8"


def _median(expr: str, quantile: float = 0.5) -> str:
    """A continuous (interpolated) quantile of an interval, in seconds."""
    return f"percentile_cont({quantile}) WITHIN GROUP (ORDER BY {_seconds(expr)})"


def _thresholds(*steps: tuple[float | None, str]) -> dict[str, Any]:
    """A column's colour steps, from the lowest (value None) up."""
    return {
        "id": "thresholds",
        "value": {
            "mode": "absolute",
            "steps": [{"color": color, "value": value} for value, color in steps],
        },
    }


# a time left: red once overdue, orange within 4 h, green beyond
TIME_LEFT = [
    {"id": "unit", "value": "s"},
    _thresholds((None, "red"), (0, "orange"), (4 * 3600, "green")),
    {"id": "custom.cellOptions", "value": {"type": "color-background"}},
]
OUTCOME = [
    {
        "id": "mappings",
        "value": [
            {
                "type": "value",
                "options": {
                    "met": {"color": "green", "index": 0},
                    "missed": {"color": "red", "index": 1},
                    "pending": {"color": "blue", "index": 2},
                },
            }
        ],
    },
    {"id": "custom.cellOptions", "value": {"type": "color-text"}},
]
PERCENT = [
    {"id": "unit", "value": "percent"},
    _thresholds((None, "red"), (80, "orange"), (95, "green")),
    {"id": "custom.cellOptions", "value": {"type": "color-text"}},
]


def _variable(name: str, label: str, column: str, order: str) -> dict[str, Any]:
    """A multi-value variable of the values of a column; "All" is a subquery, so an
    empty store or a thousand hosts still make a valid, short `IN (...)`."""
    sql = f"SELECT {column} FROM cases GROUP BY {column} ORDER BY {order}"
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": CASE_STORE,
        "query": sql,
        "definition": sql,
        "refresh": 1,
        "sort": 0,
        "multi": True,
        "includeAll": True,
        "allValue": f"SELECT {column} FROM cases",
        "current": {"text": ["All"], "value": ["$__all"]},
    }


def case_store() -> Dashboard:
    """The case store read directly: what is open and how long it has left, every case
    searchable, and the service levels month by month (tested in
    tests/integration/test_grafana_cases_sql.py against a real store)."""
    monthly = f"""{OUTCOMES}SELECT to_char(month, 'YYYY-MM') AS "month", severity,"""
    by_month = f"""FROM (SELECT o.*, date_trunc('month', started AT TIME ZONE 'UTC') AS month
  FROM o) AS m
WHERE $__timeFilter(started)
GROUP BY month, severity
ORDER BY month DESC, {RANK}"""
    return Dashboard(
        uid="opsagent-case-store",
        title="opsagent / Cases (case store)",
        description="The PostgreSQL case store read directly: open cases and their time"
        " left, every case searchable, SLA compliance and time to respond by month.",
        time_from="now-6M/M",
        links=[("Cases and SLA (Prometheus)", "opsagent-cases")],
        variables=[
            _variable("severity", "Severity", "severity", RANK),
            _variable("host", "Host", "host", "host"),
            {
                "name": "search",
                "label": "Search title, host, fingerprint",
                "type": "textbox",
                "query": "",
                "current": {"text": "", "value": ""},
            },
        ],
        rows=[
            (
                "Now",
                [
                    Panel(
                        "Open cases",
                        [
                            Sql(
                                f'SELECT count(*) AS "open cases" FROM cases\n'
                                f"WHERE status IN {OPEN} AND {PICKED}"
                            )
                        ],
                        kind="stat",
                        width=6,
                        height=4,
                    ),
                    Panel(
                        "Overdue now",
                        [
                            Sql(
                                f'SELECT count(*) AS "overdue" FROM cases\n'
                                f"WHERE status IN {OPEN} AND {PICKED}\n"
                                "  AND ((acknowledged_at IS NULL"
                                " AND response_due::timestamptz < now())\n"
                                "    OR resolution_due::timestamptz < now())"
                            )
                        ],
                        kind="stat",
                        width=6,
                        height=4,
                        thresholds=[(1, "red")],
                        description="Open cases past their response (not yet acknowledged)"
                        " or resolution due time.",
                    ),
                    Panel(
                        "Targets missed this month",
                        [
                            Sql(
                                f"{OUTCOMES}SELECT"
                                f" count(*) FILTER (WHERE response = 'missed'"
                                f" AND response_due >= {MONTH_START})\n"
                                f"  + count(*) FILTER (WHERE resolution = 'missed'"
                                f' AND resolution_due >= {MONTH_START}) AS "missed"\n'
                                "FROM o"
                            )
                        ],
                        kind="stat",
                        width=6,
                        height=4,
                        thresholds=[(1, "red")],
                        description="Response and resolution targets due this calendar"
                        " month (UTC) and missed: done late, or still not done.",
                    ),
                    Panel(
                        "Median time to respond (this month)",
                        [
                            Sql(
                                f"{OUTCOMES}SELECT {_median('responded - started')}"
                                ' AS "median"\n'
                                f"FROM o WHERE responded IS NOT NULL"
                                f" AND started >= {MONTH_START}"
                            )
                        ],
                        kind="stat",
                        unit="s",
                        width=6,
                        height=4,
                        description="From the clock's start (opening or reopening) to the"
                        " acknowledgement or resolution, cases started this month (UTC).",
                    ),
                    Panel(
                        "Open cases with time left",
                        [
                            Sql(
                                'SELECT id AS "case", severity, status, title, host,\n'
                                '  first_seen::timestamptz AS "opened",\n'
                                "  CASE WHEN acknowledged_at IS NULL THEN round("
                                + _seconds("response_due::timestamptz - now()")
                                + ') END AS "respond within",\n'
                                "  round("
                                + _seconds("resolution_due::timestamptz - now()")
                                + ') AS "resolve within",\n'
                                '  response_due::timestamptz AS "response due",\n'
                                '  resolution_due::timestamptz AS "resolution due",\n'
                                '  acknowledged_by AS "acknowledged by"\n'
                                f"FROM cases\nWHERE status IN {OPEN} AND {PICKED}"
                                f" AND {SEARCH}\n"
                                "ORDER BY least(CASE WHEN acknowledged_at IS NULL"
                                " THEN response_due::timestamptz END,"
                                " resolution_due::timestamptz), id"
                            )
                        ],
                        kind="table",
                        width=24,
                        height=9,
                        custom={"filterable": True},
                        columns={
                            "respond within": [
                                *TIME_LEFT,
                                {"id": "noValue", "value": "responded"},
                            ],
                            "resolve within": TIME_LEFT,
                        },
                        description="Most urgent first. Time left to respond (blank once"
                        " acknowledged) and to resolve; negative and red when overdue.",
                    ),
                ],
            ),
            (
                "Cases",
                [
                    Panel(
                        "Recent cases",
                        [
                            Sql(
                                f'{OUTCOMES}SELECT id AS "case", opened, severity, status,'
                                " title, host, source, occurrences,\n"
                                '  acknowledged, acknowledged_by AS "by", resolved,'
                                " response, resolution, fingerprint\n"
                                f"FROM o\nWHERE $__timeFilter(opened) AND {SEARCH}\n"
                                "ORDER BY id DESC\nLIMIT 1000"
                            )
                        ],
                        kind="table",
                        width=24,
                        height=12,
                        custom={"filterable": True},
                        columns={"response": OUTCOME, "resolution": OUTCOME},
                        description="Cases opened in the time range, newest first; the"
                        " Search box matches title, host and fingerprint, and every"
                        " column header filters.",
                    ),
                    Panel(
                        "Cases opened per day",
                        [
                            Sql(
                                "SELECT $__timeGroupAlias(opened, '1d'), severity AS metric,"
                                ' count(*) AS "cases"\n'
                                "FROM (SELECT first_seen::timestamptz AS opened, severity"
                                f" FROM cases\n  WHERE {PICKED}) AS c\n"
                                "WHERE $__timeFilter(opened)\nGROUP BY 1, 2\nORDER BY 1",
                                format="time_series",
                            )
                        ],
                        width=12,
                        custom={"drawStyle": "bars", "fillOpacity": 80},
                        description="Days in UTC.",
                    ),
                    Panel(
                        "Missed targets",
                        [
                            Sql(
                                f'{OUTCOMES}SELECT id AS "case", severity, host, title,'
                                ' target, due, done AS "done at",\n'
                                "  round("
                                + _seconds("coalesce(done, now()) - due")
                                + ') AS "late by"\n'
                                "FROM (\n"
                                "  SELECT id, severity, host, title, 'response' AS target,"
                                " response_due AS due, responded AS done\n"
                                "  FROM o WHERE response = 'missed'\n"
                                "  UNION ALL\n"
                                "  SELECT id, severity, host, title, 'resolution',"
                                " resolution_due, resolved\n"
                                "  FROM o WHERE resolution = 'missed'\n"
                                ") AS m\nWHERE $__timeFilter(due)\n"
                                "ORDER BY due DESC, id\nLIMIT 1000"
                            )
                        ],
                        kind="table",
                        width=12,
                        custom={"filterable": True},
                        columns={"late by": [{"id": "unit", "value": "s"}]},
                        description="Targets due in the time range and missed, latest"
                        " first (at most 1000); 'late by' counts to now for what is still"
                        " not done.",
                    ),
                ],
            ),
            (
                "Service levels by month",
                [
                    Panel(
                        "SLA compliance by month",
                        [
                            Sql(
                                f'{monthly} count(*) AS "cases",\n'
                                "  count(*) FILTER (WHERE response = 'met')"
                                ' AS "responses met",\n'
                                "  count(*) FILTER (WHERE response = 'missed')"
                                ' AS "responses missed",\n'
                                f'  {_compliance("response")} AS "response compliance",\n'
                                "  count(*) FILTER (WHERE resolution = 'met')"
                                ' AS "resolutions met",\n'
                                "  count(*) FILTER (WHERE resolution = 'missed')"
                                ' AS "resolutions missed",\n'
                                f'  {_compliance("resolution")} AS "resolution compliance"\n'
                                f"{by_month}"
                            )
                        ],
                        kind="table",
                        width=14,
                        height=10,
                        columns={
                            "response compliance": PERCENT,
                            "resolution compliance": PERCENT,
                        },
                        description="Cases by the month (UTC) their clock started, per"
                        " severity. Compliance: met / (met + missed); pending targets"
                        " (not yet due, not yet done) are left out.",
                    ),
                    Panel(
                        "Response compliance by month",
                        [
                            Sql(
                                f"{OUTCOMES}SELECT date_trunc('month', started AT TIME ZONE"
                                " 'UTC') AT TIME ZONE 'UTC' AS \"time\", severity AS metric,\n"
                                f'  {_compliance("response")} AS "compliance"\n'
                                "FROM o\nWHERE $__timeFilter(started)\n"
                                "GROUP BY 1, 2\nORDER BY 1",
                                format="time_series",
                            )
                        ],
                        unit="percent",
                        width=10,
                        height=10,
                        custom={"drawStyle": "bars", "fillOpacity": 80},
                    ),
                    Panel(
                        "Time to respond and resolve by month",
                        [
                            Sql(
                                f"{monthly}\n"
                                '  count(responded) AS "responded",\n'
                                f"  {_median('responded - started')}"
                                ' AS "median time to respond",\n'
                                f"  {_median('responded - started', 0.9)}"
                                ' AS "p90 time to respond",\n'
                                '  count(resolved) AS "resolved",\n'
                                f"  {_median('resolved - started')}"
                                ' AS "median time to resolve",\n'
                                f"  {_median('resolved - started', 0.9)}"
                                ' AS "p90 time to resolve"\n'
                                f"{by_month}"
                            )
                        ],
                        kind="table",
                        width=24,
                        height=10,
                        columns={
                            name: [{"id": "unit", "value": "s"}]
                            for name in (
                                "median time to respond",
                                "p90 time to respond",
                                "median time to resolve",
                                "p90 time to resolve",
                            )
                        },
                        description="Wall-clock time from the clock's start, cases by the"
                        " month (UTC) their clock started; the policy's targets may count"
                        " business hours only.",
                    ),
                ],
            ),
        ],
    )


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
