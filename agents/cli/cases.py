"""`opsagent cases ...`: list, show, open and change cases; their notifications and SLA figures."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from agents.cli.common import case_store, config_option, json_option, load, parse_time
from agents.cli.render import print_json
from agents.results import Severity
from agents.units import printable

if TYPE_CHECKING:
    from agents.config import Config


def _whoami() -> str:
    """The person at the keyboard (`agents.audit.whoami`), imported when asked: the audit
    module brings pydantic's records, which `--help` never needs."""
    from agents.audit import whoami

    return whoami()


@click.group()
def cases() -> None:
    """Cases with severities and SLA clocks."""


def _zone(config: Config) -> Any:
    """The business calendar's zone: case times print in it."""
    from zoneinfo import ZoneInfo

    return ZoneInfo(config.cases.calendar.timezone)


def _actor(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """`--by`: somebody, not nobody."""
    if not value or not value.strip():
        raise click.BadParameter("must name who acts", param=param)
    return value.strip()


def _local(when: datetime | None, zone: Any) -> str:
    return "-" if when is None else when.astimezone(zone).isoformat(timespec="seconds")


def _changed(config: Config, store: Any, case: Any, what: str) -> None:
    """Say what changed, deliver its notifications now where this host can, and say
    how many went out or wait for an agent that has the notifier."""
    from agents.cases.service import deliver_now

    delivered, _ = deliver_now(config, store, case.id)
    waiting = [n for n in store.notifications(case_id=case.id, state="waiting")]
    told = f"{delivered} notification(s) sent" if delivered else "no notification sent"
    if waiting:
        names = ", ".join(sorted({n.notifier for n in waiting}))
        told += f", {len(waiting)} queued for {names}"
    click.echo(f"#{case.id} {what} ({told})")


@cases.command("list")
@config_option
@click.option(
    "--status",
    type=click.Choice(["open", "acknowledged", "reopened", "resolved", "closed"]),
    default=None,
    help="Only this status (`open` includes acknowledged and reopened).",
)
@click.option(
    "--severity",
    type=click.Choice([s.value for s in Severity]),
    default=None,
    help="Only this severity.",
)
@click.option("--search", default=None, help="Text in the title, host, source or timeline.")
@click.option("--host", default=None, help="Only cases of this host.")
@click.option("--since", default=None, help="Only cases seen in this window (e.g. 7d, 12h).")
@json_option
@click.pass_context
def cases_list(
    ctx: click.Context,
    config_file: Path | None,
    status: str | None,
    severity: str | None,
    search: str | None,
    host: str | None,
    since: str | None,
    as_json: bool,
) -> None:
    """Cases, newest first, with the time left on their SLA clocks."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from agents.units import format_duration, parse_duration

    config = load(ctx, config_file)
    now = datetime.now(UTC)
    window = None
    if since is not None:
        try:
            window = now - parse_duration(since)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--since") from None
    found = case_store(config).cases(status, severity, search=search, host=host, since=window)
    if as_json:
        print_json([c.list_item(now).to_dict() for c in found])
        return
    table = Table(title="cases")
    for column in ("id", "severity", "status", "host", "title", "seen", "respond in", "resolve in"):
        table.add_column(column)

    def left(due: datetime, done: bool) -> str:
        if done:
            return "-"
        seconds = (due - now).total_seconds()
        text = format_duration(abs(seconds))
        return f"[red]breached {text} ago[/]" if seconds < 0 else text

    for c in found:
        table.add_row(
            f"#{c.id}",
            c.severity.value,
            c.status,
            escape(printable(c.host)),
            escape(printable(c.title[:60])),
            str(c.occurrences),
            left(c.response_due, c.acknowledged_at is not None or not c.is_open),
            left(c.resolution_due, not c.is_open),
        )
    Console().print(table)


@cases.command("show")
@config_option
@click.argument("case_id", type=int)
@json_option
@click.pass_context
def cases_show(ctx: click.Context, config_file: Path | None, case_id: int, as_json: bool) -> None:
    """One case, its timeline and its notifications (times in the calendar's zone)."""
    config = load(ctx, config_file)
    store = case_store(config)
    if as_json:
        print_json(store.detail(case_id).to_dict())
        return
    case = store.get(case_id)
    events = store.events(case_id)
    notifications = store.notifications(case_id=case_id)
    zone = _zone(config)
    click.echo(f"#{case.id} [{case.severity.value}] {case.status}: {printable(case.title)}")
    click.echo(
        f"host {printable(case.host)}, source {printable(case.source)},"
        f" {case.occurrences} occurrence(s)"
    )
    click.echo(
        f"response due {_local(case.response_due, zone)}, resolution due"
        f" {_local(case.resolution_due, zone)} ({zone.key})"
    )
    for e in events:
        who = f" by {printable(e.actor)}" if e.actor else ""
        text = f": {printable(e.text)}" if e.text else ""
        click.echo(f"  {_local(e.at, zone)} {e.kind}{who}{text}")
    for n in reversed(notifications):
        error = f" ({printable(n.last_error)})" if n.last_error and n.state != "delivered" else ""
        click.echo(f"  notification {n.id}: {n.event} to {n.notifier}: {n.state}{error}")


@cases.command("open")
@config_option
@click.option(
    "--severity",
    type=click.Choice([s.value for s in Severity]),
    required=True,
    help="The case's severity (sets its SLA clocks).",
)
@click.option("--title", required=True, help="What is wrong, in one line.")
@click.option("--host", default=None, help="The host it concerns (default: this agent's).")
@click.option("--body", default=None, help="Details for the timeline; `-` reads standard input.")
@click.option(
    "--by", "actor", default=_whoami, callback=_actor, help="Who opens it (default: you)."
)
@click.pass_context
def cases_open(
    ctx: click.Context,
    config_file: Path | None,
    severity: str,
    title: str,
    host: str | None,
    body: str | None,
    actor: str,
) -> None:
    """Open a case by hand (a call or an e-mail), with its SLA clocks and notifications."""
    from agents.cases import manual

    config = load(ctx, config_file)
    if not title.strip():
        raise click.BadParameter("must not be empty", param_hint="--title")
    if host is not None and not host.strip():
        raise click.BadParameter(
            "must not be empty (leave it out for this host)", param_hint="--host"
        )
    # bytes that are not UTF-8 become U+FFFD: the case is opened, never a traceback
    text = sys.stdin.buffer.read().decode("utf-8", "replace") if body == "-" else body
    store = case_store(config)
    case = manual.open_case(config, store, title, Severity(severity), host, text, actor)
    zone = _zone(config)
    _changed(config, store, case, f"opened [{case.severity.value}]")
    click.echo(
        f"respond by {_local(case.response_due, zone)}, resolve by"
        f" {_local(case.resolution_due, zone)}"
    )


@cases.command("severity")
@config_option
@click.argument("case_id", type=int)
@click.argument("severity", type=click.Choice([s.value for s in Severity]))
@click.option("--why", required=True, help="Why the severity changes (on the timeline).")
@click.option(
    "--by", "actor", default=_whoami, callback=_actor, help="Who changes it (default: you)."
)
@click.pass_context
def cases_severity(
    ctx: click.Context,
    config_file: Path | None,
    case_id: int,
    severity: str,
    why: str,
    actor: str,
) -> None:
    """Change an open case's severity; its clocks are recomputed from when they started."""
    from agents.cases import manual

    config = load(ctx, config_file)
    store = case_store(config)
    case = manual.set_severity(config, store, case_id, Severity(severity), actor, why)
    zone = _zone(config)
    _changed(config, store, case, f"is {case.severity.value}")
    click.echo(
        f"respond by {_local(case.response_due, zone)}, resolve by"
        f" {_local(case.resolution_due, zone)}"
    )


@cases.command("ack")
@config_option
@click.argument("case_id", type=int)
@click.option(
    "--by", "actor", default=_whoami, callback=_actor, help="Who takes the case (default: you)."
)
@click.pass_context
def cases_ack(ctx: click.Context, config_file: Path | None, case_id: int, actor: str) -> None:
    """Acknowledge a case: stops its response clock, and the pager's escalation."""
    from agents.cases import manual

    config = load(ctx, config_file)
    store = case_store(config)
    case = manual.acknowledge(config, store, case_id, actor)
    _changed(config, store, case, f"acknowledged by {actor}")


@cases.command("comment")
@config_option
@click.argument("case_id", type=int)
@click.argument("text")
@click.option(
    "--by", "actor", default=_whoami, callback=_actor, help="Who writes the comment (default: you)."
)
@click.pass_context
def cases_comment(
    ctx: click.Context, config_file: Path | None, case_id: int, text: str, actor: str | None
) -> None:
    """Add a comment to a case's timeline."""
    from agents.cases import manual

    if not text.strip():
        raise click.BadParameter("must not be empty", param_hint="TEXT")
    config = load(ctx, config_file)
    manual.comment(config, case_store(config), case_id, actor, text)
    click.echo(f"#{case_id}: comment added")


@cases.command("resolve")
@config_option
@click.argument("case_id", type=int)
@click.option("--note", default=None, help="What was done (on the timeline).")
@click.option(
    "--by", "actor", default=_whoami, callback=_actor, help="Who resolves it (default: you)."
)
@click.pass_context
def cases_resolve(
    ctx: click.Context,
    config_file: Path | None,
    case_id: int,
    note: str | None,
    actor: str | None,
) -> None:
    """Resolve a case: stops its resolution clock."""
    from agents.cases import manual

    config = load(ctx, config_file)
    store = case_store(config)
    case = manual.resolve(config, store, case_id, actor, note)
    _changed(config, store, case, "resolved")


@cases.command("reopen")
@config_option
@click.argument("case_id", type=int)
@click.option("--note", default=None, help="Why (on the timeline).")
@click.option(
    "--by", "actor", default=_whoami, callback=_actor, help="Who reopens it (default: you)."
)
@click.pass_context
def cases_reopen(
    ctx: click.Context, config_file: Path | None, case_id: int, note: str | None, actor: str | None
) -> None:
    """Reopen a resolved or closed case: it is unacknowledged and its clocks start over."""
    from agents.cases import manual

    config = load(ctx, config_file)
    store = case_store(config)
    case = manual.reopen(config, store, case_id, actor, note)
    _changed(config, store, case, "reopened")


@cases.command("close")
@config_option
@click.argument("case_id", type=int)
@click.option(
    "--by", "actor", default=_whoami, callback=_actor, help="Who closes it (default: you)."
)
@click.pass_context
def cases_close(
    ctx: click.Context, config_file: Path | None, case_id: int, actor: str | None
) -> None:
    """Close a resolved case (nothing more to do on it)."""
    from agents.cases import manual

    config = load(ctx, config_file)
    manual.close(config, case_store(config), case_id, actor)
    click.echo(f"#{case_id} closed")


@cases.command("notifications")
@config_option
@click.option("--case", "case_id", type=int, default=None, help="Only this case's.")
@click.option(
    "--state",
    type=click.Choice(["waiting", "delivered", "failed"]),
    default=None,
    help="Only notifications in this state.",
)
@click.option(
    "--limit",
    type=click.IntRange(1, 10000),
    default=50,
    show_default=True,
    help="At most this many rows.",
)
@json_option
@click.pass_context
def cases_notifications(
    ctx: click.Context,
    config_file: Path | None,
    case_id: int | None,
    state: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """The outbox, newest first: what was sent to whom, what waits and what failed."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    config = load(ctx, config_file)
    store = case_store(config)
    if as_json:
        document = store.notifications_document(datetime.now(UTC), case_id, state, limit)
        print_json(document.to_dict())
        return
    rows = store.notifications(case_id=case_id, state=state, limit=limit)
    problems = store.notification_problems(datetime.now(UTC))
    table = Table(title="notifications")
    for column in ("id", "case", "event", "notifier", "state", "attempts", "by", "last error"):
        table.add_column(column)
    for n in rows:
        table.add_row(
            str(n.id),
            f"#{n.case_id}",
            n.event,
            escape(n.notifier),
            n.state,
            str(n.attempts),
            escape(printable(n.handled_by) or "-"),
            escape(printable((n.last_error or "")[:60])),
        )
    Console().print(table)
    for problem in problems:
        click.echo(f"problem: {printable(problem)}")


@cases.command("retry")
@config_option
@click.option("--failed", "failed", is_flag=True, required=True, help="Requeue failed ones.")
@click.option("--notifier", default=None, help="Only this notifier's.")
@click.option("--case", "case_id", type=int, default=None, help="Only this case's.")
@click.pass_context
def cases_retry(
    ctx: click.Context,
    config_file: Path | None,
    failed: bool,
    notifier: str | None,
    case_id: int | None,
) -> None:
    """Send notifications that failed for good again, once the notifier is fixed: the
    agents that have the notifier send them, in order, within seconds (as the service
    user, so a fix that only root can see does not pass for one)."""
    from agents.cases import manual

    config = load(ctx, config_file)
    count = manual.retry_failed(config, case_store(config), notifier, case_id)
    click.echo(f"{count} notification(s) requeued; the agents send them within seconds")


@cases.command("retire-notifier")
@config_option
@click.argument("name")
@click.pass_context
def cases_retire_notifier(ctx: click.Context, config_file: Path | None, name: str) -> None:
    """Forget a notifier name that was renamed or removed everywhere: its waiting
    notifications are dropped (kept as retired) and it is no longer undeliverable."""
    from agents.cases import manual

    config = load(ctx, config_file)
    count = manual.retire_notifier(config, case_store(config), name)
    click.echo(f"notifier {name} retired; {count} waiting notification(s) dropped")


@cases.command("sla")
@config_option
@click.option("--since", default="30d", show_default=True, help="Cases opened in this window.")
@json_option
@click.pass_context
def cases_sla(ctx: click.Context, config_file: Path | None, since: str, as_json: bool) -> None:
    """Per severity: cases, time to respond and resolve (median, p90), breaches, compliance."""
    from rich.console import Console
    from rich.table import Table

    from agents.cases.sla import sla_rows
    from agents.units import format_duration, parse_duration

    config = load(ctx, config_file)
    try:
        window = parse_duration(since)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    store = case_store(config)
    rows = sla_rows(store.cases(), store.breached_cases(), datetime.now(UTC) - window)
    if as_json:
        print_json([row.to_dict() for row in rows])
        return
    table = Table(title=f"SLA, cases opened in the last {format_duration(window)}")
    for column in (
        "severity",
        "cases",
        "respond p50",
        "respond p90",
        "resolve p50",
        "resolve p90",
        "breached",
        "compliance",
    ):
        table.add_column(column)

    def dur(value: float | None) -> str:
        return "-" if value is None else format_duration(value)

    for row in rows:
        compliance = row.compliance_percent
        table.add_row(
            row.severity,
            str(row.cases),
            dur(row.respond_median_seconds),
            dur(row.respond_p90_seconds),
            dur(row.resolve_median_seconds),
            dur(row.resolve_p90_seconds),
            str(row.breached),
            "-" if compliance is None else f"{compliance}%",
        )
    Console().print(table)


@cases.command("due")
@config_option
@click.option(
    "--severity",
    type=click.Choice([s.value for s in Severity]),
    required=True,
    help="The case's severity.",
)
@click.option("--opened", required=True, help="When the case opened (ISO 8601; local if no zone).")
@json_option
@click.pass_context
def cases_due(
    ctx: click.Context, config_file: Path | None, severity: str, opened: str, as_json: bool
) -> None:
    """Response and resolution due times of a case opened at a given time."""
    from agents.cases import manual
    from agents.cases.sla import BusinessCalendar
    from agents.config import Config, config_path, load_config

    config = load_config(config_path(config_file)) if _config_exists(config_file) else Config()
    calendar = BusinessCalendar.from_config(config.cases.calendar)
    when = parse_time(opened, default_zone=calendar.zone)
    try:
        document = manual.due(config, Severity(severity), when)
    except (OverflowError, ValueError):
        raise click.BadParameter(
            "too far in the future to compute", param_hint="--opened"
        ) from None
    if as_json:
        print_json(document.to_dict())
    else:
        click.echo(f"opened:         {document.opened}")
        click.echo(f"response due:   {document.response_due}")
        click.echo(f"resolution due: {document.resolution_due}")
        click.echo(f"calendar:       {calendar.describe()}")


def _config_exists(config_file: Path | None) -> bool:
    from agents.config import config_path

    return config_file is not None or config_path(None).exists()
