"""The one `opsagent` command line: declares commands, calls into the rooms, prints.

Exit codes: 0 ok, 1 a check or job failed, 2 usage or config error, 3 runtime error.
Every listing takes `--json`. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import click
import yaml
from rich.console import Console
from rich.table import Table

from agents import __version__
from agents.config import Config, ConfigError, config_path, load_config
from agents.errors import OpsagentError
from agents.logs import setup_logging
from agents.results import CheckResult, Status

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_RUNTIME = 0, 1, 2, 3


class OpsGroup(click.Group):
    """Turns the rooms' errors into one line and the documented exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            for line in exc.lines:
                click.echo(line, err=True)
            ctx.exit(EXIT_USAGE)
        except OpsagentError as exc:
            click.echo(f"opsagent: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("opsagent: interrupted", err=True)
            ctx.exit(130)


config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Config file (default: $OPSAGENT_CONFIG, then /etc/opsagent/config.yml).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@click.group(cls=OpsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="opsagent")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default=None,
    help="Log lines as text (default) or JSON lines.",
)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default=None)
@click.pass_context
def cli(ctx: click.Context, log_format: str | None, log_level: str | None) -> None:
    """opsagent: monitor, back up off-site, prove restores, open cases."""
    ctx.ensure_object(dict)
    ctx.obj["log_format"] = log_format
    ctx.obj["log_level"] = log_level


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Console-script entry point."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="opsagent")
    raise SystemExit(0)


# --- shared helpers ---------------------------------------------------------------------


def load(ctx: click.Context, config_file: Path | None) -> Config:
    """Load the config and set up logging from it (CLI options win)."""
    config = load_config(config_path(config_file))
    fmt = ctx.obj.get("log_format") or config.log.format or "text"
    setup_logging(fmt, ctx.obj.get("log_level") or config.log.level)
    return config


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def results_table(results: list[CheckResult], title: str) -> Table:
    table = Table(title=title)
    for column in ("name", "kind", "status", "summary", "time"):
        table.add_column(column)
    colours = {Status.OK: "green", Status.FAILED: "red", Status.ERROR: "magenta"}
    for r in results:
        table.add_row(
            r.name,
            r.kind,
            f"[{colours[r.status]}]{r.status.value}[/]",
            r.summary,
            f"{r.duration_seconds:.2f}s",
        )
    return table


def exit_for(results: list[CheckResult]) -> int:
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


# --- run --------------------------------------------------------------------------------


@cli.command()
@config_option
@click.pass_context
def run(ctx: click.Context, config_file: Path | None) -> None:
    """Run the agent: scheduler, checks, jobs and the exporter, until SIGTERM."""
    from agents.daemon import start_agent

    config = load(ctx, config_file)
    ctx.exit(start_agent(config, __version__))


# --- config -----------------------------------------------------------------------------


@cli.group("config")
def config_group() -> None:
    """Validate and show the configuration."""


@config_group.command("check")
@config_option
@click.argument(
    "file", required=False, type=click.Path(dir_okay=False, path_type=Path), default=None
)
@json_option
@click.option("--quiet", "-q", is_flag=True, help="Print nothing when the config is valid.")
def config_check(config_file: Path | None, file: Path | None, as_json: bool, quiet: bool) -> None:
    """Validate the config and print the effective config with secrets redacted."""
    config = load_config(config_path(file or config_file))
    if quiet:
        return
    data = config.redacted()
    if as_json:
        print_json(data)
    else:
        click.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), nl=False)


# --- monitor ----------------------------------------------------------------------------


@cli.group()
def monitor() -> None:
    """Host metrics and health checks."""


@monitor.command("checks")
@config_option
@json_option
@click.pass_context
def monitor_checks(ctx: click.Context, config_file: Path | None, as_json: bool) -> None:
    """Run every configured check once; exit 1 if any failed."""
    from agents.monitor.checks import run_all

    config = load(ctx, config_file)
    results = run_all(config.monitor.checks, config.host, config.monitor.max_parallel)
    if as_json:
        print_json([r.to_dict() for r in results])
    else:
        Console().print(results_table(results, f"checks on {config.host}"))
    ctx.exit(exit_for(results))


# --- groups whose commands come with their rooms ----------------------------------------


@cli.group()
def backup() -> None:
    """Back up to the repository, list and check snapshots."""


@cli.group("restore-test")
def restore_test() -> None:
    """Scheduled restore tests in a sandbox."""


@cli.group()
def cases() -> None:
    """Cases with severities and SLA clocks."""


@cli.group()
def fleet() -> None:
    """Runbook commands on many hosts over SSH."""


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
