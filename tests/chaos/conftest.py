"""Chaos tests write docs/reliability.md at the end of the session."""

from __future__ import annotations

import pytest

from tests.chaos import report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    report.write()
