"""The audit log: every action that changes data (backup, forget, prune, restore, restore
test, key change, case change, fleet command) appended to the state database with who,
when, what and the outcome. Records are only ever appended; `opsagent audit` lists them.
"""

from __future__ import annotations

import getpass
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.errors import OpsagentError
from agents.records.audit import AuditEntry
from agents.results import CheckResult

if TYPE_CHECKING:
    from agents.state import AuditRecord

log = logging.getLogger("opsagent.audit")

# job results that change data, audited when the daemon runs them
AUDITED_KINDS = frozenset({"backup", "forget", "prune", "restore_test"})
SCHEDULED = "opsagent (scheduled)"


def whoami() -> str:
    """The person at the keyboard: under `sudo -u opsagent …` (how the runbooks run
    commands) that is the user who ran sudo, not the service user."""
    sudo = os.environ.get("SUDO_USER", "").strip()
    if sudo and sudo != "root":
        return sudo
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def write(
    state_db: Path, actor: str, action: str, target: str, outcome: str, detail: dict[str, Any]
) -> None:
    """Append one record; a state database that cannot be written is logged, never fatal
    to the action itself (which has already happened)."""
    from agents.state import StateDB

    try:
        StateDB(state_db).audit(actor, action, target, outcome, detail)
    except OpsagentError as exc:
        log.warning("audit record not written (%s %s): %s", action, target, exc)


@contextmanager
def action(state_db: Path, name: str, target: str, **detail: Any) -> Iterator[dict[str, Any]]:
    """Audit a person's action: `ok` (or the body's `detail["outcome"]`) when it completes,
    `refused: <reason>` when it raises a one-line error."""
    try:
        yield detail
    except OpsagentError as exc:
        write(state_db, whoami(), name, target, f"refused: {exc}", detail)
        raise
    outcome = str(detail.pop("outcome", "ok"))
    write(state_db, whoami(), name, target, outcome, detail)


def entry(record: AuditRecord) -> AuditEntry:
    """The stored record as `opsagent audit --json` and `fleet history --json` print it."""
    return AuditEntry.model_validate(record.to_dict())


def result_sink(state_db: Path, actor: str = SCHEDULED) -> Any:
    """A daemon sink that audits the job results that change data."""

    def sink(result: CheckResult) -> None:
        if result.kind not in AUDITED_KINDS:
            return
        write(
            state_db,
            actor,
            result.kind.replace("_", "-"),
            result.name,
            result.status.value,
            {"summary": result.summary, "duration_seconds": round(result.duration_seconds, 3)},
        )

    return sink
