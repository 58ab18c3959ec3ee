"""`opsagent monitor ...`: run the health checks once, print results or the exposition."""

from __future__ import annotations

from pathlib import Path

import click

from agents import __version__
from agents.cli.common import config_option, exit_for, json_option, load
from agents.cli.render import print_json, results_table


@click.group()
def monitor() -> None:
    """Host metrics and health checks."""


@monitor.command("checks")
@config_option
@json_option
@click.pass_context
def monitor_checks(ctx: click.Context, config_file: Path | None, as_json: bool) -> None:
    """Run every configured check once; exit 1 if any failed."""
    from rich.console import Console

    from agents.monitor.checks import run_all

    config = load(ctx, config_file)
    results = run_all(config.monitor.checks, config.host, config.monitor.max_parallel)
    if as_json:
        print_json([r.to_dict() for r in results])
    else:
        Console().print(results_table(results, f"checks on {config.host}"))
    ctx.exit(exit_for(results))


@monitor.command("metrics")
@config_option
@click.pass_context
def monitor_metrics(ctx: click.Context, config_file: Path | None) -> None:
    """Run every check once and print the exposition the exporter would serve."""
    from prometheus_client import generate_latest

    from agents.monitor.checks import run_all
    from agents.pipeline import agent_registry
    from exporters.metrics import ResultMetrics

    config = load(ctx, config_file)
    registry = agent_registry(config, __version__)
    metrics = ResultMetrics(registry, __version__)
    for result in run_all(config.monitor.checks, config.host, config.monitor.max_parallel):
        metrics.observe(result)
    click.echo(generate_latest(registry).decode(), nl=False)
