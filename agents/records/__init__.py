"""Typed records that cross rooms: the details of each kind of result, the status
document and the SLA report rows, with the JSON they print.

A `CheckResult` keeps its details as the JSON object it is stored and sent as (so rows
an older version wrote still load, and a kind this version does not know stays a plain
dict); `details_of` and each model's `of` read that object as the typed record of its
kind. The `--json` and `/status` documents are produced from these models only, and
`docs/json.md` is generated from them (`json_docs`), so there is one schema.
"""

from agents.records.base import JOB_KINDS, Details, Number, Record
from agents.records.details import *  # noqa: F403
from agents.records.details import DETAILS_BY_KIND, details_of
from agents.records.schema import DOCUMENTS, json_docs
from agents.records.sla import SlaRow
from agents.records.status import *  # noqa: F403
from agents.records.status import StatusDocument

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
