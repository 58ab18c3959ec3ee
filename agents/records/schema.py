"""docs/json.md, generated from the records: one schema for every `--json` document."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from agents.records.audit import AuditEntry
from agents.records.backup import (
    BackupRun,
    DatabaseRestore,
    DatabaseRestorePlan,
    FilesRestore,
    FilesRestorePlan,
    ForgetRun,
    ForgetSnapshots,
    ForgetSnapshotsPlan,
    IndexRepairReport,
    KeyRow,
    PacksRepairReport,
    RepositoryCheck,
    RestoreTestPlan,
    SnapshotFiles,
    SnapshotsRepairReport,
    SnapshotSummary,
)
from agents.records.base import Details
from agents.records.cases import CaseDetail, CaseListItem, DueDocument, NotificationsDocument
from agents.records.details import DETAILS_BY_KIND
from agents.records.fleet import FleetRun, UpgradePlan, UpgradeRun
from agents.records.sla import SlaRow
from agents.records.status import StatusDocument

# the documents of docs/json.md, each with the command that prints it
DOCUMENTS: tuple[tuple[str, str, type[BaseModel]], ...] = (
    ("Status", "`opsagent status --json`, `/status` on the exporter", StatusDocument),
    ("SLA report", "`opsagent cases sla --json` (a list, one row per severity)", SlaRow),
    ("Case list", "`opsagent cases list --json` (a list, newest first)", CaseListItem),
    ("Case", "`opsagent cases show --json`", CaseDetail),
    ("Notifications", "`opsagent cases notifications --json`", NotificationsDocument),
    ("Due times", "`opsagent cases due --json`", DueDocument),
    (
        "Audit records",
        "`opsagent audit --json` and `opsagent fleet history --json` (a list, newest first)",
        AuditEntry,
    ),
    (
        "Fleet command",
        "`opsagent fleet exec|status|checks|backup run|restore-test run --json`",
        FleetRun,
    ),
    ("Fleet upgrade plan", "`opsagent fleet upgrade --dry-run --json`", UpgradePlan),
    ("Fleet upgrade", "`opsagent fleet upgrade --json`", UpgradeRun),
    # the backup room's: backup, restore and restore-test commands
    ("Backup run", "`opsagent backup run --json`", BackupRun),
    (
        "Snapshots",
        "`opsagent backup snapshots --json` (a list), `backup show --json`",
        SnapshotSummary,
    ),
    ("Snapshot with files", "`opsagent backup show --ls --json`", SnapshotFiles),
    ("Repository check", "`opsagent backup check --json`", RepositoryCheck),
    ("Retention", "`opsagent backup forget [--dry-run] --json`", ForgetRun),
    (
        "Named snapshots, dry run",
        "`opsagent backup forget --dry-run ID... --json`",
        ForgetSnapshotsPlan,
    ),
    ("Named snapshots removed", "`opsagent backup forget ID... --json`", ForgetSnapshots),
    ("Repository keys", "`opsagent backup key list --json` (a list)", KeyRow),
    ("Index repair", "`opsagent backup repair index --json`", IndexRepairReport),
    ("Packs repair", "`opsagent backup repair packs --json`", PacksRepairReport),
    ("Snapshots repair", "`opsagent backup repair snapshots --json`", SnapshotsRepairReport),
    ("Files restore, dry run", "`opsagent restore --dry-run --json`", FilesRestorePlan),
    ("Files restore", "`opsagent restore --json`", FilesRestore),
    (
        "Database restore, dry run",
        "`opsagent restore --database --dry-run --json`",
        DatabaseRestorePlan,
    ),
    ("Database restore", "`opsagent restore --database --json`", DatabaseRestore),
    ("Restore test plan", "`opsagent restore-test plan --json`", RestoreTestPlan),
)


def json_docs() -> str:
    """docs/json.md: every `--json` document and result details, field by field, from
    the models above."""
    lines = [
        "# JSON output",
        "",
        "Generated from the models in `agents/records/` by `json_docs()`. Times are ISO",
        "8601 text, durations seconds; `?` marks a field that may be null. Objects keep",
        "these fields in this order (`--json` sorts keys; `/status` does not).",
        "",
    ]
    for title, where, model in DOCUMENTS:
        lines += [f"## {title}", "", f"{where}.", ""]
        lines += _model_tables(model)
    lines += [
        "## Check and job results",
        "",
        "`opsagent monitor checks --json` and `restore-test history --json` print a list",
        "of results, `backup prune --json` and `restore-test run --json` one, and",
        "`backup run --json` an object: `run` (the `backup` result), `sources` (its",
        "`backup_source` results) and `repository` (the `backup_repository` result, or",
        "null). A result has `name`, `kind`, `host`, `status` (`ok`, `failed`, `error`),",
        "`severity`, `summary`, `details`, `duration_seconds`, `started_at` and",
        "`fingerprint`; the state database stores the same object. `details` depends on",
        "the kind, below: a check leaves out a field without a value, a result whose",
        "check or job raised has only `exception` and `where`, and a kind not listed",
        "here (from another version) is read as it is.",
        "",
    ]
    kinds: dict[type[Details], list[str]] = {}
    for kind, model in DETAILS_BY_KIND.items():
        kinds.setdefault(model, []).append(f"`{kind}`")
    for model, names in kinds.items():
        lines += [f"### {', '.join(names)}", ""]
        lines += _model_tables(model, skip=set(Details.model_fields))
    return "\n".join(lines).rstrip() + "\n"


def _model_tables(model: type[BaseModel], skip: set[str] | None = None) -> list[str]:
    """A table of the model's fields, then one for each record nested in it."""
    lines = [" ".join((model.__doc__ or "").split("\n\n")[0].split()), ""]
    lines += ["| field | type |", "| --- | --- |"]
    nested: list[type[BaseModel]] = []
    for name, field in model.model_fields.items():
        if name in (skip or set()):
            continue
        lines.append(f"| `{name}` | {_type_name(field.annotation, nested)} |")
    lines.append("")
    for inner in nested:
        lines += [f"#### {inner.__name__}", ""]
        lines += _model_tables(inner)
    return lines


def _type_name(annotation: Any, nested: list[type[BaseModel]]) -> str:
    """A field's type for people: number, text, list of X, X?."""
    import types
    import typing

    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (types.UnionType, typing.Union):
        rest = [a for a in args if a is not type(None)]
        names = dict.fromkeys(_type_name(a, nested) for a in rest)
        text = " or ".join(names)
        return text + "?" if len(rest) < len(args) else text
    if origin is list:
        return f"list of {_type_name(args[0], nested)}"
    if origin is dict:
        return f"object of {_type_name(args[1], nested)}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation not in nested:
            nested.append(annotation)
        return annotation.__name__
    simple = {int: "number", float: "number", str: "text", bool: "boolean"}
    return simple.get(annotation, "any")
