"""What the case store takes and hands out: cases, timeline entries, outbox rows and
failures, and how their values are kept (UTC ISO text, clean UTF-8 without NUL)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agents.cases.store.schema import OPEN_STATUSES
from agents.records.cases import (
    CaseEvent,
    CaseListItem,
    CaseRecord,
    NotificationRecord,
)
from agents.results import Severity


@dataclass(frozen=True)
class Case:
    """One case as the store holds it: its failure, status, counts and SLA clocks."""

    id: int
    fingerprint: str
    title: str
    severity: Severity
    status: str
    source: str
    host: str
    occurrences: int
    first_seen: datetime
    last_seen: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    response_due: datetime
    resolution_due: datetime
    clock_start: datetime | None = None

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def clock_started(self) -> datetime:
        """When the SLA clocks started: the opening, or the last reopening."""
        return self.clock_start or self.first_seen

    def to_dict(self) -> dict[str, Any]:
        data = {
            k: (
                v.isoformat()
                if isinstance(v, datetime)
                else v.value
                if isinstance(v, Severity)
                else v
            )
            for k, v in self.__dict__.items()
        }
        data["clock_start"] = self.clock_started.isoformat()
        return data

    def to_record(self) -> CaseRecord:
        """The case as the typed record its JSON is."""
        return CaseRecord.model_validate(self.to_dict())

    def list_item(self, now: datetime) -> CaseListItem:
        """The case as `cases list --json` prints it: with the seconds left on its clocks."""
        return CaseListItem.model_validate(
            {
                **self.to_dict(),
                "response_left_seconds": (self.response_due - now).total_seconds(),
                "resolution_left_seconds": (self.resolution_due - now).total_seconds(),
            }
        )


@dataclass(frozen=True)
class Event:
    """One entry of a case's timeline."""

    at: datetime
    kind: str
    actor: str | None
    text: str | None

    def to_record(self) -> CaseEvent:
        """The timeline entry as the typed record its JSON is."""
        return CaseEvent(at=self.at.isoformat(), kind=self.kind, actor=self.actor, text=self.text)


@dataclass(frozen=True)
class OutboxItem:
    """One claimed notification, as `notify.Dispatcher` delivers it."""

    id: int
    case_id: int
    notifier: str
    event: str
    attempts: int


@dataclass(frozen=True)
class Notification:
    """One outbox row, as `cases notifications` lists it."""

    id: int
    case_id: int
    notifier: str
    event: str
    state: str  # waiting, delivered, failed
    attempts: int
    created_at: datetime
    last_error: str | None
    handled_by: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            k: v.isoformat() if isinstance(v, datetime) else v for k, v in self.__dict__.items()
        }

    def to_record(self) -> NotificationRecord:
        """The outbox row as the typed record its JSON is."""
        return NotificationRecord.model_validate(self.to_dict())


@dataclass(frozen=True)
class Failure:
    """One report of a failure: what a rule hands the store."""

    fingerprint: str
    title: str
    severity: Severity
    source: str
    host: str
    at: datetime
    response_due: datetime
    resolution_due: datetime


def iso(value: datetime) -> str:
    """A time as the store keeps it: ISO text in UTC."""
    return value.astimezone(UTC).isoformat()


def parse_time(value: str | None) -> datetime | None:
    """A stored time back, or None where there is none."""
    return datetime.fromisoformat(value) if value else None


def case_from_row(row: Any) -> Case:
    """A `Case` from a row of `schema.COLUMNS`."""
    return Case(
        id=int(row[0]),
        fingerprint=row[1],
        title=row[2],
        severity=Severity(row[3]),
        status=row[4],
        source=row[5],
        host=row[6],
        occurrences=int(row[7]),
        first_seen=datetime.fromisoformat(row[8]),
        last_seen=datetime.fromisoformat(row[9]),
        acknowledged_at=parse_time(row[10]),
        acknowledged_by=row[11],
        resolved_at=parse_time(row[12]),
        response_due=datetime.fromisoformat(row[13]),
        resolution_due=datetime.fromisoformat(row[14]),
        clock_start=parse_time(row[15]),
    )


def clean(text: str | None) -> str | None:
    """Text as a store keeps it: valid UTF-8 (bytes that were not become U+FFFD) and no
    NUL (PostgreSQL refuses it), so no value can fail an insert halfway."""
    if text is None:
        return None
    return "".join("\ufffd" if c == "\x00" or "\ud800" <= c <= "\udfff" else c for c in text)
