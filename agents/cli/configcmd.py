"""`opsagent config ...`: validate the configuration and show it, secrets redacted."""

from __future__ import annotations

from pathlib import Path

import click

from agents.cli.common import config_option, json_option
from agents.cli.render import print_json


@click.group("config")
def config_group() -> None:
    """Validate and show the configuration."""


@config_group.command("check")
@config_option
@click.argument(
    "file", required=False, type=click.Path(dir_okay=False, path_type=Path), default=None
)
@json_option
@click.option("--quiet", "-q", is_flag=True, help="Print nothing when the config is valid.")
@click.option(
    "--skip-secret-files",
    is_flag=True,
    help="Leave out the secret files (exist, readable here, mode 0600): for a config"
    " checked on another machine than the one that runs it.",
)
def config_check(
    config_file: Path | None,
    file: Path | None,
    as_json: bool,
    quiet: bool,
    skip_secret_files: bool,
) -> None:
    """Validate the config and its secret files; print the effective config, secrets redacted."""
    import yaml

    from agents.config import ConfigError, config_path, load_config, secret_file_problems

    path = config_path(file or config_file)
    config = load_config(path)
    problems = [] if skip_secret_files else secret_file_problems(config)
    if problems:
        raise ConfigError([f"{path}: {problem}" for problem in problems])
    if quiet:
        return
    data = config.redacted()
    if as_json:
        print_json(data)
    else:
        click.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), nl=False)
