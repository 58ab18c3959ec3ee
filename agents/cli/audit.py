"""`opsagent audit`: who changed what, when, with which outcome."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from agents.cli.common import config_option, json_option, load, parse_time
from agents.cli.render import print_json
from agents.units import printable


@click.command("audit")
@config_option
@click.option("--since", default=None, help="Only records newer than this (7d, or an ISO time).")
@click.option("--action", "prefix", default="", help="Only actions starting with this.")
@click.option("--limit", default=100, show_default=True, help="How many records to show.")
@json_option
@click.pass_context
def audit_command(
    ctx: click.Context,
    config_file: Path | None,
    since: str | None,
    prefix: str,
    limit: int,
    as_json: bool,
) -> None:
    """Who changed what, when, with which outcome (backups, restores, cases, keys...)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from agents.audit import entry
    from agents.state import StateDB
    from agents.units import parse_duration

    config = load(ctx, config_file)
    start = None
    if since:
        try:
            start = datetime.now(UTC) - parse_duration(since)
        except ValueError:
            start = parse_time(since)
    records = StateDB(config.state_db).audit_records(start, prefix, limit)
    if as_json:
        print_json([entry(r).to_dict() for r in records])
        return
    table = Table(title=f"audit on {config.host}, newest first")
    for column in ("when", "who", "action", "target", "outcome"):
        table.add_column(column)
    for r in records:
        table.add_row(
            r.at.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
            *(escape(printable(v)) for v in (r.actor, r.action, r.target, r.outcome)),
        )
    Console().print(table)
