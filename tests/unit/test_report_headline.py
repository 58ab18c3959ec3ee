"""The recovery headline reads as the issue's example, and says what is not so."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from agents.reports.recovery import RecoveryInputs, headline
from tests.support.reports import UNTIL


def inputs(**extra: Any) -> RecoveryInputs:
    return RecoveryInputs(runs=[], cases=[], since=UNTIL - timedelta(days=90), until=UNTIL, **extra)


def rows(count: int, tests: int, passed: int, worst: float) -> list[dict[str, Any]]:
    """`count` sources sharing `tests` and `passed`, the first with the worst RTO."""
    out = []
    for i in range(count):
        share, done = tests // count, passed // count
        out.append(
            {
                "tests": share + (tests % count if i == 0 else 0),
                "passed": done + (passed % count if i == 0 else 0),
                "worst_rto_seconds": worst if i == 0 else worst / 2,
            }
        )
    return out


def failure(resolved: bool | None) -> dict[str, Any]:
    """A failure whose case was resolved within target (True), late (False), is still
    open (None); "none": no case."""
    case = {
        "resolved_at": None if resolved is None else "2026-11-01T00:00:00+00:00",
        "resolution_met": resolved,
    }
    return {"case": case}


COVERAGE = {"percent": 100.0, "window_days": 31}


def test_the_issue_example() -> None:
    text = headline(
        rows(12, 540, 538, 552.0),
        [failure(True), failure(True)],
        COVERAGE,
        inputs(rto_target=21600.0),
    )
    assert text == (
        "12 sources, 540 restore tests, 538 passed, 2 failures both resolved within target;"
        " 100 % of packs re-read in the last 31 days; worst RTO 9m12s (target 6h)"
    )


@pytest.mark.parametrize(
    ("failures", "text"),
    [
        ([], "no failures"),
        ([failure(True)], "1 failure resolved within target"),
        ([failure(True)] * 3, "3 failures all resolved within target"),
        (
            [failure(True), failure(False), failure(None), {"case": None}],
            "4 failures (1 resolved within target, 1 resolved late, 1 open, 1 without a case)",
        ),
    ],
)
def test_failures_say_how_their_cases_went(failures: list[dict[str, Any]], text: str) -> None:
    got = headline(rows(1, 10, 10, 60.0), failures, COVERAGE, inputs())
    assert got == (
        f"1 source, 10 restore tests, 10 passed, {text};"
        " 100 % of packs re-read in the last 31 days; worst RTO 1m (no target set)"
    )


def test_unknown_coverage_and_a_short_history_are_said() -> None:
    unknown = {"percent": None, "window_days": 7}
    got = headline(
        rows(1, 1, 1, 0.5),
        [],
        unknown,
        inputs(
            repository={"url": "/r", "key_fingerprint": None},
            history_from=UNTIL - timedelta(days=3),
        ),
    )
    assert got == (
        "1 source, 1 restore test, 1 passed, no failures;"
        " pack coverage unknown (the repository could not be read);"
        " worst RTO 500ms (no target set); history kept from 2026-11-29"
    )
    assert headline([], [], unknown, inputs(source="db")) == (
        "No restore tests of source db in the period 2026-09-03 to 2026-12-02"
    )
