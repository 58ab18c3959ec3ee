"""`opsagent demo`: the whole loop in a temporary directory, in under a minute."""

from __future__ import annotations

import sys

import click

from agents.logs import setup_logging


@click.command("demo")
@click.option("--keep", is_flag=True, help="Keep the demo directory at the end.")
def demo_command(keep: bool) -> None:
    """The whole loop in a temporary directory, in under a minute: back up, prove the
    restore, corrupt a pack, watch the restore test fail and open a critical case."""
    from agents.demo import run_demo

    setup_logging("text", "warning")
    sys.exit(run_demo(keep, click.echo))
