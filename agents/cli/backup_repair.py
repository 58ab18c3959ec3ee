"""`opsagent backup repair ...`: rebuild the index, rewrite damaged packs, replace snapshots
that need lost data."""

from __future__ import annotations

from pathlib import Path

import click

from agents.cli.common import EXIT_FAILED, EXIT_OK, backup_config, config_option, json_option, load
from agents.cli.render import print_json, progress_bar


@click.group("repair")
def backup_repair() -> None:
    """Repair a damaged repository (see docs/repository-format.md and the runbooks)."""


@backup_repair.command("index")
@config_option
@click.option("--read-data", is_flag=True, help="Also read every blob and leave damaged ones out.")
@json_option
@click.pass_context
def backup_repair_index(
    ctx: click.Context, config_file: Path | None, read_data: bool, as_json: bool
) -> None:
    """Rebuild the index from the packs' own headers; damaged index files stop mattering."""
    from agents.backup.repair import run_repair_index
    from agents.backup.runner import open_repository

    config = load(ctx, config_file)
    repo = open_repository(backup_config(config))
    with progress_bar("repair", enabled=not as_json and read_data) as advance:
        report = run_repair_index(repo, config.state_db, read_data, advance)
    if as_json:
        print_json(report.record().to_dict())
    else:
        click.echo(
            f"index rebuilt: {report.packs} pack(s), {report.blobs} blob(s);"
            f" {report.index_files_replaced} old index file(s) replaced"
        )
        for pack_id, why in report.unreadable_packs.items():
            click.echo(f"warning: pack {pack_id[:12]}: {why}", err=True)
        if report.damaged_blobs:
            click.echo(
                f"warning: {report.damaged_blobs} damaged blob(s) left out of the index: run a"
                " backup (it stores them again if the source still has them), then"
                " `opsagent backup repair snapshots`",
                err=True,
            )


@backup_repair.command("packs")
@config_option
@click.argument("pack_ids", nargs=-1, required=True)
@json_option
@click.pass_context
def backup_repair_packs(
    ctx: click.Context, config_file: Path | None, pack_ids: tuple[str, ...], as_json: bool
) -> None:
    """Rewrite the named packs (as `backup check --read-data` names them): blobs that read
    correctly are kept in new packs, damaged ones leave the index; exit 1 when any was lost."""
    from agents.backup.repair import run_repair_packs
    from agents.backup.runner import open_repository

    config = load(ctx, config_file)
    cfg = backup_config(config)
    repo = open_repository(cfg)
    report = run_repair_packs(
        repo, config.state_db, list(pack_ids), cfg.compression_level, cfg.pack_size
    )
    if as_json:
        print_json(report.record().to_dict())
    else:
        click.echo(
            f"rewrote {len(report.packs)} pack(s): {report.salvaged_blobs} blob(s) kept,"
            f" {len(report.lost_blobs)} damaged blob(s) left out"
        )
        if report.lost_blobs:
            click.echo(
                "run a backup (it stores again what the sources still have), then"
                " `opsagent backup repair snapshots`",
                err=True,
            )
    ctx.exit(EXIT_FAILED if report.lost_blobs else EXIT_OK)


@backup_repair.command("snapshots")
@config_option
@click.option("--dry-run", is_flag=True, help="Say what would be rewritten.")
@json_option
@click.pass_context
def backup_repair_snapshots(
    ctx: click.Context, config_file: Path | None, dry_run: bool, as_json: bool
) -> None:
    """Replace snapshots that need lost data by copies without the lost files (named in
    the new snapshot's warnings); exit 1 when anything was lost."""
    from agents.backup.repair import run_repair_snapshots
    from agents.backup.runner import open_repository
    from agents.units import few

    config = load(ctx, config_file)
    cfg = backup_config(config)
    repo = open_repository(cfg)
    report = run_repair_snapshots(
        repo, config.state_db, dry_run, cfg.compression_level, cfg.pack_size
    )
    if as_json:
        print_json(report.record().to_dict())
    else:
        verb = "would rewrite" if dry_run else "rewrote"
        for r in report.repaired:
            into = f" as {r.replacement[:8]}" if r.replacement else ""
            click.echo(f"{verb} {r.snapshot[:8]}{into}: {len(r.lost)} lost: {few(r.lost)}")
        for snapshot_id in report.damaged_objects:
            click.echo(
                f"snapshot {snapshot_id[:8]} itself is damaged and cannot be repaired:"
                f" remove it with `opsagent backup forget {snapshot_id[:8]}`",
                err=True,
            )
        if not report.repaired and not report.damaged_objects:
            click.echo("every snapshot's data is in the index: nothing to repair")
    ctx.exit(EXIT_FAILED if report.repaired or report.damaged_objects else EXIT_OK)
