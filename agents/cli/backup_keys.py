"""`opsagent backup key ...`: several passwords open one master key; add, remove, rotate,
escrow on paper and recover from it."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from agents.cli.common import backup_config, config_option, json_option, load
from agents.cli.render import print_json
from agents.errors import OpsagentError


@click.group("key")
def backup_key() -> None:
    """Repository keys: several passwords open one master key; rotate without re-encrypting."""


new_password_option = click.option(
    "--new-password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File holding the new password (else $OPSAGENT_NEW_PASSWORD, else a prompt).",
)


def _new_password(path: Path | None) -> str:
    """The new password: a file (mode-checked), the environment, or a hidden prompt."""
    import os

    from agents.config import resolve_secret

    if path is not None:
        return resolve_secret(file=path) or ""
    if os.environ.get("OPSAGENT_NEW_PASSWORD"):
        return os.environ["OPSAGENT_NEW_PASSWORD"]
    if not sys.stdin.isatty():
        raise OpsagentError("give the new password: --new-password-file or $OPSAGENT_NEW_PASSWORD")
    return str(click.prompt("New password", hide_input=True, confirmation_prompt=True))


@backup_key.command("list")
@config_option
@json_option
@click.pass_context
def backup_key_list(ctx: click.Context, config_file: Path | None, as_json: bool) -> None:
    """The repository's keys; the one this config's password opens is marked."""
    from rich.console import Console
    from rich.table import Table

    from agents.backup.keys import key_rows
    from agents.backup.runner import open_repository

    repo = open_repository(backup_config(load(ctx, config_file)))
    keys = key_rows(repo)
    if as_json:
        print_json([key.to_dict() for key in keys])
        return
    table = Table(title=f"keys of {repo.storage.url}")
    for column in ("", "id", "created", "user", "host", "label"):
        table.add_column(column)
    for key in keys:
        table.add_row(
            "*" if key.current else "",
            key.id[:8],
            str(key.created)[:19],
            str(key.user),
            str(key.host),
            str(key.label),
        )
    Console().print(table)


@backup_key.command("add")
@config_option
@new_password_option
@click.option("--label", default="", help="Whose key this is (shown by `key list`).")
@click.pass_context
def backup_key_add(
    ctx: click.Context, config_file: Path | None, new_password_file: Path | None, label: str
) -> None:
    """Add a key: the master key wrapped with another password (a second person's)."""
    from agents.backup.keys import add_key
    from agents.backup.runner import open_repository

    config = load(ctx, config_file)
    repo = open_repository(backup_config(config))
    password = _new_password(new_password_file)
    key_id = add_key(repo, config.state_db, password, config.host, label)
    click.echo(f"added key {key_id[:8]}")


@backup_key.command("remove")
@config_option
@click.argument("key_id")
@click.pass_context
def backup_key_remove(ctx: click.Context, config_file: Path | None, key_id: str) -> None:
    """Remove a key (a departed person's); never the last one, nor the one in use."""
    from agents.backup.keys import remove_key
    from agents.backup.runner import open_repository

    config = load(ctx, config_file)
    repo = open_repository(backup_config(config))
    removed = remove_key(repo, config.state_db, key_id)
    click.echo(f"removed key {removed[:8]}")


@backup_key.command("passwd")
@config_option
@new_password_option
@click.pass_context
def backup_key_passwd(
    ctx: click.Context, config_file: Path | None, new_password_file: Path | None
) -> None:
    """Change the password of the key in use: a new key first, then the old one removed.
    Update backup.password_file with the new password afterwards."""
    from agents.backup.errors import WrongKey
    from agents.backup.keys import replace_key
    from agents.backup.repository import Repository
    from agents.backup.runner import open_repository
    from agents.backup.storage import open_storage

    config = load(ctx, config_file)
    cfg = backup_config(config)
    password = _new_password(new_password_file)
    try:
        repo = open_repository(cfg)
    except WrongKey:
        # an earlier run that was killed after removing the old key finished the change
        Repository.open(open_storage(cfg.repository, cfg.s3), password)
        click.echo("the new password already opens the repository and the old one no longer")
        click.echo(f"does: put the new password in {cfg.password_file}")
        return
    old, new = replace_key(repo, config.state_db, password, config.host)
    click.echo(f"key {old[:8]} replaced by {new[:8]}; now put the new password in the file")
    click.echo(f"that backup.password_file names ({backup_config(config).password_file})")


@backup_key.command("export")
@config_option
@click.option("--paper", is_flag=True, required=True, help="Print for offline escrow.")
@click.pass_context
def backup_key_export(ctx: click.Context, config_file: Path | None, paper: bool) -> None:
    """Print the master key for offline escrow (a safe, not a computer), with a checksum;
    `backup key recover` turns it back into a key with a new password."""
    from agents.backup.crypto import key_fingerprint
    from agents.backup.keys import export_paper_key
    from agents.backup.runner import open_repository

    config = load(ctx, config_file)
    repo = open_repository(backup_config(config))
    text = export_paper_key(repo, config.state_db)
    click.echo(f"opsagent repository {repo.info['id']} at {repo.storage.url}")
    click.echo(f"master key (checksum {key_fingerprint(repo.crypto.master)}):")
    click.echo(text)
    click.echo("Anyone with this text can read every backup. Print it, store it in a safe,")
    click.echo("and do not keep it on this computer.")


@backup_key.command("recover")
@config_option
@click.option(
    "--paper-file",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The text `key export --paper` printed (typed back in).",
)
@new_password_option
@click.pass_context
def backup_key_recover(
    ctx: click.Context, config_file: Path | None, paper_file: Path, new_password_file: Path | None
) -> None:
    """Every password lost: make a new key from the escrowed master key."""
    from agents.backup.keys import recover_key
    from agents.backup.storage import open_storage

    config = load(ctx, config_file)
    cfg = backup_config(config)
    storage = open_storage(cfg.repository, cfg.s3)
    paper = paper_file.read_text(encoding="utf-8")
    key_id = recover_key(
        storage, config.state_db, paper, lambda: _new_password(new_password_file), config.host
    )
    click.echo(f"added key {key_id[:8]}: the repository opens with the new password")
