"""Session-scoped real services (S3, sshd, Prometheus, Alertmanager) and throwaway databases."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import services
from tests.support.services import ServiceError

# Tests write secret files the way an operator's shell with `umask 077` does: the agent
# refuses a world-readable secret file (tests/integration/test_keys.py checks that).
os.umask(0o077)


def _started(factory, *args):  # type: ignore[no-untyped-def]
    try:
        return factory(*args)
    except ServiceError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.S3Server]:
    server = _started(services.start_s3, tmp_path_factory.mktemp("s3"))
    yield server
    server.process.stop()


@pytest.fixture
def s3_bucket(s3_server: services.S3Server) -> str:
    """A fresh, empty bucket per test."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.SshServer]:
    server = _started(services.start_sshd, tmp_path_factory.mktemp("sshd"))
    yield server
    server.process.stop()


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.PrometheusServer]:
    config = """
global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: self
    static_configs: [{targets: ["$SELF"]}]
"""
    server = _started(services.start_prometheus, tmp_path_factory.mktemp("prom"), config)
    yield server
    server.process.stop()


@pytest.fixture
def pg_database() -> Iterator[services.Database]:
    try:
        with services.postgres_database(f"opsagent_t_{uuid.uuid4().hex[:10]}") as db:
            yield db
    except ServiceError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def mysql_database() -> Iterator[services.Database]:
    try:
        with services.mysql_database(f"opsagent_t_{uuid.uuid4().hex[:10]}") as db:
            yield db
    except ServiceError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A case store URL, once on SQLite and once on a throwaway PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{(tmp_path / 'cases.db').absolute()}"
    return request.getfixturevalue("pg_database").dsn
