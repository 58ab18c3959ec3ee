"""Typed records that cross rooms: the details of each kind of result, the status
document and the SLA report rows, with the JSON they print.

A `CheckResult` keeps its details as the JSON object it is stored and sent as (so rows
an older version wrote still load, and a kind this version does not know stays a plain
dict); `details_of` and each model's `of` read that object as the typed record of its
kind. The `--json` and `/status` documents are produced from these models only, and
`docs/json.md` is generated from them (`json_docs`), so there is one schema.
"""

from typing import TYPE_CHECKING, Any

from agents.records.base import JOB_KINDS, Details, Number, Record
from agents.records.details import *  # noqa: F403
from agents.records.details import DETAILS_BY_KIND, details_of
from agents.records.sla import SlaRow
from agents.records.status import *  # noqa: F403
from agents.records.status import StatusDocument

if TYPE_CHECKING:
    from agents.records.schema import DOCUMENTS, json_docs


def __getattr__(name: str) -> Any:
    """`DOCUMENTS` and `json_docs` load every command's records (backup, fleet, audit):
    imported when asked for, so `opsagent status` and the agent carry only theirs."""
    if name in ("DOCUMENTS", "json_docs"):
        from agents.records import schema

        return getattr(schema, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DETAILS_BY_KIND",
    "DOCUMENTS",
    "JOB_KINDS",
    "Details",
    "Number",
    "Record",
    "SlaRow",
    "StatusDocument",
    "details_of",
    "json_docs",
]
