"""When a scheduled job runs (backup, prune, restore test): `Schedule`."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field, model_validator

from agents.config.fields import WEEKDAYS, ClockTime, Duration, Model, TimeZone


class Schedule(Model):
    """When a job runs: daily at a time, weekly on a day at a time, or every N."""

    daily_at: ClockTime | None = Field(default=None, description="HH:MM every day.")
    weekly_on: Literal[WEEKDAYS] | None = Field(default=None, description="A weekday (with `at`).")  # type: ignore[valid-type]
    at: ClockTime | None = Field(default=None, description="HH:MM for weekly_on.")
    every: Duration | None = Field(default=None, description="Or an interval (at least 1s).")
    timezone: TimeZone = Field(
        default="UTC", description="IANA time zone of daily_at/at (DST handled)."
    )
    grace: Duration = Field(
        default=timedelta(hours=1),
        description="A last success older than period + grace is stale (caught up, alerted).",
    )

    @model_validator(mode="after")
    def _one_form(self) -> Schedule:
        forms = [self.daily_at is not None, self.weekly_on is not None, self.every is not None]
        if sum(forms) != 1:
            raise ValueError("give exactly one of daily_at, weekly_on (with at) or every")
        if self.weekly_on is not None and self.at is None:
            raise ValueError("weekly_on needs at: HH:MM")
        if self.every is not None and self.every < timedelta(seconds=1):
            raise ValueError("every must be at least 1s")
        return self

    @property
    def period(self) -> timedelta:
        """The time between two runs; a last success older than period + grace is stale."""
        if self.every is not None:
            return self.every
        if self.weekly_on is not None:
            return timedelta(days=7)
        return timedelta(days=1)
