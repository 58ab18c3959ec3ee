"""The status document (`opsagent status --json`, `/status`, the fleet's status cells)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import SerializerFunctionWrapHandler, ValidationError, model_serializer

from agents.records.base import Number, Record


class ProblemRow(Record):
    """A problem of the status document, most urgent first, with the clock that ranks it."""

    severity: str
    text: str
    since: str | None = None
    case: int | None = None
    clock: str | None = None
    due: str | None = None
    seconds_left: int | None = None


class TimerRow(Record):
    """A systemd timer of a host run by its timers."""

    unit: str
    active: bool | None = None
    state: str = ""
    last_run: str | None = None
    age_seconds: Number | None = None


class AgentRow(Record):
    """The agent: its version, and whether a daemon or the timers run its jobs."""

    version: str = ""
    cli_version: str = ""
    mode: str = "daemon"
    running: bool = False
    pid: int | None = None
    started_at: str | None = None
    uptime_seconds: Number | None = None
    stopped_at: str | None = None
    timers: list[TimerRow] = []


class CheckRow(Record):
    """A check's last result and since when it has had its status."""

    name: str
    kind: str = ""
    status: str | None = None
    since: str | None = None
    last_run: str | None = None
    summary: str = ""
    severity: str = "major"


class BackupRow(Record):
    """A configured source's backups; a source never backed up here has only `source`,
    `status` and `last_success` (both null)."""

    _ALWAYS: ClassVar[tuple[str, ...]] = ("source", "status", "last_success")

    source: str
    status: str | None = None
    last_success: str | None = None
    last_run: str | None = None
    age_seconds: Number | None = None
    bytes: int | None = None
    bytes_added: int | None = None
    summary: str | None = None

    @model_serializer(mode="wrap")
    def _given_fields(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if k in self._ALWAYS or k in self.model_fields_set}


class RestoreTestRow(Record):
    """The last restore test: outcome, age, RTO and RPO."""

    status: str | None = None
    last_run: str | None = None
    last_success: str | None = None
    age_seconds: Number | None = None
    rto_seconds: Number | None = None
    rpo_seconds: Number | None = None
    summary: str = ""


class RepositoryRow(Record):
    """The repository as the last backup saw it."""

    url: str | None = None
    snapshots: int | None = None
    bytes: int | None = None
    as_of: str | None = None


class CaseRow(Record):
    """An open case and the time left on its running clock."""

    id: int
    severity: str
    status: str = "open"
    title: str = ""
    source: str = ""
    first_seen: str = ""
    clock: str = "response"
    due: str = ""
    seconds_left: int = 0


class StatusDocument(Record):
    """`opsagent status --json` and `/status`: this host, the most urgent problem first.

    `collect` sets every field; the defaults are for reading a document another
    version wrote (the fleet reads every host's), which may lack the newer fields."""

    host: str = ""
    ok: bool = False
    headline: str = ""
    problems: list[ProblemRow] = []
    agent: AgentRow = AgentRow()
    checks: list[CheckRow] = []
    backups: list[BackupRow] = []
    restore_test: RestoreTestRow | None = None
    repository: RepositoryRow | None = None
    cases: list[CaseRow] = []
    cases_error: str | None = None
    generated_at: str = ""

    @classmethod
    def read(cls, doc: Any) -> StatusDocument:
        """A status document another host printed, maybe another release's: an entry that
        does not fit its field is left out (a row missing what it needs goes whole), so
        the rest is still read; never an exception."""
        if not isinstance(doc, dict):
            return cls()
        data = copy.deepcopy(doc)
        while True:
            try:
                return cls.model_validate(data)
            except ValidationError as exc:
                error = exc.errors()[0]
                missing = error["type"] == "missing"
                if not _drop(data, error["loc"][:-1] if missing else error["loc"]):
                    return cls()


def _drop(data: Any, loc: Sequence[int | str]) -> bool:
    """Remove the deepest entry of `data` on the path `loc` (a union's member names in the
    path are skipped by walking only what exists); False when nothing could go."""
    parent: Any = None
    key: int | str | None = None
    node = data
    for part in loc:
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if not (in_dict or in_list):
            break
        parent, key, node = node, part, node[part]
    if parent is None or key is None:
        return False
    del parent[key]
    return True
