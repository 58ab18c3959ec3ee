"""`opsagent status`: this host on one screen, the most important problem first."""

from __future__ import annotations

from pathlib import Path

import click

from agents.cli.common import EXIT_FAILED, EXIT_OK, config_option, json_option, load
from agents.cli.render import print_json


@click.command("status")
@config_option
@json_option
@click.pass_context
def status_command(ctx: click.Context, config_file: Path | None, as_json: bool) -> None:
    """This host on one screen, the most important problem first; exit 1 if any."""
    from rich.console import Console

    from agents.status import collect, render

    config = load(ctx, config_file)
    status = collect(config)
    if as_json:
        print_json(status.to_dict())
    else:
        console = Console(highlight=False)
        for line in render(status):
            console.print(line, soft_wrap=True)
    ctx.exit(EXIT_OK if status.ok else EXIT_FAILED)
