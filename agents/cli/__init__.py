"""The one `opsagent` command line: the root group, its shared options and helpers.

Each command group is its own module (`agents/cli/backup.py`, `cases.py`, ...) that parses,
calls the room doing the work and renders with `agents.cli.render`; they register here.
Exit codes: 0 ok, 1 a check or job failed, 2 usage or config error, 3 runtime error.
Every listing takes `--json`. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from agents import __version__
from agents.cli.common import EXIT_RUNTIME, EXIT_USAGE
from agents.errors import OpsagentError


def _is_config_error(exc: BaseException) -> bool:
    """Whether `exc` is the config's `ConfigError`, without importing the config models:
    one can only have been raised once `agents.config.errors` is loaded, so `--help`
    stays free of pydantic."""
    errors = sys.modules.get("agents.config.errors")
    return errors is not None and isinstance(exc, errors.ConfigError)


class OpsGroup(click.Group):
    """Turns the rooms' errors into one line and the documented exit code, and loads a
    command's module when the command is asked for (`_COMMANDS`)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*_COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in _COMMANDS:
            import importlib

            module, attribute = _COMMANDS[cmd_name]
            command = getattr(importlib.import_module(f"agents.cli.{module}"), attribute)
            self.add_command(command, cmd_name)
        return self.commands.get(cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("opsagent: interrupted", err=True)
            ctx.exit(130)
        except Exception as exc:
            if _is_config_error(exc):
                for line in exc.lines:  # type: ignore[attr-defined]
                    click.echo(line, err=True)
                ctx.exit(EXIT_USAGE)
            if isinstance(exc, OpsagentError):
                click.echo(f"opsagent: {exc}", err=True)
                ctx.exit(exc.exit_code)
            if isinstance(exc, OSError):  # the machine said no (a name too long, a full disk)
                where = f": {exc.filename}" if exc.filename else ""
                click.echo(f"opsagent: {exc.strerror or exc}{where}", err=True)
                ctx.exit(EXIT_RUNTIME)
            raise


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
    """Console-script entry point: runs one command, then the process ends."""
    _tune_malloc()
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="opsagent")
    finally:
        _no_collection_at_exit()
    raise SystemExit(0)


def _no_collection_at_exit() -> None:
    """Leave what is still alive to reference counting at exit. The interpreter's
    shutdown runs the cyclic garbage collector over every object left (botocore's
    service models, pydantic's validators, a repository's index): 0.15-0.3 s after a
    backup has finished, more than a third of an unchanged one. Frozen objects are
    still freed, their files closed, by reference counting and the exit handlers (log
    flushing among them); only cycles among them are not collected, which exit does
    not promise to finalize anyway."""
    import gc

    gc.freeze()


def _tune_malloc() -> None:
    """Give big buffers back to the system when they are freed (glibc only).

    glibc raises its mmap threshold each time a large block is freed, so after the
    first 16 MiB pack every chunk and pack buffer comes from per-thread heap arenas
    that keep their memory: a first backup held 180-200 MiB instead of 145. A fixed
    threshold and two arenas keep the peak at what is in use. The commands (and the
    agent's jobs) that move a repository's data set their own, for the time they run
    (`agents.backup.heap`): every buffer past this threshold is mapped and faulted in
    anew, three times the time a restore test takes."""
    if sys.platform != "linux":
        return
    from agents.backup.heap import fix_mapping_threshold, limit_arenas

    fix_mapping_threshold()  # each does nothing under another C library (musl)
    limit_arenas(2)


# --- the command groups: each module declares its commands, named here and imported
# only when that command runs (or help lists them): `opsagent status` loads no fleet code

_COMMANDS: dict[str, tuple[str, str]] = {  # name -> (module in agents.cli, attribute)
    "run": ("run", "run"),
    "config": ("configcmd", "config_group"),
    "monitor": ("monitor", "monitor"),
    "status": ("status", "status_command"),
    "audit": ("audit", "audit_command"),
    "demo": ("demo", "demo_command"),
    "backup": ("backup", "backup"),
    "restore": ("restore", "restore_cmd"),
    "restore-test": ("restore_test", "restore_test"),
    "cases": ("cases", "cases"),
    "fleet": ("fleet", "fleet"),
    "report": ("report", "report"),
}
