"""`opsagent restore`: files into a directory (never outside it), or a database dump into
a target database, from a snapshot."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from agents.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    backup_config,
    config_option,
    json_option,
    load_unlocking,
)
from agents.cli.render import print_json, progress_bar

if TYPE_CHECKING:
    from agents.backup.restore import FilesPlan, FilesRestored
    from agents.config import Config


@click.command("restore")
@config_option
@click.argument("snapshot")
@click.option("--to", "target", required=True, help="Directory (files), DSN or path (database).")
@click.option("--source", default=None, help="With `latest`: the latest of this source.")
@click.option("--include", multiple=True, help="Only this path (repeatable; files).")
@click.option("--database", default=None, help="Restore this database's dump into --to.")
@click.option("--create", is_flag=True, help="Create the target database if missing.")
@click.option("--force", is_flag=True, help="Replace a non-empty target database.")
@click.option("--jobs", default=2, show_default=True, help="pg_restore parallel jobs.")
@click.option("--overwrite", is_flag=True, help="Replace existing files in the target.")
@click.option("--dry-run", is_flag=True, help="List what would be restored.")
@json_option
@click.pass_context
def restore_cmd(
    ctx: click.Context,
    config_file: Path | None,
    snapshot: str,
    target: str,
    source: str | None,
    include: tuple[str, ...],
    database: str | None,
    create: bool,
    force: bool,
    jobs: int,
    overwrite: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Restore files into a directory (never outside it), or a database into a target.

    Files: missing parents of --to are created; --to that is a file or cannot be
    written, and an --include that matches nothing, are refused before anything is
    written (exit 1). An existing file, or a symbolic link, where a file goes is kept
    (listed as "kept existing", exit 0) unless --overwrite, which replaces it (a link
    is replaced, never written through). A path that would leave the target (`..`,
    absolute) is refused, and so is a symbolic link in the target where the snapshot
    has a directory, with all under it (listed once): writes go through directory
    handles, never through a link.

    Damaged data (a blob that fails authentication or is missing from the index, a
    missing pack) never stops a restore: every other file comes back whole, and each
    file that needs it is written as NAME.damaged (NAME.damaged.N if that exists;
    never over an existing file), mode 0600, readable parts in place and unreadable
    ranges zero-filled, and listed as "damaged" with the reason (`damaged` in --json:
    path, reason, written_as); exit 1. A damaged part of the file list (tree) is
    listed as damaged too, and every entry in the readable parts is restored.
    """
    config = load_unlocking(ctx, config_file)
    from agents.backup.heap import keep_freed_memory
    from agents.backup.restore import FilesPlan, FilesRestored, RestoreRequest, run_restore

    keep_freed_memory()  # every blob is read into fresh buffers

    backup_config(config)
    request = RestoreRequest(
        snapshot, target, source, include, database, create, force, jobs, overwrite, dry_run
    )
    outcome = run_restore(
        config,
        request,
        warn=lambda line: click.echo(line, err=True),
        progress=lambda total: progress_bar("restore", total=total, enabled=not as_json),
    )
    if not isinstance(outcome, FilesPlan | FilesRestored):
        _restore_database(ctx, config, outcome, as_json)
        return
    if isinstance(outcome, FilesPlan):
        _show_files_plan(outcome, as_json)
        return
    _show_files_restored(outcome, as_json)
    ctx.exit(EXIT_FAILED if outcome.failed else EXIT_OK)


def _show_files_plan(outcome: FilesPlan, as_json: bool) -> None:
    """Print what a files restore would write (`--dry-run`)."""
    from agents.backup.snapshot import shown

    if as_json:
        print_json(outcome.record().to_dict())
        return
    for e in outcome.entries:
        click.echo(f"{e.type:8} {e.size:>12} {shown(e.path)}")
    click.echo(
        f"{len(outcome.entries)} entries, {outcome.bytes} bytes"
        f" from snapshot {outcome.snapshot.short_id}"
    )


def _show_files_restored(outcome: FilesRestored, as_json: bool) -> None:
    """Print a files restore's result: the counts, then each refused, kept, failed,
    warned about or damaged path on stderr."""
    from agents.backup.snapshot import shown

    if as_json:
        print_json(outcome.record().to_dict())
        return
    directory, result = outcome.directory, outcome.result
    click.echo(
        f"restored {result.files} files, {result.dirs} dirs, {result.symlinks} links,"
        f" {result.specials} FIFOs/devices, {result.bytes} bytes"
        f" from snapshot {outcome.snapshot.short_id} into {directory}"
    )
    for path in result.refused:
        click.echo(f"refused (would leave the target, or a link): {shown(path)}", err=True)
    for path in result.skipped_existing:
        click.echo(f"kept existing (use --overwrite): {shown(path)}", err=True)
    for line in result.errors:
        click.echo(f"error: {shown(line)}", err=True)
    for line in result.warnings:
        click.echo(f"warning: {shown(line)}", err=True)
    for damaged in result.damaged:
        where = shown(damaged.written_as) if damaged.written_as else "not written"
        click.echo(f"damaged ({where}): {shown(damaged.path)}: {damaged.reason}", err=True)


def _restore_database(ctx: click.Context, config: Config, outcome: Any, as_json: bool) -> None:
    """Print a database restore's plan or result; exit 1 when the facts differ."""
    from rich.console import Console
    from rich.table import Table

    from agents.backup.restore import DatabasePlan, last_restore_seconds

    snap, database, target = outcome.snapshot, outcome.database, outcome.target
    if isinstance(outcome, DatabasePlan):
        last = last_restore_seconds(config)
        if as_json:
            print_json(outcome.record(last).to_dict())
        else:
            when = (
                f"about {last:.0f}s (last restore test)"
                if last
                else "unknown (no restore test yet)"
            )
            click.echo(
                f"would restore {database} ({outcome.bytes} bytes) from snapshot"
                f" {snap.short_id} into {target}; expected time: {when}"
            )
        return
    recovery = outcome.recovery
    if as_json:
        print_json(outcome.record().to_dict())
    else:
        table = Table(title=f"{database} restored into {target} in {recovery.seconds:.1f}s")
        for column in ("table", "rows at backup", "rows restored", ""):
            table.add_column(column)
        for row in outcome.tables:
            same = row.expected == row.restored
            table.add_row(
                row.table,
                str(row.expected),
                str(row.restored),
                "[green]ok[/]" if same else "[red]differs[/]",
            )
        Console().print(table)
        click.echo(f"schema fingerprint: {'matches' if outcome.schema_matches else 'DIFFERS'}")
        for problem in recovery.problems:
            click.echo(f"problem: {problem}", err=True)
    ctx.exit(EXIT_OK if recovery.ok else EXIT_FAILED)
