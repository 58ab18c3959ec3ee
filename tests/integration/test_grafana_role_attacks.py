"""The Grafana case store role (deploy/grafana/cases-readonly.sql) against SQL a Grafana
editor can type, or a search box on an old Grafana lets through: the role is documented
as the wall ("SELECT from cases and case_events, nothing else: no writes, no DDL").
Real PostgreSQL, the shipped SQL applied with psql, the statements run as grafana_cases."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from agents.cases.store import CaseStore
from agents.results import Severity
from tests.support import services

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def reader(pg_database: services.Database) -> Iterator[str]:
    """The DSN of grafana_cases on a store with one case and the role applied."""
    CaseStore(pg_database.dsn).open_case_by_hand(
        "db down", Severity.CRITICAL, "h1", datetime(2026, 11, 10, 14, tzinfo=UTC), "ops"
    )
    psql = shutil.which("psql")
    if psql is None:
        pytest.fail("psql (postgresql-client) is needed to apply cases-readonly.sql")
    applied = subprocess.run(
        [psql, "-v", "ON_ERROR_STOP=1", "-q", "-d", pg_database.dsn, "-f",
         str(REPO / "deploy/grafana/cases-readonly.sql")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    base, _, name = pg_database.dsn.rpartition("/")
    yield base.replace("postgres@", "grafana_cases@", 1) + "/" + name


def test_the_role_reads_cases_and_not_the_outbox(reader: str) -> None:
    """What holds: the cases read, the outbox refused, a write refused."""
    with psycopg.connect(reader, autocommit=True) as db:
        assert db.execute("SELECT count(*) FROM cases").fetchone() == (1,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.execute("SELECT count(*) FROM outbox")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            db.execute("UPDATE cases SET title = 'x'")


@pytest.mark.xfail(
    strict=True,
    reason="read-only is a default the session may lift (SET transaction_read_only = off)"
    " and TEMP comes from PUBLIC: the role creates temporary tables (disk) and its 30 s"
    " statement_timeout is a default too (SET statement_timeout = 0); closing needs"
    " REVOKE TEMP ... FROM PUBLIC on the whole database, or a pooler that pins settings",
)
def test_the_role_cannot_run_ddl_even_after_lifting_read_only(reader: str) -> None:
    with psycopg.connect(reader, autocommit=True) as db, pytest.raises(psycopg.Error):
        db.execute(
            "SET transaction_read_only = off; CREATE TEMP TABLE hoard AS SELECT * FROM cases"
        )


@pytest.mark.xfail(
    strict=True,
    reason="pg_advisory_lock is EXECUTE to PUBLIC: grafana_cases can hold, on a pooled"
    " connection, the advisory locks the agents take (72114 schema, 72115 per case"
    " fingerprint, 72116 outbox), so a dashboard query stops the store's migrations and"
    " the opening of a given case (the agents give up after lock_timeout 30 s). Closing"
    " it needs the store off advisory locks (row locks in case_meta, which the role"
    " cannot read) or a superuser REVOKE in pg_catalog",
)
def test_the_role_cannot_hold_the_agents_locks(reader: str, pg_database: services.Database) -> None:
    with psycopg.connect(reader, autocommit=True) as grafana:
        try:
            grafana.execute("SELECT pg_advisory_lock(72114)")
        except psycopg.Error:
            return  # refused: the role cannot hold it
        with psycopg.connect(pg_database.dsn, autocommit=True) as agent:
            agent.execute("SET lock_timeout = '2s'")
            # the agents' own lock, as the store takes it around a migration
            with agent.transaction():
                agent.execute("SELECT pg_advisory_xact_lock(72114)")
