"""The one `opsagent` command line: declares commands, calls into the rooms, prints.

Exit codes: 0 ok, 1 a check or job failed, 2 usage or config error, 3 runtime error.
Every listing takes `--json`. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import click
import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from agents import __version__
from agents.audit import action as audit_action
from agents.audit import whoami
from agents.config import (
    BackupConfig,
    Config,
    ConfigError,
    config_path,
    load_config,
    redact_url,
    secret_file_problems,
)
from agents.errors import OpsagentError
from agents.logs import setup_logging
from agents.results import CheckResult, Severity, Status, run_guarded
from agents.units import printable

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


@monitor.command("metrics")
@config_option
@click.pass_context
def monitor_metrics(ctx: click.Context, config_file: Path | None) -> None:
    """Run every check once and print the exposition the exporter would serve."""
    from prometheus_client import generate_latest

    from agents.daemon import agent_registry
    from agents.monitor.checks import run_all
    from exporters.metrics import ResultMetrics

    config = load(ctx, config_file)
    registry = agent_registry(config, __version__)
    metrics = ResultMetrics(registry, __version__)
    for result in run_all(config.monitor.checks, config.host, config.monitor.max_parallel):
        metrics.observe(result)
    click.echo(generate_latest(registry).decode(), nl=False)


@cli.command("status")
@config_option
@json_option
@click.pass_context
def status_command(ctx: click.Context, config_file: Path | None, as_json: bool) -> None:
    """This host on one screen, the most important problem first; exit 1 if any."""
    from agents.status import collect, render

    config = load(ctx, config_file)
    status = collect(config)
    if as_json:
        print_json(status.to_dict())
    else:
        console = Console(highlight=False)
        for line in render(status):
            console.print(line, soft_wrap=True)
    ctx.exit(EXIT_OK if status.ok else EXIT_FAILED)


@cli.command("audit")
@config_option
@click.option("--since", default=None, help="Only records newer than this (7d, or an ISO time).")
@click.option("--action", "prefix", default="", help="Only actions starting with this.")
@click.option("--limit", default=100, show_default=True, help="How many records to show.")
@json_option
@click.pass_context
def audit_command(
    ctx: click.Context,
    config_file: Path | None,
    since: str | None,
    prefix: str,
    limit: int,
    as_json: bool,
) -> None:
    """Who changed what, when, with which outcome (backups, restores, cases, keys...)."""
    from agents.state import StateDB
    from agents.units import parse_duration

    config = load(ctx, config_file)
    start = None
    if since:
        try:
            start = datetime.now(UTC) - parse_duration(since)
        except ValueError:
            start = _parse_time(since)
    records = StateDB(config.state_db).audit_records(start, prefix, limit)
    if as_json:
        print_json([r.to_dict() for r in records])
        return
    table = Table(title=f"audit on {config.host}, newest first")
    for column in ("when", "who", "action", "target", "outcome"):
        table.add_column(column)
    for r in records:
        table.add_row(
            r.at.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
            *(escape(printable(v)) for v in (r.actor, r.action, r.target, r.outcome)),
        )
    Console().print(table)


@cli.command("demo")
@click.option("--keep", is_flag=True, help="Keep the demo directory at the end.")
def demo_command(keep: bool) -> None:
    """The whole loop in a temporary directory, in under a minute: back up, prove the
    restore, corrupt a pack, watch the restore test fail and open a critical case."""
    from agents.demo import run_demo

    setup_logging("text", "warning")
    sys.exit(run_demo(keep, click.echo))


# --- groups whose commands come with their rooms ----------------------------------------


@cli.group()
def backup() -> None:
    """Back up to the repository, list and check snapshots."""


def backup_config(config: Config) -> BackupConfig:
    if config.backup is None:
        raise ConfigError([f"{config_path(None)}: backup: required for this command"])
    return config.backup


@backup.group("key")
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
    from agents.backup.runner import open_repository

    repo = open_repository(backup_config(load(ctx, config_file)))
    keys = repo.list_keys()
    if as_json:
        print_json(keys)
        return
    table = Table(title=f"keys of {repo.storage.url}")
    for column in ("", "id", "created", "user", "host", "label"):
        table.add_column(column)
    for key in keys:
        table.add_row(
            "*" if key["current"] else "",
            key["id"][:8],
            str(key["created"])[:19],
            str(key["user"]),
            str(key["host"]),
            str(key["label"]),
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
    from agents.backup.runner import open_repository

    config = load(ctx, config_file)
    repo = open_repository(backup_config(config))
    password = _new_password(new_password_file)
    with audit_action(config.state_db, "key add", repo.storage.url, label=label) as audit:
        key_id = repo.add_key(password, config.host, whoami(), label)
        audit["key"] = key_id[:8]
    click.echo(f"added key {key_id[:8]}")


@backup_key.command("remove")
@config_option
@click.argument("key_id")
@click.pass_context
def backup_key_remove(ctx: click.Context, config_file: Path | None, key_id: str) -> None:
    """Remove a key (a departed person's); never the last one, nor the one in use."""
    from agents.backup.runner import open_repository

    config = load(ctx, config_file)
    repo = open_repository(backup_config(config))
    with audit_action(config.state_db, "key remove", repo.storage.url, key=key_id):
        removed = repo.remove_key(key_id)
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
    old = repo.key_id
    with audit_action(config.state_db, "key passwd", repo.storage.url, old=old[:8]) as audit:
        label = next((k["label"] for k in repo.list_keys() if k["id"] == old), "")
        new = repo.add_key(password, config.host, whoami(), label)
        repo.key_id = new  # the new key is in use now: the old one can go
        repo.remove_key(old)
        audit["new"] = new[:8]
    click.echo(f"key {old[:8]} replaced by {new[:8]}; now put the new password in the file")
    click.echo(f"that backup.password_file names ({backup_config(config).password_file})")


@backup_key.command("export")
@config_option
@click.option("--paper", is_flag=True, required=True, help="Print for offline escrow.")
@click.pass_context
def backup_key_export(ctx: click.Context, config_file: Path | None, paper: bool) -> None:
    """Print the master key for offline escrow (a safe, not a computer), with a checksum;
    `backup key recover` turns it back into a key with a new password."""
    from agents.backup.crypto import key_fingerprint, paper_key
    from agents.backup.runner import open_repository

    config = load(ctx, config_file)
    repo = open_repository(backup_config(config))
    with audit_action(config.state_db, "key export", repo.storage.url):
        text = paper_key(repo.crypto.master)
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
    from agents.backup.crypto import read_paper_key
    from agents.backup.repository import Repository
    from agents.backup.storage import open_storage

    config = load(ctx, config_file)
    cfg = backup_config(config)
    storage = open_storage(cfg.repository, cfg.s3)
    with audit_action(config.state_db, "key recover", storage.url) as audit:
        master = read_paper_key(paper_file.read_text(encoding="utf-8"))
        repo = Repository.from_master(storage, master)
        password = _new_password(new_password_file)
        key_id = repo.add_key(password, config.host, whoami(), "recovered from paper")
        audit["key"] = key_id[:8]
    click.echo(f"added key {key_id[:8]}: the repository opens with the new password")


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
    from agents.backup.runner import run_backup

    config = load(ctx, config_file)
    at = _parse_time(when) if when else None
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
    sources_done = [r for r in results if r.kind == "backup_source"]
    health = [r for r in results if r.kind == "backup_repository"]
    if as_json:
        print_json(
            {
                "run": run.to_dict(),
                "sources": [r.to_dict() for r in sources_done],
                "repository": health[0].to_dict() if health else None,
            }
        )
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
    from agents.backup.runner import open_repository
    from agents.units import format_size

    config = load(ctx, config_file)
    repo = open_repository(backup_config(config))
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
        print_json([s.summary() for s in snaps])
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
    from agents.backup.runner import open_repository
    from agents.backup.snapshot import shown

    config = load(ctx, config_file)
    repo = open_repository(backup_config(config))
    snap = repo.find_snapshot(snapshot, source=source)
    data = snap.summary()
    if list_files:
        # JSON keeps a name that is not UTF-8 exactly (as \udcNN escapes os.fsencode
        # turns back into its bytes); text shows its bytes as \xNN
        name = (lambda path: path) if as_json else shown
        data["entries"] = [
            {"path": name(e.path), "type": e.type, "size": e.size, "mode": oct(e.mode)}
            for e in repo.read_tree(snap)
        ]
    if as_json:
        print_json(data)
    else:
        click.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), nl=False)


@backup.command("check")
@config_option
@click.option("--read-data", is_flag=True, help="Download and verify every pack.")
@click.option("--read-data-subset", default=None, help="Verify a subset: 10% or 3/7.")
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
    from agents.backup.checker import check
    from agents.backup.runner import open_repository

    config = load(ctx, config_file)
    repo = open_repository(backup_config(config))
    with repo.lock(exclusive=False), progress_bar("check", enabled=not as_json) as advance:
        report = check(
            repo,
            read_data=read_data or read_data_subset is not None,
            subset=read_data_subset,
            progress=advance,
        )
    if as_json:
        print_json(
            {
                "ok": report.ok,
                "snapshots": report.snapshots,
                "packs": report.packs,
                "packs_read": report.packs_read,
                "bytes_read": report.bytes_read,
                "errors": report.errors,
                "warnings": report.warnings,
                "bad_packs": report.bad_packs,
            }
        )
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
    rows = [
        {
            "id": d.snapshot.id,
            "short_id": d.snapshot.id[:8],
            "time": d.snapshot.time.isoformat(),
            "host": d.snapshot.host,
            "source": d.snapshot.source,
            "keep": d.keep,
            "reasons": list(d.reasons),
            "removed": d.snapshot.id in report.removed,
            "locked": d.snapshot.id in report.locked,
        }
        for d in report.decisions
    ]
    if as_json:
        print_json({"dry_run": dry_run, "snapshots": rows, "summary": result.summary})
        return
    table = Table(title=f"retention{' (dry run)' if dry_run else ''}")
    for column in ("host", "source", "id", "time", "decision", "reasons"):
        table.add_column(column)
    for row in rows:
        decision = "[green]keep[/]" if row["keep"] else "[red]remove[/]"
        if row["locked"]:
            decision = "[yellow]locked[/]"
        table.add_row(
            row["host"],
            row["source"],
            row["short_id"],
            row["time"][:19],
            decision,
            ", ".join(row["reasons"]),
        )
    Console().print(table)
    click.echo(result.summary)


def _forget_named(config: Config, refs: list[str], dry_run: bool, as_json: bool) -> None:
    from agents.backup.maintenance import forget_snapshots, resolve_snapshots
    from agents.backup.runner import open_repository

    cfg = backup_config(config)
    repo = open_repository(cfg)
    if dry_run:
        chosen, _ = resolve_snapshots(repo.snapshot_ids(), refs)
        if as_json:
            print_json({"dry_run": True, "would_remove": chosen})
        else:
            click.echo(
                f"would remove {len(chosen)} snapshot(s): {', '.join(i[:8] for i in chosen)}"
            )
        return
    with audit_action(config.state_db, "backup forget", " ".join(refs)) as audit:
        report = forget_snapshots(repo, refs, cfg.prune.delete_old_versions)
        audit["removed"] = [i[:8] for i in report.removed]
    if as_json:
        print_json({"dry_run": False, "removed": report.removed, "locked": report.locked})
        return
    click.echo(
        f"removed {len(report.removed)} snapshot(s): {', '.join(i[:8] for i in report.removed)}"
    )
    for snapshot_id in report.locked:
        click.echo(f"kept {snapshot_id[:8]}: under Object Lock retention", err=True)
    for ref in report.gone:
        click.echo(f"no snapshot {ref} (removed already)", err=True)


@backup.group("repair")
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
    from agents.backup.repair import repair_index
    from agents.backup.runner import open_repository

    config = load(ctx, config_file)
    repo = open_repository(backup_config(config))
    with (
        audit_action(config.state_db, "backup repair index", repo.storage.url) as audit,
        progress_bar("repair", enabled=not as_json and read_data) as advance,
    ):
        report = repair_index(repo, read_data, advance)
        audit |= {"packs": report.packs, "damaged_blobs": report.damaged_blobs}
    data = {
        "packs": report.packs,
        "blobs": report.blobs,
        "index_files_replaced": report.index_files_replaced,
        "unreadable_packs": report.unreadable_packs,
        "damaged_blobs": report.damaged_blobs,
    }
    if as_json:
        print_json(data)
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
    from agents.backup.repair import repair_packs
    from agents.backup.runner import open_repository

    config = load(ctx, config_file)
    cfg = backup_config(config)
    repo = open_repository(cfg)
    with audit_action(config.state_db, "backup repair packs", " ".join(pack_ids)) as audit:
        report = repair_packs(repo, list(pack_ids), cfg.compression_level, cfg.pack_size)
        audit |= {"salvaged": report.salvaged_blobs, "lost": len(report.lost_blobs)}
    if as_json:
        print_json(
            {
                "packs": report.packs,
                "salvaged_blobs": report.salvaged_blobs,
                "lost_blobs": report.lost_blobs,
                "written": report.written,
            }
        )
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
    from agents.backup.repair import repair_snapshots
    from agents.backup.runner import open_repository
    from agents.units import few

    config = load(ctx, config_file)
    cfg = backup_config(config)
    repo = open_repository(cfg)
    with audit_action(config.state_db, "backup repair snapshots", repo.storage.url) as audit:
        report = repair_snapshots(repo, dry_run, cfg.compression_level, cfg.pack_size)
        audit["repaired"] = [r.snapshot[:8] for r in report.repaired]
    rows = [
        {"snapshot": r.snapshot, "replacement": r.replacement, "lost": r.lost}
        for r in report.repaired
    ]
    if as_json:
        print_json(
            {"dry_run": dry_run, "repaired": rows, "damaged_objects": report.damaged_objects}
        )
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


@backup.command("prune")
@config_option
@click.option("--dry-run", is_flag=True, help="Say what would be deleted and repacked.")
@json_option
@click.pass_context
def backup_prune(
    ctx: click.Context, config_file: Path | None, dry_run: bool, as_json: bool
) -> None:
    """Delete and repack data no snapshot references (exclusive lock)."""
    from agents.backup.runner import run_prune

    config = load(ctx, config_file)
    with progress_bar("prune", enabled=not as_json) as advance:
        result = run_prune(config, dry_run, advance)
    if not dry_run:
        record_outcome(config, [result])
    if as_json:
        print_json(result.to_dict())
    else:
        click.echo(result.summary)


@cli.command("restore")
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
    is replaced, never written through).

    Damaged data (a blob that fails authentication or is missing from the index, a
    missing pack) never stops a restore: every other file comes back whole, and each
    file that needs it is written as NAME.damaged (NAME.damaged.N if that exists;
    never over an existing file), mode 0600, readable parts in place and unreadable
    ranges zero-filled, and listed as "damaged" with the reason (`damaged` in --json:
    path, reason, written_as); exit 1. A damaged part of the file list (tree) is
    listed as damaged too, and every entry in the readable parts is restored.
    """
    from agents.backup.restorer import plan, restore
    from agents.backup.runner import open_repository
    from agents.backup.snapshot import shown

    config = load(ctx, config_file)
    repo = open_repository(backup_config(config))
    snap = repo.find_snapshot(snapshot, source=source)
    for damaged_id in repo.damaged_snapshots if snapshot == "latest" else ():
        click.echo(
            f"warning: snapshot {damaged_id[:8]} is damaged and was not considered for"
            f" `latest` (it may be newer than {snap.short_id})",
            err=True,
        )
    if database is not None:
        _restore_database(
            ctx, config, repo, snap, database, target, create, force, jobs, dry_run, as_json
        )
        return
    if dry_run:
        entries = plan(repo, snap, list(include) or None)
        total = sum(e.size for e in entries)
        if as_json:
            print_json({"snapshot": snap.id, "entries": len(entries), "bytes": total})
        else:
            for e in entries:
                click.echo(f"{e.type:8} {e.size:>12} {shown(e.path)}")
            click.echo(f"{len(entries)} entries, {total} bytes from snapshot {snap.short_id}")
        return
    directory = Path(target)
    with (
        audit_action(config.state_db, "restore files", str(directory), snapshot=snap.id) as audit,
        repo.lock(exclusive=False),
        progress_bar("restore", total=snap.stats.get("bytes"), enabled=not as_json) as advance,
    ):
        result = restore(repo, snap, directory, list(include) or None, overwrite, advance)
        audit |= {"files": result.files, "bytes": result.bytes}
        if result.refused or result.errors or result.damaged:
            audit["outcome"] = (
                f"{len(result.refused)} refused, {len(result.errors)} errors,"
                f" {len(result.damaged)} damaged"
            )
    data = {
        "snapshot": snap.id,
        "target": str(directory),
        "files": result.files,
        "dirs": result.dirs,
        "symlinks": result.symlinks,
        "specials": result.specials,
        "bytes": result.bytes,
        "refused": result.refused,
        "skipped_existing": result.skipped_existing,
        "errors": result.errors,
        "warnings": result.warnings,
        "damaged": [d.to_dict() for d in result.damaged],
    }
    if as_json:
        print_json(data)
    else:
        click.echo(
            f"restored {result.files} files, {result.dirs} dirs, {result.symlinks} links,"
            f" {result.specials} FIFOs/devices, {result.bytes} bytes"
            f" from snapshot {snap.short_id} into {directory}"
        )
        for path in result.refused:
            click.echo(f"refused (outside the target): {shown(path)}", err=True)
        for path in result.skipped_existing:
            click.echo(f"kept existing (use --overwrite): {shown(path)}", err=True)
        for line in result.errors:
            click.echo(f"error: {shown(line)}", err=True)
        for line in result.warnings:
            click.echo(f"warning: {shown(line)}", err=True)
        for damaged in result.damaged:
            where = shown(damaged.written_as) if damaged.written_as else "not written"
            click.echo(f"damaged ({where}): {shown(damaged.path)}: {damaged.reason}", err=True)
    failed = result.refused or result.errors or result.damaged
    ctx.exit(EXIT_FAILED if failed else EXIT_OK)


def _restore_database(
    ctx: click.Context,
    config: Config,
    repo: Any,
    snap: Any,
    database: str,
    target: str,
    create: bool,
    force: bool,
    jobs: int,
    dry_run: bool,
    as_json: bool,
) -> None:
    from agents.backup.recovery import dump_entries, restore_database

    cfg = backup_config(config)
    source = next((s for s in cfg.sources if s.name == snap.source), None)
    if source is None or source.kind == "files":
        raise OpsagentError(
            f"snapshot {snap.short_id} is of source {snap.source!r}, not a database source"
            " in this config"
        )
    if dry_run:
        entries = dump_entries(repo, snap, database)
        last = _last_restore_seconds(config)
        data = {
            "snapshot": snap.id,
            "database": database,
            "target": target,
            "dump_files": [e.path for e in entries],
            "bytes": sum(e.size for e in entries),
            "expected_seconds": last,
        }
        if as_json:
            print_json(data)
        else:
            when = (
                f"about {last:.0f}s (last restore test)"
                if last
                else "unknown (no restore test yet)"
            )
            click.echo(
                f"would restore {database} ({data['bytes']} bytes) from snapshot"
                f" {snap.short_id} into {target}; expected time: {when}"
            )
        return
    workdir = cfg.cache_dir or config.state_dir / "tmp"
    where = redact_url(target)
    with (
        audit_action(config.state_db, "restore database", f"{database} -> {where}") as audit,
        repo.lock(exclusive=False),
    ):
        recovery = restore_database(
            repo, snap, database, target, source, workdir, create, force, jobs
        )
        audit |= {"snapshot": snap.id, "seconds": round(recovery.seconds, 3)}
        audit["outcome"] = "ok" if recovery.ok else f"differs: {'; '.join(recovery.problems)}"
    rows = []
    for table in sorted(
        set(recovery.expected.get("tables", {})) | set(recovery.actual.get("tables", {}))
    ):
        rows.append(
            {
                "table": table,
                "expected": recovery.expected.get("tables", {}).get(table),
                "restored": recovery.actual.get("tables", {}).get(table),
            }
        )
    if as_json:
        print_json(
            {
                "snapshot": snap.id,
                "database": database,
                "target": target,
                "seconds": round(recovery.seconds, 3),
                "ok": recovery.ok,
                "problems": recovery.problems,
                "tables": rows,
                "schema_fingerprint": {
                    "expected": recovery.expected.get("schema_fingerprint"),
                    "restored": recovery.actual.get("schema_fingerprint"),
                },
            }
        )
    else:
        table = Table(title=f"{database} restored into {target} in {recovery.seconds:.1f}s")
        for column in ("table", "rows at backup", "rows restored", ""):
            table.add_column(column)
        for row in rows:
            same = row["expected"] == row["restored"]
            table.add_row(
                row["table"],
                str(row["expected"]),
                str(row["restored"]),
                "[green]ok[/]" if same else "[red]differs[/]",
            )
        Console().print(table)
        same = recovery.expected.get("schema_fingerprint") == recovery.actual.get(
            "schema_fingerprint"
        )
        click.echo(f"schema fingerprint: {'matches' if same else 'DIFFERS'}")
        for problem in recovery.problems:
            click.echo(f"problem: {problem}", err=True)
    ctx.exit(EXIT_OK if recovery.ok else EXIT_FAILED)


def _last_restore_seconds(config: Config) -> float | None:
    from agents.records import RestoreTestDetails
    from agents.state import StateDB

    if not config.state_db.exists():
        return None
    state = StateDB(config.state_db).job("restore_test")
    if state is None or state.last_result is None or not state.last_result.ok:
        return None
    rto = RestoreTestDetails.of(state.last_result).rto_seconds
    return float(rto if rto is not None else state.last_result.duration_seconds)


def _parse_time(text: str, default_zone: Any = UTC) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"expected ISO 8601, got {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=default_zone)


@contextmanager
def progress_bar(
    label: str, total: int | None = None, enabled: bool = True
) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar (bytes, files, rate, ETA) on a terminal; silent otherwise."""
    if not enabled or not sys.stderr.isatty():
        yield lambda b, f: None
        return
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TextColumn("{task.fields[files]} files"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total, files=0)
        files = 0

        def advance(nbytes: int, nfiles: int) -> None:
            nonlocal files
            files += nfiles
            bar.update(task, advance=nbytes, files=files)

        yield advance


@cli.group("restore-test")
def restore_test() -> None:
    """Scheduled restore tests in a sandbox."""


@restore_test.command("run")
@config_option
@click.option("--snapshot", default=None, help="Test this snapshot (default: the plan's).")
@click.option("--source", default=None, help="Test only this source.")
@click.option("--keep-sandbox", is_flag=True, help="Keep the sandbox for a person to inspect.")
@click.option(
    "--sandbox",
    "sandbox_kind",
    type=click.Choice(["local"]),
    default=None,
    help="Run in a local sandbox here (how an ssh sandbox host runs it).",
)
@json_option
@click.pass_context
def restore_test_run(
    ctx: click.Context,
    config_file: Path | None,
    snapshot: str | None,
    source: str | None,
    keep_sandbox: bool,
    sandbox_kind: str | None,
    as_json: bool,
) -> None:
    """Restore into a sandbox, verify every step, measure RTO and RPO; exit 1 on failure.

    Every run is recorded as the daemon records it (history, audit, a case when it
    fails), including one that fails before the test starts (no repository, a damaged
    snapshot: a failed `start` step). Every source is tested even when another one
    fails or has never been backed up. Exit 1 when the test fails, 3 only when the
    test itself crashed (recorded as an error).
    """
    from agents.records import RestoreTestDetails
    from agents.restore_test.runner import run_restore_test
    from agents.state import StateDB

    config = load(ctx, config_file)
    state = StateDB(config.state_db)
    result = run_guarded(
        "restore_test",
        "restore_test",
        config.host,
        Severity.CRITICAL,
        lambda: run_restore_test(
            config, state, snapshot, source, keep_sandbox, force_local=sandbox_kind == "local"
        ),
    )
    record_outcome(config, [result])
    if as_json:
        print_json(result.to_dict())
    elif result.status is Status.ERROR:
        click.echo(f"opsagent: restore test: {result.summary}", err=True)
    else:
        table = Table(title=f"restore test on {config.host}: {result.status.value}")
        for column in ("step", "outcome", "time", "summary"):
            table.add_column(column)
        tested = RestoreTestDetails.of(result)
        for step in tested.steps or []:
            outcome = "[green]ok[/]" if step.ok else "[red]failed[/]"
            table.add_row(step.name, outcome, f"{step.seconds:.2f}s", step.summary)
        Console().print(table)
        click.echo(result.summary)
        click.echo(f"RTO {tested.rto_seconds or 0:.1f}s, RPO {tested.rpo_seconds or 0:.0f}s")
        if tested.sandbox:
            click.echo(f"sandbox kept at {tested.sandbox} until {tested.kept_until}")
    ctx.exit(EXIT_RUNTIME if result.status is Status.ERROR else exit_for([result]))


@restore_test.command("history")
@config_option
@click.option("--limit", default=20, show_default=True, help="How many runs to show.")
@json_option
@click.pass_context
def restore_test_history(
    ctx: click.Context, config_file: Path | None, limit: int, as_json: bool
) -> None:
    """Past restore tests: when, snapshots, per-step outcome and time, RTO, RPO."""
    from agents.records import RestoreTestDetails
    from agents.state import StateDB

    config = load(ctx, config_file)
    runs = StateDB(config.state_db).runs("restore_test", limit)
    if as_json:
        print_json([r.to_dict() for r in runs])
        return
    table = Table(title="restore tests, newest first")
    for column in ("when", "outcome", "RTO", "RPO", "steps", "summary"):
        table.add_column(column)
    for r in runs:
        tested = RestoreTestDetails.of(r)
        steps = " ".join(f"{s.name}:{'ok' if s.ok else 'FAIL'}" for s in tested.steps or [])
        table.add_row(
            r.started_at.strftime("%Y-%m-%d %H:%M"),
            r.status.value,
            f"{tested.rto_seconds or 0:.1f}s",
            f"{tested.rpo_seconds or 0:.0f}s",
            steps,
            r.summary,
        )
    Console().print(table)


@restore_test.command("plan")
@config_option
@json_option
@click.pass_context
def restore_test_plan(ctx: click.Context, config_file: Path | None, as_json: bool) -> None:
    """What the next scheduled run will test, and when."""
    from agents.config import RestoreTestConfig
    from agents.daemon import next_runs, restore_test_job
    from agents.restore_test.runner import choose_snapshots
    from agents.units import format_duration

    config = load(ctx, config_file)
    plan = config.restore_test or RestoreTestConfig()
    job = restore_test_job(config)
    when = next_runs([job])[job.name] if job else None
    repo = open_repository_for(config)
    snaps, problems = choose_snapshots(repo, config, plan, None, None)
    data = {
        "next_run": when.isoformat() if when else None,
        "snapshots": [
            {
                "source": s.source,
                "id": s.id,
                "time": s.time.isoformat(),
                "bytes": s.stats.get("bytes"),
            }
            for s in snaps
        ],
        "problems": [text for _, text in problems],
        "snapshot_rule": plan.snapshot
        if isinstance(plan.snapshot, str)
        else f"random within {format_duration(plan.snapshot.random_within)}",
        "sandbox": {"kind": plan.sandbox.kind, "root": str(plan.sandbox.root)},
        "verify": {
            "sql": len(plan.verify.sql),
            "commands": len(plan.verify.commands),
            "data_full_every": format_duration(plan.verify.data.full_every),
        },
        "max_rto": format_duration(plan.max_rto) if plan.max_rto else None,
        "max_rpo": format_duration(plan.max_rpo) if plan.max_rpo else None,
    }
    if as_json:
        print_json(data)
    else:
        click.echo(yaml.safe_dump(data, sort_keys=False), nl=False)


def open_repository_for(config: Config) -> Any:
    from agents.backup.runner import open_repository

    return open_repository(backup_config(config))


@cli.group()
def cases() -> None:
    """Cases with severities and SLA clocks."""


def case_store(config: Config) -> Any:
    from agents.cases.service import case_store as build

    return build(config)


def _zone(config: Config) -> Any:
    """The business calendar's zone: case times print in it."""
    from zoneinfo import ZoneInfo

    return ZoneInfo(config.cases.calendar.timezone)


def _actor(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """`--by`: somebody, not nobody."""
    if not value or not value.strip():
        raise click.BadParameter("must name who acts", param=param)
    return value.strip()


def _local(when: datetime | None, zone: Any) -> str:
    return "-" if when is None else when.astimezone(zone).isoformat(timespec="seconds")


def _changed(config: Config, store: Any, case: Any, what: str) -> None:
    """Say what changed, deliver its notifications now where this host can, and say
    how many went out or wait for an agent that has the notifier."""
    from agents.cases.service import deliver_now

    delivered, _ = deliver_now(config, store, case.id)
    waiting = [n for n in store.notifications(case_id=case.id, state="waiting")]
    told = f"{delivered} notification(s) sent" if delivered else "no notification sent"
    if waiting:
        names = ", ".join(sorted({n.notifier for n in waiting}))
        told += f", {len(waiting)} queued for {names}"
    click.echo(f"#{case.id} {what} ({told})")


@cases.command("list")
@config_option
@click.option(
    "--status",
    type=click.Choice(["open", "acknowledged", "reopened", "resolved", "closed"]),
    default=None,
    help="Only this status (`open` includes acknowledged and reopened).",
)
@click.option(
    "--severity",
    type=click.Choice([s.value for s in Severity]),
    default=None,
    help="Only this severity.",
)
@click.option("--search", default=None, help="Text in the title, host, source or timeline.")
@click.option("--host", default=None, help="Only cases of this host.")
@click.option("--since", default=None, help="Only cases seen in this window (e.g. 7d, 12h).")
@json_option
@click.pass_context
def cases_list(
    ctx: click.Context,
    config_file: Path | None,
    status: str | None,
    severity: str | None,
    search: str | None,
    host: str | None,
    since: str | None,
    as_json: bool,
) -> None:
    """Cases, newest first, with the time left on their SLA clocks."""
    from agents.units import format_duration, parse_duration

    config = load(ctx, config_file)
    now = datetime.now(UTC)
    window = None
    if since is not None:
        try:
            window = now - parse_duration(since)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--since") from None
    found = case_store(config).cases(status, severity, search=search, host=host, since=window)
    if as_json:
        print_json(
            [
                {
                    **c.to_dict(),
                    "response_left_seconds": (c.response_due - now).total_seconds(),
                    "resolution_left_seconds": (c.resolution_due - now).total_seconds(),
                }
                for c in found
            ]
        )
        return
    table = Table(title="cases")
    for column in ("id", "severity", "status", "host", "title", "seen", "respond in", "resolve in"):
        table.add_column(column)

    def left(due: datetime, done: bool) -> str:
        if done:
            return "-"
        seconds = (due - now).total_seconds()
        text = format_duration(abs(seconds))
        return f"[red]breached {text} ago[/]" if seconds < 0 else text

    for c in found:
        table.add_row(
            f"#{c.id}",
            c.severity.value,
            c.status,
            escape(printable(c.host)),
            escape(printable(c.title[:60])),
            str(c.occurrences),
            left(c.response_due, c.acknowledged_at is not None or not c.is_open),
            left(c.resolution_due, not c.is_open),
        )
    Console().print(table)


@cases.command("show")
@config_option
@click.argument("case_id", type=int)
@json_option
@click.pass_context
def cases_show(ctx: click.Context, config_file: Path | None, case_id: int, as_json: bool) -> None:
    """One case, its timeline and its notifications (times in the calendar's zone)."""
    config = load(ctx, config_file)
    store = case_store(config)
    case = store.get(case_id)
    events = store.events(case_id)
    notifications = store.notifications(case_id=case_id)
    if as_json:
        print_json(
            {
                **case.to_dict(),
                "events": [
                    {"at": e.at.isoformat(), "kind": e.kind, "actor": e.actor, "text": e.text}
                    for e in events
                ],
                "notifications": [n.to_dict() for n in reversed(notifications)],
            }
        )
        return
    zone = _zone(config)
    click.echo(f"#{case.id} [{case.severity.value}] {case.status}: {printable(case.title)}")
    click.echo(
        f"host {printable(case.host)}, source {printable(case.source)},"
        f" {case.occurrences} occurrence(s)"
    )
    click.echo(
        f"response due {_local(case.response_due, zone)}, resolution due"
        f" {_local(case.resolution_due, zone)} ({zone.key})"
    )
    for e in events:
        who = f" by {printable(e.actor)}" if e.actor else ""
        text = f": {printable(e.text)}" if e.text else ""
        click.echo(f"  {_local(e.at, zone)} {e.kind}{who}{text}")
    for n in reversed(notifications):
        error = f" ({printable(n.last_error)})" if n.last_error and n.state != "delivered" else ""
        click.echo(f"  notification {n.id}: {n.event} to {n.notifier}: {n.state}{error}")


@cases.command("open")
@config_option
@click.option(
    "--severity",
    type=click.Choice([s.value for s in Severity]),
    required=True,
    help="The case's severity (sets its SLA clocks).",
)
@click.option("--title", required=True, help="What is wrong, in one line.")
@click.option("--host", default=None, help="The host it concerns (default: this agent's).")
@click.option("--body", default=None, help="Details for the timeline; `-` reads standard input.")
@click.option("--by", "actor", default=whoami, callback=_actor, help="Who opens it (default: you).")
@click.pass_context
def cases_open(
    ctx: click.Context,
    config_file: Path | None,
    severity: str,
    title: str,
    host: str | None,
    body: str | None,
    actor: str,
) -> None:
    """Open a case by hand (a call or an e-mail), with its SLA clocks and notifications."""
    config = load(ctx, config_file)
    if not title.strip():
        raise click.BadParameter("must not be empty", param_hint="--title")
    if host is not None and not host.strip():
        raise click.BadParameter(
            "must not be empty (leave it out for this host)", param_hint="--host"
        )
    # bytes that are not UTF-8 become U+FFFD: the case is opened, never a traceback
    text = sys.stdin.buffer.read().decode("utf-8", "replace") if body == "-" else body
    store = case_store(config)
    with audit_action(config.state_db, "case open", title[:100], by=actor, severity=severity):
        case = store.open_case_by_hand(
            title.strip()[:500],
            Severity(severity),
            host or config.host,
            datetime.now(UTC),
            actor,
            text,
        )
    zone = _zone(config)
    _changed(config, store, case, f"opened [{case.severity.value}]")
    click.echo(
        f"respond by {_local(case.response_due, zone)}, resolve by"
        f" {_local(case.resolution_due, zone)}"
    )


@cases.command("severity")
@config_option
@click.argument("case_id", type=int)
@click.argument("severity", type=click.Choice([s.value for s in Severity]))
@click.option("--why", required=True, help="Why the severity changes (on the timeline).")
@click.option(
    "--by", "actor", default=whoami, callback=_actor, help="Who changes it (default: you)."
)
@click.pass_context
def cases_severity(
    ctx: click.Context,
    config_file: Path | None,
    case_id: int,
    severity: str,
    why: str,
    actor: str,
) -> None:
    """Change an open case's severity; its clocks are recomputed from when they started."""
    config = load(ctx, config_file)
    store = case_store(config)
    with audit_action(config.state_db, "case severity", f"#{case_id}", by=actor, to=severity):
        case = store.set_severity(case_id, Severity(severity), datetime.now(UTC), actor, why)
    zone = _zone(config)
    _changed(config, store, case, f"is {case.severity.value}")
    click.echo(
        f"respond by {_local(case.response_due, zone)}, resolve by"
        f" {_local(case.resolution_due, zone)}"
    )


@cases.command("ack")
@config_option
@click.argument("case_id", type=int)
@click.option(
    "--by", "actor", default=whoami, callback=_actor, help="Who takes the case (default: you)."
)
@click.pass_context
def cases_ack(ctx: click.Context, config_file: Path | None, case_id: int, actor: str) -> None:
    """Acknowledge a case: stops its response clock, and the pager's escalation."""
    config = load(ctx, config_file)
    store = case_store(config)
    with audit_action(config.state_db, "case ack", f"#{case_id}", by=actor):
        case = store.acknowledge(case_id, datetime.now(UTC), actor)
    _changed(config, store, case, f"acknowledged by {actor}")


@cases.command("comment")
@config_option
@click.argument("case_id", type=int)
@click.argument("text")
@click.option(
    "--by", "actor", default=whoami, callback=_actor, help="Who writes the comment (default: you)."
)
@click.pass_context
def cases_comment(
    ctx: click.Context, config_file: Path | None, case_id: int, text: str, actor: str | None
) -> None:
    """Add a comment to a case's timeline."""
    if not text.strip():
        raise click.BadParameter("must not be empty", param_hint="TEXT")
    config = load(ctx, config_file)
    with audit_action(config.state_db, "case comment", f"#{case_id}", by=actor):
        case_store(config).comment(case_id, datetime.now(UTC), actor, text)
    click.echo(f"#{case_id}: comment added")


@cases.command("resolve")
@config_option
@click.argument("case_id", type=int)
@click.option("--note", default=None, help="What was done (on the timeline).")
@click.option(
    "--by", "actor", default=whoami, callback=_actor, help="Who resolves it (default: you)."
)
@click.pass_context
def cases_resolve(
    ctx: click.Context,
    config_file: Path | None,
    case_id: int,
    note: str | None,
    actor: str | None,
) -> None:
    """Resolve a case: stops its resolution clock."""
    config = load(ctx, config_file)
    store = case_store(config)
    with audit_action(config.state_db, "case resolve", f"#{case_id}", by=actor, note=note):
        case = store.resolve(case_id, datetime.now(UTC), actor, note)
    _changed(config, store, case, "resolved")


@cases.command("reopen")
@config_option
@click.argument("case_id", type=int)
@click.option("--note", default=None, help="Why (on the timeline).")
@click.option(
    "--by", "actor", default=whoami, callback=_actor, help="Who reopens it (default: you)."
)
@click.pass_context
def cases_reopen(
    ctx: click.Context, config_file: Path | None, case_id: int, note: str | None, actor: str | None
) -> None:
    """Reopen a resolved or closed case: it is unacknowledged and its clocks start over."""
    config = load(ctx, config_file)
    store = case_store(config)
    with audit_action(config.state_db, "case reopen", f"#{case_id}", by=actor):
        case = store.reopen(case_id, datetime.now(UTC), actor, note)
    _changed(config, store, case, "reopened")


@cases.command("close")
@config_option
@click.argument("case_id", type=int)
@click.option(
    "--by", "actor", default=whoami, callback=_actor, help="Who closes it (default: you)."
)
@click.pass_context
def cases_close(
    ctx: click.Context, config_file: Path | None, case_id: int, actor: str | None
) -> None:
    """Close a resolved case (nothing more to do on it)."""
    config = load(ctx, config_file)
    with audit_action(config.state_db, "case close", f"#{case_id}", by=actor):
        case_store(config).close(case_id, datetime.now(UTC), actor)
    click.echo(f"#{case_id} closed")


@cases.command("notifications")
@config_option
@click.option("--case", "case_id", type=int, default=None, help="Only this case's.")
@click.option(
    "--state",
    type=click.Choice(["waiting", "delivered", "failed"]),
    default=None,
    help="Only notifications in this state.",
)
@click.option(
    "--limit",
    type=click.IntRange(1, 10000),
    default=50,
    show_default=True,
    help="At most this many rows.",
)
@json_option
@click.pass_context
def cases_notifications(
    ctx: click.Context,
    config_file: Path | None,
    case_id: int | None,
    state: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """The outbox, newest first: what was sent to whom, what waits and what failed."""
    config = load(ctx, config_file)
    store = case_store(config)
    rows = store.notifications(case_id=case_id, state=state, limit=limit)
    problems = store.notification_problems(datetime.now(UTC))
    if as_json:
        print_json({"notifications": [n.to_dict() for n in rows], "problems": problems})
        return
    table = Table(title="notifications")
    for column in ("id", "case", "event", "notifier", "state", "attempts", "by", "last error"):
        table.add_column(column)
    for n in rows:
        table.add_row(
            str(n.id),
            f"#{n.case_id}",
            n.event,
            escape(n.notifier),
            n.state,
            str(n.attempts),
            escape(printable(n.handled_by) or "-"),
            escape(printable((n.last_error or "")[:60])),
        )
    Console().print(table)
    for problem in problems:
        click.echo(f"problem: {printable(problem)}")


@cases.command("retry")
@config_option
@click.option("--failed", "failed", is_flag=True, required=True, help="Requeue failed ones.")
@click.option("--notifier", default=None, help="Only this notifier's.")
@click.option("--case", "case_id", type=int, default=None, help="Only this case's.")
@click.pass_context
def cases_retry(
    ctx: click.Context,
    config_file: Path | None,
    failed: bool,
    notifier: str | None,
    case_id: int | None,
) -> None:
    """Send notifications that failed for good again, once the notifier is fixed: the
    agents that have the notifier send them, in order, within seconds (as the service
    user, so a fix that only root can see does not pass for one)."""
    config = load(ctx, config_file)
    store = case_store(config)
    with audit_action(config.state_db, "case notifications retry", notifier or "all") as audit:
        count = store.retry_failed(datetime.now(UTC), notifier, case_id)
        audit["requeued"] = count
    click.echo(f"{count} notification(s) requeued; the agents send them within seconds")


@cases.command("retire-notifier")
@config_option
@click.argument("name")
@click.pass_context
def cases_retire_notifier(ctx: click.Context, config_file: Path | None, name: str) -> None:
    """Forget a notifier name that was renamed or removed everywhere: its waiting
    notifications are dropped (kept as retired) and it is no longer undeliverable."""
    config = load(ctx, config_file)
    with audit_action(config.state_db, "notifier retire", name) as audit:
        count = case_store(config).retire_notifier(name, datetime.now(UTC))
        audit["dropped"] = count
    click.echo(f"notifier {name} retired; {count} waiting notification(s) dropped")


@cases.command("sla")
@config_option
@click.option("--since", default="30d", show_default=True, help="Cases opened in this window.")
@json_option
@click.pass_context
def cases_sla(ctx: click.Context, config_file: Path | None, since: str, as_json: bool) -> None:
    """Per severity: cases, time to respond and resolve (median, p90), breaches, compliance."""
    from agents.cases.sla import sla_rows
    from agents.units import format_duration, parse_duration

    config = load(ctx, config_file)
    try:
        window = parse_duration(since)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    store = case_store(config)
    rows = sla_rows(store.cases(), store.breached_cases(), datetime.now(UTC) - window)
    if as_json:
        print_json([row.to_dict() for row in rows])
        return
    table = Table(title=f"SLA, cases opened in the last {format_duration(window)}")
    for column in (
        "severity",
        "cases",
        "respond p50",
        "respond p90",
        "resolve p50",
        "resolve p90",
        "breached",
        "compliance",
    ):
        table.add_column(column)

    def dur(value: float | None) -> str:
        return "-" if value is None else format_duration(value)

    for row in rows:
        compliance = row.compliance_percent
        table.add_row(
            row.severity,
            str(row.cases),
            dur(row.respond_median_seconds),
            dur(row.respond_p90_seconds),
            dur(row.resolve_median_seconds),
            dur(row.resolve_p90_seconds),
            str(row.breached),
            "-" if compliance is None else f"{compliance}%",
        )
    Console().print(table)


@cases.command("due")
@config_option
@click.option(
    "--severity",
    type=click.Choice([s.value for s in Severity]),
    required=True,
    help="The case's severity.",
)
@click.option("--opened", required=True, help="When the case opened (ISO 8601; local if no zone).")
@json_option
@click.pass_context
def cases_due(
    ctx: click.Context, config_file: Path | None, severity: str, opened: str, as_json: bool
) -> None:
    """Response and resolution due times of a case opened at a given time."""
    from agents.cases.sla import BusinessCalendar, due_times, target_for

    config = load_config(config_path(config_file)) if _config_exists(config_file) else Config()
    calendar = BusinessCalendar.from_config(config.cases.calendar)
    when = _parse_time(opened, default_zone=calendar.zone)
    level = Severity(severity)
    try:
        due = due_times(level, when, calendar, target_for(config.cases, level))
    except (OverflowError, ValueError):
        raise click.BadParameter(
            "too far in the future to compute", param_hint="--opened"
        ) from None
    zone = calendar.zone
    data = {
        "severity": level.value,
        "opened": when.astimezone(zone).isoformat(),
        "response_due": due.response.astimezone(zone).isoformat(),
        "resolution_due": due.resolution.astimezone(zone).isoformat(),
        "calendar": {
            "timezone": config.cases.calendar.timezone,
            "hours": config.cases.calendar.hours,
            "weekdays": config.cases.calendar.weekdays,
        },
    }
    if as_json:
        print_json(data)
    else:
        click.echo(f"opened:         {data['opened']}")
        click.echo(f"response due:   {data['response_due']}")
        click.echo(f"resolution due: {data['resolution_due']}")
        click.echo(f"calendar:       {calendar.describe()}")


def _config_exists(config_file: Path | None) -> bool:
    return config_file is not None or config_path(None).exists()


def _add_fleet() -> None:
    from agents.fleet.cli import fleet

    cli.add_command(fleet)


_add_fleet()


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
