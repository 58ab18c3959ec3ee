"""The one `opsagent` command line: the root group, its shared options and helpers.

Each command group is its own module (`agents/cli/backup.py`, `cases.py`, ...) that parses,
calls the room doing the work and renders with `agents.cli.render`; they register here.
Exit codes: 0 ok, 1 a check or job failed, 2 usage or config error, 3 runtime error.
Every listing takes `--json`. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import click

from agents import __version__
from agents.audit import whoami
from agents.config import BackupConfig, Config, ConfigError, config_path, load_config
from agents.errors import OpsagentError
from agents.logs import setup_logging
from agents.results import CheckResult

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
        except OSError as exc:  # the machine said no (a name too long, a full disk): one line
            where = f": {exc.filename}" if exc.filename else ""
            click.echo(f"opsagent: {exc.strerror or exc}{where}", err=True)
            ctx.exit(EXIT_RUNTIME)


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
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default=None,
    help="Log level (default: the config's log.level, info).",
)
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


def backup_config(config: Config) -> BackupConfig:
    """The config's `backup` section; a usage error when there is none."""
    if config.backup is None:
        raise ConfigError([f"{config_path(None)}: backup: required for this command"])
    return config.backup


def case_store(config: Config) -> Any:
    """The case store the config names (SQLite or PostgreSQL)."""
    from agents.cases.service import case_store as build

    return build(config)


def parse_time(text: str, default_zone: Any = UTC) -> datetime:
    """An ISO 8601 time from an option; without a zone, in `default_zone`."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"expected ISO 8601, got {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=default_zone)


def exit_for(results: list[CheckResult]) -> int:
    """0 when every result is ok, else 1."""
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


def record_outcome(config: Config, results: list[CheckResult]) -> None:
    """Store a command's job results as the daemon would: in the state database (with the
    systemd timer that ran the command, if one did), in the cases (a failed backup run
    from a systemd timer opens its case too), and in the textfile for node_exporter when
    `exporter.textfile` is set."""
    from agents.audit import result_sink
    from agents.cases.service import deliver_now
    from agents.daemon import case_rules, write_textfile
    from agents.state import StateDB
    from agents.timers import timer_unit

    state = StateDB(config.state_db)
    timer = timer_unit()
    if timer is not None:  # how `opsagent status` knows the timers, not a daemon, run jobs
        state.record_timer_run(timer, datetime.now(UTC))
    audit = result_sink(config.state_db, whoami())
    for result in results:
        state.record_result(result)
        audit(result)
    try:  # the outcome stands even when the case store is down (one line, exit unchanged)
        store = case_store(config)
        rules = case_rules(config, store)
        for result in results:
            rules.observe(result)
        # a host run by timers has no daemon: this command delivers what it queued
        deliver_now(config, store)
    except OpsagentError as exc:
        logging.getLogger("opsagent").warning("cases not updated: %s", exc)
    if config.exporter.textfile is not None:
        write_textfile(config, state)


# --- the command groups: each module declares its commands, registered here -----------

from agents.cli import (  # noqa: E402  (the modules import the helpers above)
    audit,
    backup,
    cases,
    configcmd,
    demo,
    fleet,
    monitor,
    restore,
    restore_test,
    run,
    status,
)

for _command in (
    run.run,
    configcmd.config_group,
    monitor.monitor,
    status.status_command,
    audit.audit_command,
    demo.demo_command,
    backup.backup,
    restore.restore_cmd,
    restore_test.restore_test,
    cases.cases,
    fleet.fleet,
):
    cli.add_command(_command)
