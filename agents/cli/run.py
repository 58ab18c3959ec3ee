"""`opsagent run`: the agent itself (scheduler, checks, jobs, exporter) until SIGTERM."""

from __future__ import annotations

from pathlib import Path

import click

from agents import __version__
from agents.cli.common import config_option, load


@click.command()
@config_option
@click.pass_context
def run(ctx: click.Context, config_file: Path | None) -> None:
    """Run the agent: scheduler, checks, jobs and the exporter, until SIGTERM."""
    from agents.daemon import start_agent

    config = load(ctx, config_file)
    ctx.exit(start_agent(config, __version__))
