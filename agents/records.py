"""Typed records that cross rooms: the details of each kind of result, the status
document and the SLA report rows, with the JSON they print.

A `CheckResult` keeps its details as the JSON object it is stored and sent as (so rows
an older version wrote still load, and a kind this version does not know stays a plain
dict); `details_of` and each model's `of` read that object as the typed record of its
kind. The `--json` and `/status` documents are produced from these models only, and
`docs/json.md` is generated from them (`json_docs`), so there is one schema.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
)

from agents.results import CheckResult

# a JSON number as it came: an int stays an int, a float a float, so output is unchanged
Number = int | float

# every kind of result a scheduled job emits (the rest are checks, or internal)
JOB_KINDS = frozenset({"backup", "backup_source", "restore_test", "prune", "forget"})


class Record(BaseModel):
    """A frozen record whose JSON is its fields, in order."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    def to_dict(self) -> dict[str, Any]:
        """The record as the JSON object printed for it."""
        return self.model_dump()


class Details(Record):
    """What every kind's details may hold: the exception when its body raised."""

    exception: str | None = None
    where: str | None = None

    @classmethod
    def of(cls, result: CheckResult) -> Self:
        """The result's details as this record; an entry of the wrong type (an old or
        foreign row) is kept as it is rather than lost."""
        try:
            return cls.model_validate(dict(result.details))
        except ValidationError:
            return cls.model_construct(**dict(result.details))

    def to_details(self) -> dict[str, Any]:
        """The details object a result carries: the fields that have a value."""
        return self.model_dump(exclude_none=True)


class DiskDetails(Details):
    """A `disk` check: the file system's size and free space, and its fill forecast."""

    path: str | None = None
    total_bytes: int | None = None
    free_bytes: int | None = None
    free_percent: Number | None = None
    hours_to_full: Number | None = None  # only once the forecast has enough samples


class CommandDetails(Details):
    """A `command` check: exit code and the tail of the output."""

    exit_code: int | None = None
    output: str | None = None


class TcpDetails(Details):
    """A `tcp` check: connect time, or what the server answered when it did not match."""

    connect_seconds: Number | None = None
    received: str | None = None


class HttpDetails(Details):
    """An `http` check: status code, latency and days left on the TLS certificate."""

    status_code: int | None = None
    latency_seconds: Number | None = None
    cert_days_left: Number | None = None


class FileAgeDetails(Details):
    """A `file_age` check: the newest matching file and its age."""

    newest: str | None = None
    age_seconds: Number | None = None


class ProcessDetails(Details):
    """A `process` check: the matched processes and what they use."""

    count: int | None = None
    pids: list[int] | None = None
    cpu_seconds: Number | None = None
    rss_bytes: int | None = None


class QueryDetails(Details):
    """A `postgres` or `mysql` check: the value the query returned and its time."""

    value: bool | int | float | str | None = None
    query_seconds: Number | None = None


class FreshnessDetails(Details):
    """A `job_freshness` result: the job watched, its limit and its last success's age."""

    job: str | None = None
    limit_seconds: Number | None = None
    age_seconds: Number | None = None


class BackupSourceDetails(Details):
    """One source's backup (`backup_source`): its snapshot and the snapshot's stats."""

    source: str | None = None
    source_kind: str | None = None
    snapshot: str | None = None
    files: int | None = None
    dirs: int | None = None
    bytes: int | None = None
    bytes_read: int | None = None
    files_reused: int | None = None
    bytes_added: int | None = None
    bytes_stored: int | None = None
    blobs_new: int | None = None
    duration_seconds: Number | None = None
    warnings: list[str] | None = None


class BackupDetails(Details):
    """The `backup` job: each source's outcome, the totals and the repository's size."""

    sources: dict[str, str] | None = None
    bytes_added: int | None = None
    bytes: int | None = None
    snapshots: int | None = None
    repository_bytes: int | None = None
    logical_bytes: int | None = None
    repository: str | None = None
    damaged: list[str] | None = None


class RepositoryHealthDetails(Details):
    """The repository as a backup saw it (`backup_repository`): damage and recovery."""

    repository: str | None = None
    damaged: list[str] | None = None
    recovered_packs: int | None = None


class RestoreStep(Record):
    """One step of a restore test: its outcome, time and what it found."""

    model_config = ConfigDict(frozen=True, extra="allow")

    name: str
    ok: bool
    summary: str = ""
    seconds: Number = 0
    details: dict[str, Any] | None = None


class RestoreTestDetails(Details):
    """The `restore_test` job: the steps, RTO and RPO, and a kept sandbox."""

    run_id: str | None = None
    snapshots: dict[str, str] | None = None
    sources: dict[str, dict[str, Any]] | None = None
    steps: list[RestoreStep] | None = None
    rto_seconds: Number | None = None
    rpo_seconds: Number | None = None
    sandbox: str | None = None
    kept_until: str | None = None
    coverage: Number | None = None
    sandbox_host: str | None = None


class ForgetDetails(Details):
    """The `forget` job: snapshots kept and removed, and those Object Lock kept."""

    kept: int | None = None
    removed: int | None = None
    locked: int | None = None


class PruneDetails(Details):
    """The `prune` job: what it reclaimed and the packs it deleted or repacked."""

    bytes_reclaimed: int | None = None
    packs_before: int | None = None
    packs_deleted: int | None = None
    packs_repacked: int | None = None
    packs_written: int | None = None
    locked: list[str] | None = None
    snapshots: int | None = None
    dry_run: bool | None = None


class OutboxDetails(Details):
    """The agent's case upkeep (`outbox`): new breaches and notifications delivered."""

    breaches: int | None = None
    delivered: int | None = None
    failed: int | None = None
    backlog: int | None = None


DETAILS_BY_KIND: dict[str, type[Details]] = {
    "disk": DiskDetails,
    "command": CommandDetails,
    "tcp": TcpDetails,
    "http": HttpDetails,
    "file_age": FileAgeDetails,
    "process": ProcessDetails,
    "postgres": QueryDetails,
    "mysql": QueryDetails,
    "job_freshness": FreshnessDetails,
    "backup_source": BackupSourceDetails,
    "backup": BackupDetails,
    "backup_repository": RepositoryHealthDetails,
    "restore_test": RestoreTestDetails,
    "forget": ForgetDetails,
    "prune": PruneDetails,
    "outbox": OutboxDetails,
}


def details_of(result: CheckResult) -> Details | dict[str, Any]:
    """The result's details as the record of its kind; a kind this version does not
    know keeps its plain dict."""
    model = DETAILS_BY_KIND.get(result.kind)
    return model.of(result) if model is not None else dict(result.details)


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


# the documents of docs/json.md, each with the command that prints it
DOCUMENTS: tuple[tuple[str, str, type[BaseModel]], ...] = (
    ("Status", "`opsagent status --json`, `/status` on the exporter", StatusDocument),
    ("SLA report", "`opsagent cases sla --json` (a list, one row per severity)", SlaRow),
)


def json_docs() -> str:
    """docs/json.md: every `--json` document and result details, field by field, from
    the models above."""
    lines = [
        "# JSON output",
        "",
        "Generated from the models in `agents/records.py` by `json_docs()`. Times are ISO",
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
