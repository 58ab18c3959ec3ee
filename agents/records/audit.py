"""The audit record as `opsagent audit --json` and `opsagent fleet history --json` print it."""

from __future__ import annotations

from typing import Any

from agents.records.base import Record


class AuditEntry(Record):
    """One audited action: when, who, what on which target, the outcome and its details."""

    id: int
    at: str
    actor: str
    action: str
    target: str
    outcome: str
    detail: dict[str, Any]
