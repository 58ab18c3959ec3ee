"""The SLA report's rows (`opsagent cases sla --json`)."""

from __future__ import annotations

from agents.records.base import Number, Record


class SlaRow(Record):
    """`opsagent cases sla --json`: one severity's cases and how their clocks went."""

    severity: str
    cases: int
    respond_median_seconds: Number | None
    respond_p90_seconds: Number | None
    resolve_median_seconds: Number | None
    resolve_p90_seconds: Number | None
    breached: int
    compliance_percent: Number | None
