"""What every command module shares: exit codes, the common options and small helpers.

Kept apart from `agents/cli/__init__.py`, which registers the command modules, so that a
command module never imports the package that imports it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from agents.logs import setup_logging
from agents.results import CheckResult

if TYPE_CHECKING:  # the config models cost pydantic; `--help` never needs them
    from agents.config import BackupConfig, Config

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_RUNTIME = 0, 1, 2, 3


config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Config file (default: $OPSAGENT_CONFIG, then /etc/opsagent/config.yml).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def load(ctx: click.Context, config_file: Path | None) -> Config:
    """Load the config and set up logging from it (CLI options win)."""
    from agents.config import config_path, load_config

    config = load_config(config_path(config_file))
    fmt = ctx.obj.get("log_format") or config.log.format or "text"
    setup_logging(fmt, ctx.obj.get("log_level") or config.log.level)
    return config


def load_unlocking(ctx: click.Context, config_file: Path | None) -> Config:
    """Start unlocking the repository key on a thread (`backup.unlock`), from the config
    file as it is, then `load` it: the config's validation and the command's imports
    run while scrypt does. Call it before the command imports its room."""
    from agents.backup import unlock
    from agents.paths import config_path

    unlock.begin_early(config_path(config_file))
    config = load(ctx, config_file)
    unlock.begin(config.backup)
    return config


def backup_config(config: Config) -> BackupConfig:
    """The config's `backup` section; a usage error when there is none."""
    from agents.config import ConfigError, config_path

    if config.backup is None:
        raise ConfigError([f"{config_path(None)}: backup: required for this command"])
    return config.backup


def case_store(config: Config) -> Any:
    """The case store the config names (SQLite or PostgreSQL), connected at first use: a
    change made by hand meets an unreachable store inside its audit, so the refusal is
    recorded like any other."""
    from agents.cases.service import case_store as build

    return build(config, lazy=True)


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


def import_while_unlocking() -> None:
    """Import the results pipeline (metrics, cases, state: about 0.1 s of imports) now,
    while `load_unlocking`'s key derivation runs and this thread would only wait for
    it, not after the job, where `record_outcome` would import it on the command's
    critical path."""
    import agents.pipeline  # noqa: F401


def record_outcome(config: Config, results: list[CheckResult]) -> None:
    """Hand a command's job results to the results pipeline, as the daemon does its own."""
    from agents.pipeline import record_outcome as record

    record(config, results)
