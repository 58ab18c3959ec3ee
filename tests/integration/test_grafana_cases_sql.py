"""The "Cases (case store)" Grafana dashboard against a real PostgreSQL case store: cases
written through `CaseStore` (met and missed targets, open ones with time left, a
reopened one), the shipped read-only role created with psql, and every panel's SQL
expanded as Grafana expands it (tests/support/grafana_sql.py) and run as that role,
with the figures worked out by hand."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest
import yaml

from agents.cases.sla import DueTimes
from agents.cases.store import CaseStore, Failure
from agents.results import Severity
from tests.support import grafana_sql, services
from tests.support.grafana_sql import ALL
from tests.support.grafana_sql import grafana_sql as expand
from tests.support.services import ServiceError

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "deploy/grafana"
H = timedelta(hours=1)
D = timedelta(days=1)


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grafana_generate", GRAFANA / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _month(moment: datetime, back: int) -> datetime:
    """The first instant (UTC) of the month `back` months before `moment`'s."""
    index = moment.year * 12 + moment.month - 1 - back
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


@dataclass
class Store:
    """The scratch case store, its cases by letter, and how to query it as Grafana."""

    admin_dsn: str
    reader_dsn: str
    ids: dict[str, int]
    now: datetime  # when the cases were written; the store's "now" is later
    month: datetime  # the current month's start (UTC)
    m1: datetime  # three months back
    m2: datetime  # two months back
    span: timedelta  # now - month
    model: dict[str, Any]  # the dashboard's JSON model

    def panel(self, title: str) -> dict[str, Any]:
        found = [p for p in self.model["panels"] if p["title"] == title]
        assert len(found) == 1, title
        return found[0]

    def sql(
        self,
        title: str,
        ref: int = 0,
        start: datetime | None = None,
        end: datetime | None = None,
        **values: Any,
    ) -> str:
        """A panel's SQL as Grafana sends it: every variable on All and an empty search
        unless given, the time range from three months back to now unless given."""
        chosen = {"severity": [ALL], "host": [ALL], "search": ""} | values
        return expand(
            self.panel(title)["targets"][ref]["rawSql"],
            self.model["templating"]["list"],
            chosen,
            start or self.m1,
            end or datetime.now(UTC),
        )

    def rows(self, title: str, ref: int = 0, **values: Any) -> list[dict[str, Any]]:
        """A panel's rows, run as the dashboard's read-only role."""
        return _select(self.reader_dsn, self.sql(title, ref, **values))


def _select(dsn: str, sql: str, zone: str = "UTC") -> list[dict[str, Any]]:
    """The rows of a query, in a session of the given time zone (the server's default
    is whatever its postgresql.conf says; Grafana does not set one)."""
    with psycopg.connect(dsn, connect_timeout=10, options=f"-c TimeZone={zone}") as db:
        cursor = db.execute(sql)
        names = [c.name for c in cursor.description or []]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _clock(severity: Severity, start: datetime) -> DueTimes:
    """Clocks of a reopened case: 30 and 60 days, always ahead of the test."""
    return DueTimes(start + 30 * D, start + 60 * D)


@pytest.fixture(scope="module")
def store() -> Iterator[Store]:
    psql = shutil.which("psql")
    if psql is None:
        pytest.fail("psql (postgresql-client) is needed to apply cases-readonly.sql")
    try:
        with services.postgres_database(f"opsagent_t_{uuid.uuid4().hex[:10]}") as database:
            yield _fill(database, psql)
    except ServiceError as exc:
        pytest.fail(str(exc), pytrace=False)


def _fill(database: services.Database, psql: str) -> Store:
    cases = CaseStore(database.dsn, clock=_clock)
    now = datetime.now(UTC)
    month = _month(now, 0)
    span = now - month
    m1, m2 = _month(now, 3), _month(now, 2)
    ids: dict[str, int] = {}

    def case(
        key: str,
        severity: Severity,
        host: str,
        title: str,
        opened: datetime,
        respond: datetime,
        resolve: datetime,
        fingerprint: str = "",
    ) -> int:
        made, _ = cases.record_failure(
            Failure(
                fingerprint or f"fp-{key}",
                title,
                severity,
                "check:test",
                host,
                opened,
                respond,
                resolve,
            )
        )
        ids[key] = made.id
        return made.id

    # three months back: A met both, B missed both (late), C met both
    a = case(
        "A",
        Severity.CRITICAL,
        "h1",
        "web down",
        m1 + 2 * D + 10 * H,
        m1 + 2 * D + 14 * H,
        m1 + 3 * D + 10 * H,
    )
    cases.acknowledge(a, m1 + 2 * D + 11 * H, "ann")
    cases.resolve(a, m1 + 2 * D + 20 * H, "ann", None)
    cases.close(a, m1 + 4 * D, "ann")
    b = case(
        "B",
        Severity.CRITICAL,
        "h2",
        "disk full on db's volume",
        m1 + 9 * D + 10 * H,
        m1 + 9 * D + 14 * H,
        m1 + 10 * D + 10 * H,
    )
    cases.acknowledge(b, m1 + 9 * D + 15 * H, "bob")
    cases.resolve(b, m1 + 11 * D + 10 * H, "bob", None)
    c = case(
        "C",
        Severity.MAJOR,
        "h1",
        "backup failed",
        m1 + 14 * D + 12 * H,
        m1 + 15 * D + 12 * H,
        m1 + 17 * D + 12 * H,
    )
    cases.acknowledge(c, m1 + 14 * D + 13 * H, "ann")
    cases.resolve(c, m1 + 16 * D + 12 * H, "ann", None)
    # two months back: D resolved (so responded) without an acknowledgement, met both;
    # E acknowledged a day late, resolved in time; F acknowledged, never resolved
    d = case(
        "D",
        Severity.MAJOR,
        "h2",
        "restore test slow",
        m2 + 4 * D + 9 * H,
        m2 + 5 * D + 9 * H,
        m2 + 7 * D + 9 * H,
        "zz-unique-fp",
    )
    cases.resolve(d, m2 + 4 * D + 10 * H, "bob", None)
    cases.close(d, m2 + 5 * D, "bob")
    e = case(
        "E",
        Severity.MAJOR,
        "h1",
        "check failing: https",
        m2 + 19 * D + 9 * H,
        m2 + 20 * D + 9 * H,
        m2 + 22 * D + 9 * H,
    )
    cases.acknowledge(e, m2 + 21 * D + 9 * H, "ann")
    cases.resolve(e, m2 + 21 * D + 10 * H, "ann", None)
    f = case(
        "F",
        Severity.MINOR,
        "h3",
        "certificate expiry",
        m2 + 24 * D + 9 * H,
        m2 + 27 * D + 9 * H,
        m2 + 26 * D + 9 * H + 20 * D,
    )
    cases.acknowledge(f, m2 + 24 * D + 10 * H, "carl")
    # J: resolved two months back, reopened this month with fresh clocks (30 d, 60 d)
    j = case(
        "J",
        Severity.MINOR,
        "h3",
        "restore test failing",
        m2 + 9 * D + 10 * H,
        m2 + 12 * D + 10 * H,
        m2 + 27 * D + 10 * H,
    )
    cases.resolve(j, m2 + 9 * D + 12 * H, "carl", None)
    # this month, timed inside it whatever the day: H's response is overdue, I was
    # acknowledged, G has 3 h left
    case("H", Severity.MAJOR, "h2", "backup stale", month + span / 4, month + span / 2, now + D)
    i = case(
        "I",
        Severity.MODERATE,
        "h3",
        "certificate expires soon",
        month + span / 8,
        now + D,
        now + 5 * D,
    )
    cases.acknowledge(i, month + span / 4, "carl")
    case("G", Severity.CRITICAL, "h1", "db down", month + span / 2, now + 3 * H, now + 23 * H)
    cases.reopen(j, month + span * 3 / 4, "carl")
    # K: two hours before midnight UTC on the last day of three months back, already the
    # next month in India: UTC decides, whatever the database session's zone
    k = case("K", Severity.MODERATE, "h2", "late night failover", m2 - 2 * H, m2 + D, m2 + 10 * D)
    cases.acknowledge(k, m2 - H, "dan")
    cases.resolve(k, m2 + D, "dan", None)

    applied = subprocess.run(
        [
            psql,
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
            "-d",
            database.dsn,
            "-f",
            str(GRAFANA / "cases-readonly.sql"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert applied.returncode == 0, applied.stderr
    base, _, db_name = database.dsn.rpartition("/")
    reader = base.replace("postgres@", "grafana_cases@", 1) + "/" + db_name
    assert "grafana_cases@" in reader
    generate = _generator()
    model = generate.render(generate.case_store())
    return Store(database.dsn, reader, ids, now, month, m1, m2, span, model)


def _near(value: float | Decimal | None, expected: float, slack: float = 0.01) -> bool:
    return value is not None and abs(float(value) - expected) <= slack


# --- the expander is Grafana's ---------------------------------------------------------


def test_the_expander_matches_grafanas_own_macro_and_variable_tests() -> None:
    """The expectations of Grafana's macros_test.go and of its SQL data sources."""
    start = datetime(2018, 4, 12, 18, 0, tzinfo=UTC)
    end = start + timedelta(minutes=5)
    macros = grafana_sql.expand_macros
    assert macros("WHERE $__timeFilter(time_column)", start, end) == (
        "WHERE time_column BETWEEN '2018-04-12T18:00:00Z' AND '2018-04-12T18:05:00Z'"
    )
    assert macros("select $__timeFrom()", start, end) == "select '2018-04-12T18:00:00Z'"
    assert macros("select $__timeTo()", start, end) == "select '2018-04-12T18:05:00Z'"
    assert macros("SELECT $__timeGroup(time_column,'5m')", start, end) == (
        "SELECT floor(extract(epoch from time_column)/300)*300"
    )
    assert macros("SELECT $__timeGroup(time_column,'5m'), value", start, end) == (
        'SELECT floor(extract(epoch from time_column)/300)*300 AS "time", value'
    )
    assert macros("$__timeGroupAlias(time_column , '5m')", start, end) == (
        'floor(extract(epoch from time_column)/300)*300 AS "time"'
    )
    half = datetime(1960, 2, 1, 7, 0, 0, 500000, tzinfo=UTC)
    assert grafana_sql.rfc3339nano(half) == "1960-02-01T07:00:00.5Z"
    with pytest.raises(ValueError, match="calendar"):
        macros("$__timeGroup(t, '1M')", start, end)
    variables = [
        {"name": "sev", "multi": True, "includeAll": True},
        {"name": "sevs", "multi": True, "includeAll": True, "allValue": "SELECT s FROM t"},
        {"name": "q", "type": "textbox"},
    ]
    values = {"sev": ["a", "o'b"], "sevs": [ALL], "q": "it's"}
    assert (
        grafana_sql.interpolate(
            "x IN ($sev) AND y IN (${sevs}) AND z = '$q' AND $sevs2 AND $__timeFilter(t)",
            variables,
            values,
        )
        == "x IN ('a','o''b') AND y IN (SELECT s FROM t) AND z = 'it''s'"
        " AND $sevs2 AND $__timeFilter(t)"
    )
    assert grafana_sql.interpolate("IN ($sev)", variables, {"sev": [ALL]}, {"sev": ["x", "y"]}) == (
        "IN ('x','y')"
    )


# --- the dashboard's figures ----------------------------------------------------------


def test_every_panel_query_runs_as_the_read_only_role(store: Store) -> None:
    """No panel is left out: each query, with every variable on All, runs as grafana_cases."""
    ran = 0
    for panel in store.model["panels"]:
        for ref, target in enumerate(panel.get("targets", [])):
            assert "--" not in target["rawSql"] and "/*" not in target["rawSql"], panel["title"]
            store.rows(panel["title"], ref)
            ran += 1
    assert ran == 11
    for variable in store.model["templating"]["list"]:
        if variable["type"] == "query":
            _select(store.reader_dsn, variable["query"])
            _select(store.reader_dsn, f"SELECT 1 WHERE 'x' IN ({variable['allValue']})")


def test_figures_do_not_depend_on_the_sessions_time_zone(store: Store) -> None:
    """Months and days are UTC's whatever the server's zone: a case opened late on the
    last day of a month in Toronto is still counted in the month UTC says."""
    for title in ("SLA compliance by month", "Cases opened per day", "Recent cases"):
        sql = store.sql(title)
        utc = _select(store.reader_dsn, sql)
        assert utc
        for zone in ("America/Toronto", "Asia/Kolkata"):
            assert _select(store.reader_dsn, sql, zone) == utc, (title, zone)


def test_an_empty_store_gives_zeros_not_errors() -> None:
    """A new store (no case yet, so no severity or host to choose): every panel runs."""
    generate = _generator()
    model = generate.render(generate.case_store())
    with services.postgres_database(f"opsagent_t_{uuid.uuid4().hex[:10]}") as database:
        CaseStore(database.dsn)  # creates the tables
        applied = subprocess.run(
            [
                "psql",
                "-v",
                "ON_ERROR_STOP=1",
                "-q",
                "-d",
                database.dsn,
                "-f",
                str(GRAFANA / "cases-readonly.sql"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert applied.returncode == 0, applied.stderr
        reader = database.dsn.replace("postgres@", "grafana_cases@", 1)
        variables = model["templating"]["list"]
        values = {"severity": [ALL], "host": [ALL], "search": ""}
        now = datetime.now(UTC)
        results = {}
        for panel in model["panels"]:
            for target in panel.get("targets", []):
                sql = expand(target["rawSql"], variables, values, now - 90 * D, now)
                results[panel["title"]] = _select(reader, sql)
        assert results["Open cases"] == [{"open cases": 0}]
        assert results["Targets missed this month"] == [{"missed": 0}]
        assert results["Median time to respond (this month)"] == [{"median": None}]
        assert results["Recent cases"] == [] and results["SLA compliance by month"] == []


def test_variables_list_severities_by_rank_and_hosts(store: Store) -> None:
    by_name = {v["name"]: v for v in store.model["templating"]["list"]}
    severities = [r["severity"] for r in _select(store.reader_dsn, by_name["severity"]["query"])]
    assert severities == ["critical", "major", "moderate", "minor"]
    hosts = [r["host"] for r in _select(store.reader_dsn, by_name["host"]["query"])]
    assert hosts == ["h1", "h2", "h3"]


def test_the_stats_count_open_overdue_and_missed_this_month(store: Store) -> None:
    assert store.rows("Open cases") == [{"open cases": 5}]  # F, G, H, I, J
    # F's resolution (two months back) and H's response (this month) are overdue
    assert store.rows("Overdue now") == [{"overdue": 2}]
    # due this month and missed: H's response only (F's resolution was due before)
    assert store.rows("Targets missed this month") == [{"missed": 1}]
    median = store.rows("Median time to respond (this month)")[0]["median"]
    assert _near(median, (store.span / 8).total_seconds(), 0.001)  # I's, the only one
    assert store.rows("Open cases", severity=["critical"]) == [{"open cases": 1}]
    assert store.rows("Open cases", host=["h1", "h2"]) == [{"open cases": 2}]
    assert store.rows("Overdue now", severity=["critical"], host=["h2"]) == [{"overdue": 0}]


def test_open_cases_show_time_left_most_urgent_first(store: Store) -> None:
    before = datetime.now(UTC)
    rows = store.rows("Open cases with time left")
    after = datetime.now(UTC)
    assert [r["case"] for r in rows] == [store.ids[k] for k in "FHGIJ"]
    by_case = {r["case"]: r for r in rows}

    def left(due: datetime) -> tuple[float, float]:
        return (due - after).total_seconds() - 1, (due - before).total_seconds() + 1

    def within(value: float | None, due: datetime) -> bool:
        low, high = left(due)
        return value is not None and low <= value <= high

    f, h, g, i, j = (by_case[store.ids[k]] for k in "FHGIJ")
    assert f["respond within"] is None and i["respond within"] is None  # acknowledged
    assert within(f["resolve within"], store.m2 + 46 * D + 9 * H) and f["resolve within"] < 0
    assert within(h["respond within"], store.month + store.span / 2) and h["respond within"] < 0
    assert within(g["respond within"], store.now + 3 * H) and g["respond within"] > 0
    assert within(g["resolve within"], store.now + 23 * H)
    assert within(i["resolve within"], store.now + 5 * D)
    reopened = store.month + store.span * 3 / 4  # fresh clocks from the reopening
    assert j["status"] == "reopened"
    assert within(j["respond within"], reopened + 30 * D)
    assert within(j["resolve within"], reopened + 60 * D)
    assert g["response due"] == store.now + 3 * H
    assert i["acknowledged by"] == "carl"
    searched = store.rows("Open cases with time left", search="DB DOWN")
    assert [r["case"] for r in searched] == [store.ids["G"]]


def test_recent_cases_search_filter_and_time_range(store: Store) -> None:
    def keys(**values: Any) -> list[str]:
        by_id = {v: k for k, v in store.ids.items()}
        return [by_id[r["case"]] for r in store.rows("Recent cases", **values)]

    # opened from three months back to now, newest case number first
    assert keys() == ["K", "G", "I", "H", "J", "F", "E", "D", "C", "B", "A"]
    assert keys(search="db's") == ["B"]  # a quote in the search box
    assert keys(search="H3") == ["I", "J", "F"]  # hosts, any case
    assert keys(search="unique-fp") == ["D"]  # fingerprints
    assert keys(search="db") == ["G", "B"]
    assert keys(search="%") == [] and keys(search="_") == []  # plain text, not a pattern
    assert keys(severity=["major", "minor"], host=["h1"]) == ["E", "C"]
    assert keys(start=store.m2, end=store.month) == ["J", "F", "E", "D"]
    rows = {r["case"]: r for r in store.rows("Recent cases")}
    outcomes = {
        k: (rows[store.ids[k]]["response"], rows[store.ids[k]]["resolution"]) for k in "ABCDEFGHI"
    }
    assert outcomes == {
        "A": ("met", "met"),
        "B": ("missed", "missed"),
        "C": ("met", "met"),
        "D": ("met", "met"),
        "E": ("missed", "met"),
        "F": ("met", "missed"),
        "G": ("pending", "pending"),
        "H": ("missed", "pending"),
        "I": ("met", "pending"),
    }
    assert rows[store.ids["B"]]["by"] == "bob"
    assert rows[store.ids["D"]]["acknowledged"] is None
    assert rows[store.ids["D"]]["status"] == "closed"


def test_sla_compliance_by_month_worked_out_by_hand(store: Store) -> None:
    got = {
        (r["month"], r["severity"]): (
            r["cases"],
            r["responses met"],
            r["responses missed"],
            r["response compliance"],
            r["resolutions met"],
            r["resolutions missed"],
            r["resolution compliance"],
        )
        for r in store.rows("SLA compliance by month")
    }
    m1, m2, now = (m.strftime("%Y-%m") for m in (store.m1, store.m2, store.month))
    half, full, none = Decimal("50.0"), Decimal("100.0"), Decimal("0.0")
    assert got == {
        (m1, "critical"): (2, 1, 1, half, 1, 1, half),  # A met both, B missed both
        (m1, "major"): (1, 1, 0, full, 1, 0, full),  # C
        (m1, "moderate"): (1, 1, 0, full, 1, 0, full),  # K, two hours before m2 began
        (m2, "major"): (2, 1, 1, half, 2, 0, full),  # D met both, E responded late
        (m2, "minor"): (1, 1, 0, full, 0, 1, none),  # F never resolved
        # this month, by the start of the clock (J's reopening): pending is left out
        (now, "critical"): (1, 0, 0, None, 0, 0, None),  # G
        (now, "major"): (1, 0, 1, none, 0, 0, None),  # H
        (now, "moderate"): (1, 1, 0, full, 0, 0, None),  # I
        (now, "minor"): (1, 0, 0, None, 0, 0, None),  # J, reopened
    }
    order = [(r["month"], r["severity"]) for r in store.rows("SLA compliance by month")]
    assert order[:4] == [(now, "critical"), (now, "major"), (now, "moderate"), (now, "minor")]
    only = store.rows("SLA compliance by month", severity=["critical"], host=["h2"])
    assert [(r["month"], r["cases"], r["response compliance"]) for r in only] == [(m1, 1, none)]
    chart = {
        (r["time"], r["metric"]): r["compliance"]
        for r in store.rows("Response compliance by month")
    }
    assert chart[(store.m1, "critical")] == half
    assert chart[(store.m2, "minor")] == full
    assert chart[(store.month, "major")] == none
    assert chart[(store.month, "critical")] is None


def test_time_to_respond_and_resolve_by_month(store: Store) -> None:
    rows = {
        (r["month"], r["severity"]): r for r in store.rows("Time to respond and resolve by month")
    }
    critical = rows[(store.m1.strftime("%Y-%m"), "critical")]
    assert critical["responded"] == 2 and critical["resolved"] == 2
    assert _near(critical["median time to respond"], 10800)  # 1 h and 5 h
    assert _near(critical["p90 time to respond"], 3600 + 0.9 * 14400)
    assert _near(critical["median time to resolve"], (36000 + 172800) / 2)  # 10 h and 48 h
    major = rows[(store.m2.strftime("%Y-%m"), "major")]
    assert _near(major["median time to respond"], (3600 + 172800) / 2)  # D resolved at 1 h
    assert _near(major["median time to resolve"], (3600 + 176400) / 2)
    now = store.month.strftime("%Y-%m")
    assert rows[(now, "major")]["responded"] == 0
    assert rows[(now, "major")]["median time to respond"] is None


def test_missed_targets_and_cases_opened_per_day(store: Store) -> None:
    missed = {(r["case"], r["target"]): r for r in store.rows("Missed targets")}
    ids = store.ids
    assert set(missed) == {
        (ids["B"], "response"),
        (ids["B"], "resolution"),
        (ids["E"], "response"),
        (ids["F"], "resolution"),
        (ids["H"], "response"),
    }
    assert missed[(ids["B"], "response")]["late by"] == 3600
    assert missed[(ids["B"], "resolution")]["late by"] == 86400
    assert missed[(ids["E"], "response")]["late by"] == 86400
    assert missed[(ids["H"], "response")]["done at"] is None
    assert (
        missed[(ids["H"], "response")]["late by"]
        >= (store.now - store.month - store.span / 2).total_seconds() - 1
    )
    # by due time in the range: only this month's
    assert {r["case"] for r in store.rows("Missed targets", start=store.month)} == {ids["H"]}
    per_day = [
        (datetime.fromtimestamp(float(r["time"]), UTC), r["metric"], r["cases"])
        for r in store.rows("Cases opened per day", start=store.m1, end=store.m2)
    ]
    assert per_day == [
        (store.m1 + 2 * D, "critical", 1),
        (store.m1 + 9 * D, "critical", 1),
        (store.m1 + 14 * D, "major", 1),
        (store.m2 - D, "moderate", 1),  # K
    ]


# --- the read-only role and the provisioning -----------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM cases",
        "UPDATE cases SET status = 'closed'",
        "INSERT INTO case_events (case_id, at, kind) VALUES (1, 'x', 'comment')",
        "DROP TABLE case_events",
        "CREATE TABLE grafana_was_here (x int)",
        "SELECT * FROM outbox",
        "SELECT * FROM notifiers",
        "SET default_transaction_read_only = off; DELETE FROM cases",
    ],
)
def test_the_read_only_role_cannot_write_or_read_beyond_cases(store: Store, statement: str) -> None:
    with pytest.raises(psycopg.Error) as raised:
        _select(store.reader_dsn, statement)
    assert type(raised.value).__name__ in {"InsufficientPrivilege", "ReadOnlySqlTransaction"}
    assert _select(store.admin_dsn, "SELECT count(*) AS n FROM cases") == [{"n": 11}]


def test_a_search_box_attack_is_a_literal_and_the_role_a_wall(store: Store) -> None:
    attack = "x')) > 0; DELETE FROM cases; SELECT strpos(lower('"
    assert store.rows("Recent cases", search=attack) == []  # quotes doubled: a literal
    # Grafana before 10 inserted a text box's value as it is: the statement then runs,
    # and the role refuses it
    raw = store.panel("Recent cases")["targets"][0]["rawSql"].replace("$search", attack)
    sql = grafana_sql.expand_macros(
        grafana_sql.interpolate(
            raw, store.model["templating"]["list"], {"severity": [ALL], "host": [ALL]}
        ),
        store.m1,
        datetime.now(UTC),
    )
    assert "; DELETE FROM cases;" in sql
    with pytest.raises(psycopg.Error) as raised:
        _select(store.reader_dsn, sql)
    # refused by the read-only session (and, with it turned off, by the missing grant:
    # test_the_read_only_role_cannot_write_or_read_beyond_cases)
    assert type(raised.value).__name__ in {"ReadOnlySqlTransaction", "InsufficientPrivilege"}
    assert _select(store.admin_dsn, "SELECT count(*) AS n FROM cases") == [{"n": 11}]


def test_a_backslash_cannot_end_the_literal_even_with_old_string_rules(store: Store) -> None:
    """Grafana doubles quotes, not backslashes: were the database still reading
    backslash escapes (standard_conforming_strings = off), `\\'` would close the
    literal. The role turns standard strings on for its own sessions."""
    name = store.admin_dsn.rpartition("/")[2]
    with psycopg.connect(store.admin_dsn, autocommit=True) as db:
        db.execute(f'ALTER DATABASE "{name}" SET standard_conforming_strings = off')
    try:
        with psycopg.connect(store.admin_dsn) as db:
            assert db.execute("SHOW standard_conforming_strings").fetchone() == ("off",)
        attack = "\\')) > 0 OR true --"  # with backslash escapes: every case
        assert store.rows("Recent cases", search=attack) == []
        assert store.rows("Recent cases", search="\\") == []
    finally:
        with psycopg.connect(store.admin_dsn, autocommit=True) as db:
            db.execute(f'ALTER DATABASE "{name}" RESET standard_conforming_strings')


def test_readonly_sql_runs_twice_and_the_datasource_keeps_no_secret(store: Store) -> None:
    again = subprocess.run(
        [
            "psql",
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
            "-d",
            store.admin_dsn,
            "-f",
            str(GRAFANA / "cases-readonly.sql"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    sources = yaml.safe_load((GRAFANA / "provisioning/datasources/opsagent.yml").read_text())
    pg = [s for s in sources["datasources"] if s["uid"] == "opsagent-cases-pg"]
    assert len(pg) == 1
    assert pg[0]["type"] == "grafana-postgresql-datasource"
    assert pg[0]["url"] == "${OPSAGENT_CASES_PG_HOST}"
    assert pg[0]["user"] == "${OPSAGENT_CASES_PG_USER}"
    assert pg[0]["jsonData"]["database"] == "${OPSAGENT_CASES_PG_DB}"
    assert pg[0]["secureJsonData"] == {"password": "$__file{/etc/grafana/opsagent-cases-password}"}
    for panel in store.model["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "opsagent-cases-pg", panel["title"]
