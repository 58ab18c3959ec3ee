"""Gather a report's facts from where this agent keeps them (state database, case store,
repository, fleet inventory) and build the document; the CLI signs and writes it."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agents.config import Config, RestoreTestConfig
from agents.errors import OpsagentError
from agents.reports.recovery import RecoveryInputs, build_recovery
from agents.reports.signing import KEY_FILE_NAME
from agents.reports.sla import SlaInputs, build_sla
from agents.results import one_line

log = logging.getLogger("opsagent.reports")

RESTORE_TEST_SOURCE = "restore_test:restore_test"  # the case source of a failed restore test


class ReportError(OpsagentError):
    """A report that cannot be built (a bad filter, an unreadable inventory); one line."""

    exit_code = 2


def default_key_file(config: Config) -> Path:
    """Where the report signing key lives unless --key-file says: the agent's state_dir."""
    return config.state_dir / KEY_FILE_NAME


def recovery_document(
    config: Config, since: datetime, until: datetime, source: str | None = None
) -> dict[str, Any]:
    """The recovery report of this agent for [since, until) (unsigned)."""
    from agents.cases.service import case_store
    from agents.state import StateDB

    plan = config.restore_test or RestoreTestConfig()
    kinds = {s.name: s.kind for s in config.backup.sources} if config.backup else {}
    if source is not None and kinds and source not in kinds:
        raise ReportError(f"no source {source!r} in the config (known: {', '.join(kinds)})")
    _must_exist(config.state_db, "state database", "state_dir")
    state = StateDB(config.state_db)
    runs = state.runs_between("restore_test", since, until, host=config.host)
    cases: list[Any] = []
    if _store_missing(config):  # no case was ever opened here: failures stand alone
        log.warning(
            "%s: no case store there; failures are listed without cases",
            _sqlite_file(config),
        )
    else:
        store = case_store(config)
        cases = [c for c in store.cases(since=since) if c.source == RESTORE_TEST_SOURCE]
    packs, repository = _repository(config)
    return build_recovery(
        RecoveryInputs(
            runs=runs,
            cases=cases,
            since=since,
            until=until,
            packs=packs,
            pack_checks=state.pack_checks(),
            full_every=plan.verify.data.full_every,
            daily_budget=plan.verify.data.daily_budget,
            rto_target=plan.max_rto.total_seconds() if plan.max_rto else None,
            rpo_target=plan.max_rpo.total_seconds() if plan.max_rpo else None,
            source_kinds=kinds,
            source=source,
            hosts=[config.host],
            repository=repository,
            generated_at=datetime.now(UTC),
            history_from=state.first_run_at(),
        )
    )


def _must_exist(path: Path, what: str, setting: str) -> None:
    """Refuse a report from a file the agent never wrote: a mistyped path would otherwise
    make an empty database and a signed report of "no restore tests"."""
    if not path.exists():
        raise ReportError(f"{path}: no {what} there (is {setting} in the config right?)")


def _must_exist_store(config: Config) -> None:
    """The SQLite case store must exist already; a PostgreSQL one is checked by connecting."""
    if _store_missing(config):
        _must_exist(_sqlite_file(config), "case store", "cases.store")


def _store_missing(config: Config) -> bool:
    """A SQLite case store that was never created (opening it would create it)."""
    return config.cases_store.startswith("sqlite:") and not _sqlite_file(config).exists()


def _sqlite_file(config: Config) -> Path:
    from agents.cases.store.db import sqlite_path

    return sqlite_path(config.cases_store)


def _repository(config: Config) -> tuple[dict[str, int] | None, dict[str, Any] | None]:
    """The repository's packs (-> bytes) and its `repository` facts; a repository that
    does not open leaves coverage and the fingerprint unknown, with a warning."""
    if config.backup is None:
        return None, None
    from agents.backup.checker import blobs_by_pack
    from agents.backup.runner import open_repository
    from agents.reports.document import repository_facts

    try:
        repo = open_repository(config.backup)
        packs = {
            pack: sum(loc.length for _, loc in blobs) for pack, blobs in blobs_by_pack(repo).items()
        }
        return packs, repository_facts(repo, repo.storage.url)
    except Exception as exc:  # the report still stands on the state's facts
        log.warning("repository not read, pack coverage unknown: %s", one_line(exc))
        return None, {"url": config.backup.repository, "key_fingerprint": None}


def sla_document(
    config: Config,
    since: datetime,
    until: datetime,
    labels: dict[str, str] | None = None,
    inventory_file: Path | None = None,
) -> dict[str, Any]:
    """The SLA report for [since, until), of the hosts whose inventory labels match all
    of `labels` when given (unsigned)."""
    from agents.cases.service import case_store

    hosts = _labelled_hosts(labels, inventory_file) if labels else None
    _must_exist_store(config)
    store = case_store(config)
    return build_sla(
        SlaInputs(
            cases=store.cases(since=since - timedelta(days=366)),
            recorded_breaches=store.breached_cases(),
            timeline=store.events,
            config=config.cases,
            since=since,
            until=until,
            hosts=hosts,
            labels=labels or {},
            generated_at=datetime.now(UTC),
        )
    )


def _labelled_hosts(labels: dict[str, str], inventory_file: Path | None) -> list[str]:
    """The inventory's hosts carrying every one of `labels`; none is an error."""
    from agents.config import inventory_path, load_inventory

    inventory = load_inventory(inventory_path(inventory_file))
    hosts = [
        h.name
        for h in inventory.hosts
        if all(h.labels.get(key) == value for key, value in labels.items())
    ]
    if not hosts:
        wanted = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))
        raise ReportError(f"no host of the inventory has the label(s) {wanted}")
    return hosts


def parse_labels(values: tuple[str, ...] | list[str]) -> dict[str, str]:
    """`--label k=v` options as a dict; a malformed one is a ReportError."""
    out = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key.strip():
            raise ReportError(f"--label takes key=value, got {value!r}")
        out[key.strip()] = text.strip()
    return out
