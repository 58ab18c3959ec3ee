"""`opsagent backup ...`: back up now, list, show and check snapshots, apply retention, prune.

The key and repair subgroups have their own modules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import click

from agents.cli.backup_keys import backup_key
from agents.cli.backup_repair import backup_repair
from agents.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    backup_config,
    config_option,
    exit_for,
    import_while_unlocking,
    json_option,
    load,
    load_unlocking,
    parse_time,
    record_outcome,
)
from agents.cli.render import print_json, progress_bar, results_table
from agents.errors import OpsagentError
from agents.results import CheckResult, Severity, Status, run_guarded

if TYPE_CHECKING:
    from agents.config import BackupConfig, Config


@click.group()
def backup() -> None:
    """Back up to the repository, list and check snapshots."""


@backup.command("init")
@config_option
@click.pass_context
def backup_init(ctx: click.Context, config_file: Path | None) -> None:
    """Create the repository (refuses to overwrite an existing one)."""
    from agents.backup.crypto import key_fingerprint
    from agents.backup.runner import existing_repository, init_repository

    config = load(ctx, config_file)
    existing = existing_repository(backup_config(config))
    if existing is not None:
        click.echo(
            f"repository {existing.info.get('id')} at {existing.storage.url} exists and this"
            " password opens it: nothing to do"
        )
        return
    repo = init_repository(backup_config(config), config.host)
    click.echo(f"created repository {repo.info['id']} at {repo.storage.url}")
    click.echo(f"master key fingerprint: {key_fingerprint(repo.crypto.master)}")
    warning = lock_retention_warning(backup_config(config))
    if warning:
        click.echo(f"warning: {warning}", err=True)
    click.echo(
        "IMPORTANT: the data can only be read with the repository password. Losing it loses"
        " every backup. Escrow it now: keep a copy of the password file in a password"
        " manager or sealed envelope held apart from this host and from the bucket."
    )


def lock_retention_warning(cfg: BackupConfig) -> str | None:
    """Object Lock longer than the retention policy's reach: forget will meet locked snapshots."""
    lock, policy = cfg.s3.object_lock, cfg.retention
    if lock is None or policy is None or not cfg.repository.startswith("s3://"):
        return None
    reach = max(
        (policy.keep_daily or 0),
        (policy.keep_weekly or 0) * 7,
        (policy.keep_monthly or 0) * 30,
        (policy.keep_yearly or 0) * 365,
        policy.keep_within.days if policy.keep_within else 0,
    )
    if reach >= lock.days:
        return None
    return (
        f"Object Lock keeps every object {lock.days} days but the retention policy reaches"
        f" only about {reach} days: forget will keep (and report) locked snapshots until"
        " their lock expires; make retention reach at least as far as the lock"
    )


@backup.command("run")
@config_option
@click.option("--source", "sources", multiple=True, help="Only this source (repeatable).")
@click.option("--tag", "tags", multiple=True, help="Tag the snapshots (repeatable).")
@click.option(
    "--time",
    "when",
    default=None,
    help="Record this snapshot time (ISO 8601), for imports and policy tests.",
)
@json_option
@click.pass_context
def backup_run(
    ctx: click.Context,
    config_file: Path | None,
    sources: tuple[str, ...],
    tags: tuple[str, ...],
    when: str | None,
    as_json: bool,
) -> None:
    """Back up every configured source (or --source ones) now."""
    config = load_unlocking(ctx, config_file)
    from rich.console import Console

    from agents.backup.heap import keep_freed_memory
    from agents.backup.runner import run_backup
    from agents.records.backup import BackupRun

    keep_freed_memory(pad=32 << 20, trim=None)  # every chunk is copied into fresh buffers
    if when is None:
        import_while_unlocking()  # for `record_outcome`, below

    at = parse_time(when) if when else None
    if at is not None and at > datetime.now(UTC) + timedelta(minutes=5):
        # a snapshot from the future would pass for the newest (restore `latest`, the
        # restore test and its RPO) until that day came
        raise click.UsageError(f"--time {when} is in the future")
    results: list[CheckResult] = []
    with progress_bar("backup", enabled=not as_json) as advance:
        run = run_guarded(
            "backup",
            "backup",
            config.host,
            Severity.CRITICAL,
            lambda: run_backup(
                config,
                only=list(sources) or None,
                tags=list(tags),
                when=at,
                emit=results.append,
                progress=advance,
            ),
        )
    if at is None:  # a back-dated import is not the scheduled backup
        record_outcome(config, [*results, run])
    if run.status is Status.ERROR and not results:
        raise OpsagentError(run.summary)  # nothing ran (no repository, bad key): one line
    if as_json:
        print_json(BackupRun.of(run, results).to_dict())
    else:
        Console().print(results_table([*results, run], f"backup on {config.host}"))
    ctx.exit(exit_for([run]))


@backup.command("snapshots")
@config_option
@click.option("--source", default=None, help="Only snapshots of this source.")
@click.option("--host", default=None, help="Only snapshots of this host.")
@json_option
@click.pass_context
def backup_snapshots(
    ctx: click.Context,
    config_file: Path | None,
    source: str | None,
    host: str | None,
    as_json: bool,
) -> None:
    """List snapshots, oldest first."""
    config = load_unlocking(ctx, config_file)
    from rich.console import Console
    from rich.table import Table

    from agents.backup.runner import open_repository
    from agents.units import format_size

    repo = open_repository(backup_config(config), config.state_dir)
    snaps = [
        s
        for s in repo.snapshots()
        if (source is None or s.source == source) and (host is None or s.host == host)
    ]
    for snapshot_id, why in repo.damaged_snapshots.items():
        click.echo(
            f"damaged: {why} (remove it with `opsagent backup forget {snapshot_id[:8]}`)", err=True
        )
    if as_json:
        print_json([s.record().to_dict() for s in snaps])
        return
    table = Table(title=f"snapshots in {repo.storage.url}")
    for column in ("id", "time", "host", "source", "files", "size", "added", "tags"):
        table.add_column(column)
    for s in snaps:
        table.add_row(
            s.short_id,
            s.time.strftime("%Y-%m-%d %H:%M:%S"),
            s.host,
            s.source,
            str(s.stats.get("files", "")),
            format_size(s.stats.get("bytes", 0)),
            format_size(s.stats.get("bytes_added", 0)),
            ",".join(s.tags),
        )
    for snapshot_id in repo.damaged_snapshots:
        table.add_row(snapshot_id[:8], "[red]damaged[/]", "", "", "", "", "", "")
    Console().print(table)


@backup.command("show")
@config_option
@click.argument("snapshot")
@click.option("--source", default=None, help="With `latest`: of this source.")
@click.option("--ls", "list_files", is_flag=True, help="List the snapshot's files too.")
@json_option
@click.pass_context
def backup_show(
    ctx: click.Context,
    config_file: Path | None,
    snapshot: str,
    source: str | None,
    list_files: bool,
    as_json: bool,
) -> None:
    """Show one snapshot's manifest: stats, facts, warnings (and files with --ls)."""
    import yaml

    from agents.backup.runner import open_repository
    from agents.backup.snapshot import shown

    config = load(ctx, config_file)
    repo = open_repository(backup_config(config), config.state_dir)
    snap = repo.find_snapshot(snapshot, source=source)
    record = snap.files_record(repo.read_tree(snap)) if list_files else snap.record()
    if as_json:
        # JSON keeps a name that is not UTF-8 exactly (as \udcNN escapes os.fsencode
        # turns back into its bytes); text shows its bytes as \xNN
        print_json(record.to_dict())
        return
    data = record.to_dict()
    for entry in data.get("entries", []):
        entry["path"] = shown(entry["path"])
    click.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), nl=False)


def _subset(value: str | None) -> str | None:
    """A subset the checker understands, or a usage error (exit 2) before any work."""
    from agents.backup.checker import parse_subset
    from agents.backup.errors import BackupError

    try:
        parse_subset(value)
    except BackupError as exc:
        raise click.BadParameter(str(exc).removeprefix("--read-data-subset: ")) from None
    return value


@backup.command("check")
@config_option
@click.option("--read-data", is_flag=True, help="Download and verify every pack.")
@click.option(
    "--read-data-subset",
    default=None,
    callback=lambda ctx, param, value: _subset(value),
    help="Verify a subset: 10% or 3/7.",
)
@json_option
@click.pass_context
def backup_check(
    ctx: click.Context,
    config_file: Path | None,
    read_data: bool,
    read_data_subset: str | None,
    as_json: bool,
) -> None:
    """Check the repository's structure (and data with --read-data); exit 1 on damage."""
    config = load_unlocking(ctx, config_file)
    from agents.backup.checker import run_check
    from agents.backup.heap import keep_freed_memory
    from agents.backup.runner import open_repository

    if read_data or read_data_subset is not None:
        keep_freed_memory()  # every pack is read into fresh buffers

    repo = open_repository(backup_config(config))
    with progress_bar("check", enabled=not as_json) as advance:
        report = run_check(
            repo,
            read_data=read_data or read_data_subset is not None,
            subset=read_data_subset,
            progress=advance,
        )
    if as_json:
        print_json(report.record().to_dict())
    else:
        for line in report.warnings:
            click.echo(f"warning: {line}")
        for line in report.errors:
            click.echo(f"error: {line}")
        state = "no errors" if report.ok else f"{len(report.errors)} error(s)"
        click.echo(
            f"{report.snapshots} snapshot(s), {report.packs} pack(s),"
            f" {report.packs_read} read: {state}"
        )
    ctx.exit(EXIT_OK if report.ok else EXIT_FAILED)


@backup.command("forget")
@config_option
@click.argument("snapshot_ids", nargs=-1)
@click.option("--dry-run", is_flag=True, help="Show the decisions; remove nothing.")
@json_option
@click.pass_context
def backup_forget(
    ctx: click.Context,
    config_file: Path | None,
    snapshot_ids: tuple[str, ...],
    dry_run: bool,
    as_json: bool,
) -> None:
    """Apply backup.retention (keep what it says, remove the other snapshots), or remove
    the named SNAPSHOT_IDS (damaged ones too) and nothing else."""
    from rich.console import Console
    from rich.table import Table

    from agents.backup.runner import run_forget

    config = load(ctx, config_file)
    if snapshot_ids:
        _forget_named(config, list(snapshot_ids), dry_run, as_json)
        return
    result, report = run_forget(config, dry_run)
    if not dry_run:
        record_outcome(config, [result])
    for snapshot_id in report.damaged:
        click.echo(
            f"warning: snapshot {snapshot_id[:8]} is damaged and was left alone"
            f" (remove it with `opsagent backup forget {snapshot_id[:8]}`)",
            err=True,
        )
    record = report.record(dry_run, result.summary)
    if as_json:
        print_json(record.to_dict())
        return
    table = Table(title=f"retention{' (dry run)' if dry_run else ''}")
    for column in ("host", "source", "id", "time", "decision", "reasons"):
        table.add_column(column)
    for row in record.snapshots:
        decision = "[green]keep[/]" if row.keep else "[red]remove[/]"
        if row.locked:
            decision = "[yellow]locked[/]"
        table.add_row(
            row.host, row.source, row.short_id, row.time[:19], decision, ", ".join(row.reasons)
        )
    Console().print(table)
    click.echo(result.summary)


def _forget_named(config: Config, refs: list[str], dry_run: bool, as_json: bool) -> None:
    """`backup forget SNAPSHOT_IDS`: remove (or with dry_run, name) those snapshots."""
    from agents.backup.maintenance import plan_forget_snapshots, run_forget_snapshots
    from agents.backup.runner import open_repository

    cfg = backup_config(config)
    repo = open_repository(cfg, config.state_dir)
    if dry_run:
        plan = plan_forget_snapshots(repo, refs)
        if as_json:
            print_json(plan.to_dict())
        else:
            chosen = plan.would_remove
            click.echo(
                f"would remove {len(chosen)} snapshot(s): {', '.join(i[:8] for i in chosen)}"
            )
        return
    report = run_forget_snapshots(repo, config.state_db, refs, cfg.prune.delete_old_versions)
    if as_json:
        print_json(report.named_record().to_dict())
        return
    click.echo(
        f"removed {len(report.removed)} snapshot(s): {', '.join(i[:8] for i in report.removed)}"
    )
    for snapshot_id in report.locked:
        click.echo(f"kept {snapshot_id[:8]}: under Object Lock retention", err=True)
    for ref in report.gone:
        click.echo(f"no snapshot {ref} (removed already)", err=True)


@backup.command("prune")
@config_option
@click.option("--dry-run", is_flag=True, help="Say what would be deleted and repacked.")
@json_option
@click.pass_context
def backup_prune(
    ctx: click.Context, config_file: Path | None, dry_run: bool, as_json: bool
) -> None:
    """Delete and repack data no snapshot references (exclusive lock)."""
    from agents.backup.heap import keep_freed_memory
    from agents.backup.runner import run_prune
    from agents.records.backup import JobResult

    config = load(ctx, config_file)
    keep_freed_memory()  # repacking reads and writes every blob it keeps in new buffers
    with progress_bar("prune", enabled=not as_json) as advance:
        result = run_prune(config, dry_run, advance)
    if not dry_run:
        record_outcome(config, [result])
    if as_json:
        print_json(JobResult.of(result).to_dict())
    else:
        click.echo(result.summary)


backup.add_command(backup_key)
backup.add_command(backup_repair)
