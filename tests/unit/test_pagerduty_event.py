"""Every PagerDuty event the notifier builds passes the Events API v2 rules, and the
validator catches each rule it implements."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.cases.notify import (
    PAGERDUTY_ACTION,
    pagerduty_event,
    pagerduty_event_problems,
)
from agents.cases.store import Case
from agents.results import Severity

T = datetime(2026, 11, 27, 10, tzinfo=UTC)
KEY = "R0UTINGKEYR0UTINGKEYR0UTINGKEY12"
EVENTS = [*PAGERDUTY_ACTION, "breached", "commented", "closed"]


def case(**changes: Any) -> Case:
    base = Case(
        id=7,
        fingerprint="tcp:db",
        title="db port closed",
        severity=Severity.CRITICAL,
        status="open",
        source="tcp:db",
        host="db1",
        occurrences=1,
        first_seen=T,
        last_seen=T,
        acknowledged_at=None,
        acknowledged_by=None,
        resolved_at=None,
        response_due=T + timedelta(hours=4),
        resolution_due=T + timedelta(hours=24),
    )
    return replace(base, **changes)


EDGE_CASES = {
    "plain": case(),
    "empty host": case(host=""),
    "blank host": case(host=" \t\n"),
    "NUL host": case(host="\x00"),
    "very long title": case(title="x" * 5000),
    "long astral title": case(title="\U0001f525" * 1500),
    "non-ASCII": case(title="Überlast – 東京 ёлка", host="hôte-1"),
    "NUL and newlines": case(title="a\x00b\nc\r\n", source="cmd\x00"),
    "lone surrogate": case(title="broken \ud800 text"),
    "empty title": case(title=""),
    "empty source": case(source=""),
    "long fingerprint": case(fingerprint="f" * 300),
    "surrogate fingerprint": case(fingerprint="fp-\udcff"),
    "empty fingerprint": case(fingerprint=""),
    **{f"severity {s.value}": case(severity=s) for s in Severity},
}


@pytest.mark.parametrize("name", EDGE_CASES)
@pytest.mark.parametrize("event", EVENTS)
def test_every_event_of_every_case_is_valid(name: str, event: str) -> None:
    action = PAGERDUTY_ACTION.get(event)
    if action is None:
        return  # nothing goes to PagerDuty for it
    message = pagerduty_event(action, KEY, EDGE_CASES[name], "agent-host")
    assert pagerduty_event_problems(message) == []


def test_the_source_is_the_case_host_else_the_agent_host() -> None:
    def source(c: Case, agent: str) -> str:
        return pagerduty_event("trigger", KEY, c, agent)["payload"]["source"]

    assert source(case(host="db1"), "agent") == "db1"
    assert source(case(host=""), "agent") == "agent"
    assert source(case(host="  "), "agent") == "agent"
    assert source(case(host=""), "") == "opsagent"


def test_long_text_is_clipped_and_keys_stay_stable() -> None:
    long = pagerduty_event("trigger", KEY, case(title="\U0001f525" * 1500), "a")
    summary = long["payload"]["summary"]
    assert len(summary.encode("utf-16-le")) // 2 <= 1024 and summary.startswith("[critical] ")
    first = pagerduty_event("trigger", KEY, case(fingerprint="f" * 300), "a")["dedup_key"]
    again = pagerduty_event("resolve", KEY, case(fingerprint="f" * 300), "a")["dedup_key"]
    assert first == again and len(first) <= 255
    assert pagerduty_event("resolve", KEY, case(), "a") == {
        "routing_key": KEY,
        "event_action": "resolve",
        "dedup_key": "tcp:db",
    }


@settings(max_examples=200, deadline=None)
@given(
    title=st.text(max_size=3000),
    host=st.text(max_size=300),
    fingerprint=st.text(max_size=400),
    source=st.text(max_size=50),
    event=st.sampled_from(list(PAGERDUTY_ACTION)),
)
def test_any_case_text_gives_a_valid_event(
    title: str, host: str, fingerprint: str, source: str, event: str
) -> None:
    c = case(title=title, host=host, fingerprint=fingerprint, source=source)
    message = pagerduty_event(PAGERDUTY_ACTION[event], KEY, c, "agent-host")
    assert pagerduty_event_problems(message) == []


def trigger(**changes: Any) -> dict[str, Any]:
    """A valid trigger with `changes` (payload keys merged; "DROP" removes a key)."""
    message = pagerduty_event("trigger", KEY, case(), "a")
    payload = changes.pop("payload", {})
    if isinstance(payload, dict):
        payload = {**message["payload"], **payload}
    return {k: v for k, v in {**message, "payload": payload, **changes}.items() if v != "DROP"}


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        (trigger(routing_key=""), "routing_key must be a non-empty string"),
        (trigger(routing_key=None), "routing_key must be a non-empty string"),
        (trigger(routing_key="DROP"), "routing_key must be a non-empty string"),
        (trigger(event_action="page"), "event_action must be trigger, acknowledge or resolve"),
        (trigger(dedup_key="k" * 256), "dedup_key must be 1-255 characters"),
        (trigger(dedup_key=""), "dedup_key must be 1-255 characters"),
        ({"routing_key": KEY, "event_action": "resolve"}, "dedup_key is required to resolve"),
        (trigger(payload="DROP"), "payload is required to trigger"),
        (trigger(payload={"summary": ""}), "payload.summary must be 1-1024 characters"),
        (trigger(payload={"summary": "s" * 1025}), "payload.summary must be 1-1024 characters"),
        (trigger(payload={"source": ""}), "payload.source must be a non-empty string"),
        (trigger(payload={"source": None}), "payload.source must be a non-empty string"),
        (trigger(payload={"severity": "major"}), "payload.severity must be critical, error,"),
        (trigger(payload={"timestamp": "yesterday"}), "payload.timestamp must be an ISO 8601"),
        (trigger(payload={"timestamp": "2026-11-27T10:00:00"}), "payload.timestamp must be"),
        (trigger(payload={"component": 3}), "payload.component must be a string"),
        (trigger(dedup_key="a\ud800"), "dedup_key must be 1-255 characters"),
        (trigger(payload={"custom_details": []}), "payload.custom_details must be an object"),
    ],
)
def test_the_validator_names_what_pagerduty_would_refuse(
    message: dict[str, Any], problem: str
) -> None:
    problems = pagerduty_event_problems(message)
    assert len(problems) == 1 and problems[0].startswith(problem), problems


def test_valid_messages_pass() -> None:
    assert pagerduty_event_problems(trigger()) == []
    assert (
        pagerduty_event_problems(trigger(payload={"timestamp": "2015-07-17T08:42:58.315+00:00"}))
        == []
    )
    assert pagerduty_event_problems(trigger(dedup_key="DROP")) == []  # PagerDuty makes one
    for action in ("acknowledge", "resolve"):
        assert pagerduty_event_problems(pagerduty_event(action, KEY, case(), "a")) == []


def test_a_naive_time_is_sent_as_utc() -> None:
    naive = case(last_seen=datetime(2026, 11, 27, 10))
    message = pagerduty_event("trigger", KEY, naive, "a")
    assert message["payload"]["timestamp"] == "2026-11-27T10:00:00+00:00"
    assert pagerduty_event_problems(message) == []
