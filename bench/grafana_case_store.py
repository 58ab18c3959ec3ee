"""Benchmark: how long each panel of the "Cases (case store)" Grafana dashboard takes on a
big case store.

Creates a scratch database on the test PostgreSQL (OPSAGENT_TEST_PG, default
postgresql://postgres@127.0.0.1:5432/postgres), lets `CaseStore` create the tables,
fills `--cases` cases over two years on `--hosts` hosts (stored as the agent stores
them: ISO text in UTC; 1 in 50 still open), applies deploy/grafana/cases-readonly.sql,
then runs every panel query, expanded as Grafana expands it with every variable on All
and a six-month range, as the read-only role: `--rounds` times each, and prints the
median and the slowest in milliseconds. The database is dropped after.

    .venv/bin/python bench/grafana_case_store.py [--cases 100000] [--hosts 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agents.cases.store import CaseStore  # noqa: E402
from tests.support import services  # noqa: E402
from tests.support.grafana_sql import ALL, grafana_sql  # noqa: E402

# one row per case, timestamps as the store writes them (isoformat in UTC)
_ISO = "to_char(({}) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')"
_FILL = f"""
INSERT INTO cases (fingerprint, title, severity, status, source, host, occurrences,
  first_seen, last_seen, acknowledged_at, acknowledged_by, resolved_at, response_due,
  resolution_due, clock_start)
SELECT 'fp-' || n, 'check failed: ' || mod(n, 97), sev, st, 'check:bench',
  'host' || mod(n, %(hosts)s),
  1 + mod(n, 5), {_ISO.format("t")}, {_ISO.format("t")},
  CASE WHEN mod(n, 7) <> 0 THEN {_ISO.format("t + mod(n, 600) * interval '1 minute'")} END,
  CASE WHEN mod(n, 7) <> 0 THEN 'ops' END,
  CASE WHEN st <> 'open' THEN {_ISO.format("t + mod(n, 4000) * interval '1 minute'")} END,
  {_ISO.format("t + interval '4 hours'")}, {_ISO.format("t + interval '3 days'")},
  {_ISO.format("t")}
FROM (
  SELECT n, %(start)s::timestamptz + (n * %(step)s) * interval '1 second' AS t,
    (ARRAY['critical', 'major', 'moderate', 'minor'])[1 + mod(n, 4)] AS sev,
    CASE WHEN mod(n, 50) = 0 THEN 'open' WHEN mod(n, 3) = 0 THEN 'closed'
      ELSE 'resolved' END AS st
  FROM generate_series(1, %(cases)s) AS n
) AS g
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location(
        "grafana_generate", ROOT / "deploy/grafana/generate.py"
    )
    assert spec is not None and spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = generate
    spec.loader.exec_module(generate)
    model = generate.render(generate.case_store())
    now = datetime.now(UTC)
    start = now - timedelta(days=730)
    with services.postgres_database(f"opsagent_bench_{uuid.uuid4().hex[:10]}") as database:
        CaseStore(database.dsn)
        began = time.monotonic()
        with psycopg.connect(database.dsn, autocommit=True) as db:
            db.execute(
                _FILL,
                {
                    "hosts": args.hosts,
                    "start": start,
                    "step": 730 * 86400 // args.cases,
                    "cases": args.cases,
                },
            )
            db.execute("ANALYZE cases")
        print(f"{args.cases} cases on {args.hosts} hosts in {time.monotonic() - began:.1f} s")
        subprocess.run(
            ["psql", "-v", "ON_ERROR_STOP=1", "-q", "-d", database.dsn, "-f",
             str(ROOT / "deploy/grafana/cases-readonly.sql")],
            check=True,
        )  # fmt: skip
        reader = database.dsn.replace("postgres@", "grafana_cases@", 1)
        values = {"severity": [ALL], "host": [ALL], "search": ""}
        variables = model["templating"]["list"]
        with psycopg.connect(reader) as db:
            for panel in model["panels"]:
                for target in panel.get("targets", []):
                    sql = grafana_sql(
                        target["rawSql"], variables, values, now - timedelta(days=183), now
                    )
                    times = []
                    for _ in range(args.rounds):
                        began = time.monotonic()
                        rows = db.execute(sql).fetchall()
                        times.append((time.monotonic() - began) * 1000)
                    print(
                        f"{panel['title']:<40} {len(rows):>6} rows"
                        f"  median {statistics.median(times):7.1f} ms  max {max(times):7.1f} ms"
                    )


if __name__ == "__main__":
    main()
