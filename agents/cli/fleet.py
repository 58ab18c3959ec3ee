"""`opsagent fleet ...`: the same runbook command on many hosts over SSH, one answer.

Parses the selection, calls `agents.fleet.commands` (which runs and audits) and prints;
`opsagent fleet history` lists the audited fleet commands.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from agents.cli.render import print_json
from agents.units import format_duration

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from agents.config import Inventory
    from agents.fleet.runner import HostResult
    from agents.ssh import Target

inventory_option = click.option(
    "--inventory",
    "inventory_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Inventory file (default: $OPSAGENT_INVENTORY, then /etc/opsagent/inventory.yml).",
)


def selection_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--host/--group/--label/--all, --parallel, --timeout, --json, --inventory."""
    for option in reversed(
        [
            inventory_option,
            click.option("--host", "hosts", multiple=True, help="This host (repeatable)."),
            click.option("--group", "groups", multiple=True, help="Hosts of this group."),
            click.option("--label", "labels", multiple=True, help="Hosts with label k=v."),
            click.option("--all", "everything", is_flag=True, help="Every host."),
            click.option(
                "--parallel",
                default=10,
                show_default=True,
                type=click.IntRange(1, 256),
                help="Hosts at a time.",
            ),
            click.option(
                "--timeout",
                default=None,
                type=float,
                help="Seconds per host (default: the inventory's command_timeout).",
            ),
            click.option("--json", "as_json", is_flag=True, help="Print JSON."),
        ]
    ):
        fn = option(fn)
    return fn


@click.group()
def fleet() -> None:
    """Runbook commands on many hosts over SSH."""


def _inventory(path: Path | None) -> Inventory:
    from agents.config import inventory_path, load_inventory

    return load_inventory(inventory_path(path))


def _execute(
    opts: dict[str, Any],
    action: str,
    command_for: Callable[[Target], str],
    parse: Callable[[str], Any] | None = None,
) -> tuple[Inventory, list[HostResult], float]:
    """Select, run with a live progress line, record the audit; returns the results."""
    from rich.console import Console

    from agents.fleet.commands import run_command
    from agents.fleet.runner import select

    inventory = _inventory(opts["inventory_file"])
    chosen = select(inventory, opts["hosts"], opts["groups"], opts["labels"], opts["everything"])
    timeout = opts["timeout"] or inventory.defaults.command_timeout.total_seconds()
    console = Console(stderr=True)
    live = sys.stderr.isatty() and not opts["as_json"]
    status = console.status("fleet: starting") if live else None

    def progress(done: int, running: int, failed: int, total: int) -> None:
        if status is not None:
            status.update(f"fleet: {done}/{total} done, {running} running, {failed} failed")

    if status is not None:
        status.start()
    try:
        results, seconds = run_command(
            inventory, chosen, action, command_for, opts["parallel"], timeout, progress, parse
        )
    finally:
        if status is not None:
            status.stop()
    return inventory, results, seconds


def _console() -> Console:
    """stdout; wide when piped (a fleet table is wider than 80 columns)."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 200)


def _summary(results: list[HostResult], title: str) -> Table:
    """One row per host: outcome, exit code, time, the line that says why."""
    from rich.markup import escape
    from rich.table import Table

    from agents.fleet.runner import last_line

    table = Table(title=title)
    for column in ("host", "outcome", "exit", "time", "detail"):
        table.add_column(column)
    for r in results:
        colour = "green" if r.ok else "red"
        detail = r.error or last_line(r.stderr if not r.ok else r.stdout)
        table.add_row(
            r.host,
            f"[{colour}]{r.status}[/]",
            "" if r.exit_code is None else str(r.exit_code),
            f"{r.duration_seconds:.1f}s",
            escape(detail[:100]),
        )
    return table


def _finish(
    ctx: click.Context,
    results: list[HostResult],
    as_json: bool,
    versions: dict[str, list[str]] | None = None,
) -> None:
    """Print the JSON document (or the tally on stderr); exit 1 if any host failed."""
    from agents.fleet.commands import run_document

    if as_json:
        print_json(run_document(results, versions).to_dict())
    failed = [r for r in results if not r.ok]
    if not as_json:
        ok = len(results) - len(failed)
        click.echo(f"{ok} ok, {len(failed)} failed of {len(results)} host(s)", err=True)
    ctx.exit(1 if failed else 0)


@fleet.command("exec")
@selection_options
@click.option("--collect", is_flag=True, help="Group hosts by identical output.")
@click.argument("command", nargs=-1, required=True)
@click.pass_context
def fleet_exec(ctx: click.Context, command: tuple[str, ...], collect: bool, **opts: Any) -> None:
    """Run any command on the hosts (after --): output prefixed by host, or collected."""
    from rich.console import Console

    text = command[0] if len(command) == 1 else shlex.join(command)
    _, results, _ = _execute(opts, "exec", lambda t: text)
    if not opts["as_json"]:
        if collect:
            groups: dict[str, list[str]] = {}
            for r in results:
                groups.setdefault(r.stdout + r.stderr + r.error, []).append(r.host)
            for output, hosts in groups.items():
                click.echo(f"== {', '.join(hosts)}")
                click.echo(output.rstrip("\n"))
        else:
            for r in results:
                for line in (r.stdout + r.stderr).splitlines():
                    click.echo(f"{r.host} | {line}")
                if r.error:
                    click.echo(f"{r.host} ! {r.error}")
        Console(stderr=True).print(_summary(results, f"exec: {text}"))
    _finish(ctx, results, opts["as_json"])


def _runbook(
    ctx: click.Context, opts: dict[str, Any], action: str, args: list[str], title: str
) -> list[HostResult]:
    from rich.console import Console

    from agents.fleet.runner import opsagent_command

    _, results, _ = _execute(opts, action, lambda t: opsagent_command(t, *args), parse=json.loads)
    if not opts["as_json"]:
        Console(stderr=True).print(_summary(results, title))
    return results


@fleet.command("status")
@selection_options
@click.pass_context
def fleet_status(ctx: click.Context, **opts: Any) -> None:
    """Each host's `opsagent status`: version, uptime, checks, backups, restore test,
    cases; flags mixed versions. Exit 1 if any host is unreachable or not well."""
    from rich.markup import escape
    from rich.table import Table

    from agents.fleet.commands import versions_of
    from agents.fleet.runner import last_line, opsagent_command

    _, results, _ = _execute(
        opts, "status", lambda t: opsagent_command(t, "status", "--json"), parse=json.loads
    )
    versions = versions_of(results)
    mixed = len(versions) > 1
    if not opts["as_json"]:
        table = Table(title="fleet status")
        for column in (
            "host",
            "version",
            "up",
            "checks",
            "last backup",
            "restore test",
            "cases",
            "headline",
        ):
            table.add_column(column)
        for r in results:
            if not isinstance(r.data, dict):
                table.add_row(
                    r.host,
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    f"[red]{escape(r.error or last_line(r.stderr))}[/]",
                )
                continue
            table.add_row(r.host, *_status_cells(r.data))
        _console().print(table)
        if mixed:
            spread = "; ".join(f"{v} on {', '.join(h)}" for v, h in sorted(versions.items()))
            click.echo(f"MIXED VERSIONS: {spread}")
    _finish(ctx, results, opts["as_json"], versions)


def _status_cells(doc: dict[str, Any]) -> list[str]:
    from rich.markup import escape

    from agents.records import StatusDocument

    status = StatusDocument.read(doc)
    agent = status.agent
    up = format_duration(agent.uptime_seconds or 0) if agent.running else "[red]down[/]"
    if agent.mode == "timers":  # no daemon by design: the timers run the jobs
        inactive = [t.unit for t in agent.timers if t.active is False]
        up = f"[red]{len(inactive)} timer(s) inactive[/]" if inactive else "timers"
    failing = [c.name for c in status.checks if c.status != "ok"]
    checks = f"[red]{len(failing)} failing[/]" if failing else f"{len(status.checks)} ok"
    ages = [b.age_seconds for b in status.backups if b.age_seconds is not None]
    backup = f"{format_duration(max(ages))} ago" if ages else "never"
    if any(b.status not in (None, "ok") for b in status.backups):
        backup = f"[red]failing[/], {backup}"
    restore = status.restore_test
    if restore is None:
        restore_text = "none"
    else:
        outcome = "passed" if restore.status == "ok" else "[red]FAILED[/]"
        restore_text = f"{outcome} {format_duration(restore.age_seconds or 0)} ago"
    counts: dict[str, int] = {}
    for case in status.cases:
        counts[case.severity] = counts.get(case.severity, 0) + 1
    cases = " ".join(f"{n} {s}" for s, n in counts.items()) or "-"
    colour = "green" if status.ok else "red"
    return [
        str(agent.version),
        up,
        checks,
        backup,
        restore_text,
        cases,
        f"[{colour}]{escape(status.headline[:70])}[/]",
    ]


@fleet.command("checks")
@selection_options
@click.pass_context
def fleet_checks(ctx: click.Context, **opts: Any) -> None:
    """Run every configured check once on each host (`opsagent monitor checks`)."""
    results = _runbook(ctx, opts, "checks", ["monitor", "checks", "--json"], "checks")
    _finish(ctx, results, opts["as_json"])


@fleet.group("backup")
def fleet_backup() -> None:
    """Backups on many hosts."""


@fleet_backup.command("run")
@selection_options
@click.pass_context
def fleet_backup_run(ctx: click.Context, **opts: Any) -> None:
    """Back up now on each host (`opsagent backup run`)."""
    results = _runbook(ctx, opts, "backup run", ["backup", "run", "--json"], "backup run")
    _finish(ctx, results, opts["as_json"])


@fleet.group("restore-test")
def fleet_restore_test() -> None:
    """Restore tests on many hosts."""


@fleet_restore_test.command("run")
@selection_options
@click.pass_context
def fleet_restore_test_run(ctx: click.Context, **opts: Any) -> None:
    """Run a restore test now on each host (`opsagent restore-test run`)."""
    results = _runbook(
        ctx, opts, "restore-test run", ["restore-test", "run", "--json"], "restore-test run"
    )
    _finish(ctx, results, opts["as_json"])


@fleet.group("report")
def fleet_report() -> None:
    """Reports gathered from many hosts and merged into one."""


@fleet_report.command("recovery")
@selection_options
@click.option("--since", default="90d", show_default=True, help="Length of the period.")
@click.option("--until", default=None, help="End of the period, ISO 8601 (default: now).")
@click.option("--source", default=None, help="Only this backup source.")
@click.option(
    "--out",
    "out_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the report to FILE.html or FILE.json.",
)
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Signing key (default: the inventory's state_dir/report-signing.key).",
)
@click.pass_context
def fleet_report_recovery(
    ctx: click.Context,
    since: str,
    until: str | None,
    source: str | None,
    out_file: Path | None,
    key_file: Path | None,
    **opts: Any,
) -> None:
    """Each host's recovery report over SSH, merged with a per-host table; a host that
    fails is a row with its error. Signed with the operator's key."""
    from datetime import UTC, datetime

    from agents.cli.report import check_out, period, sign_and_emit
    from agents.fleet.runner import last_line, opsagent_command
    from agents.reports.merge import merge_recovery
    from agents.reports.signing import KEY_FILE_NAME
    from agents.units import printable

    start, end = period(since, until)
    check_out(out_file)
    args = ["report", "recovery", "--since", since, "--until", end.isoformat(), "--json"]
    args += ["--source", source] if source else []
    inventory, results, _ = _execute(
        opts, "report recovery", lambda t: opsagent_command(t, *args), parse=json.loads
    )
    answers = []
    for r in results:
        answered = r.ok and isinstance(r.data, dict)
        why = r.error or last_line(r.stderr) or f"{r.status}, exit {r.exit_code}"
        answers.append((r.host, r.data if answered else None, None if answered else why))
    doc = merge_recovery(answers, start, end, datetime.now(UTC), source)
    for row in doc["per_host"]:
        if not row["ok"]:
            # the error may quote the host's own output: no escapes onto this terminal
            click.echo(f"opsagent: {row['host']}: {printable(row['error'])}", err=True)
    default_key = inventory.state_dir.expanduser() / KEY_FILE_NAME
    sign_and_emit(doc, key_file, default_key, out_file, opts["as_json"])


@fleet.command("upgrade")
@selection_options
@click.option("--to", "version", required=True, help="The version to install.")
@click.option("--canary", default=1, show_default=True, help="Hosts upgraded first, alone.")
@click.option("--batch", default=5, show_default=True, help="Hosts per batch after that.")
@click.option(
    "--wait",
    default=300.0,
    show_default=True,
    help="Seconds to wait for a host's agent to come back healthy.",
)
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.pass_context
def fleet_upgrade(
    ctx: click.Context,
    version: str,
    canary: int,
    batch: int,
    wait: float,
    dry_run: bool,
    **opts: Any,
) -> None:
    """Staged upgrade: the canary first, then batches, each host's agent back on the new
    version with every check passing before the next; stops at the first failure."""
    from agents.fleet import upgrade
    from agents.fleet.commands import plan_document, roll_out, upgrade_document
    from agents.fleet.runner import select

    inventory = _inventory(opts["inventory_file"])
    chosen = select(inventory, opts["hosts"], opts["groups"], opts["labels"], opts["everything"])
    rollout = upgrade.plan(chosen, version, canary, batch)
    if dry_run:
        if opts["as_json"]:
            print_json(plan_document(rollout, chosen, version).to_dict())
        else:
            for phase in rollout.phases:
                click.echo(f"{phase.name}:")
                for target in phase.hosts:
                    click.echo(f"  {target.name}: {upgrade.upgrade_command(target, version)}")
            click.echo(
                "each phase waits for its agents to run"
                f" {version} with every check passing (up to {wait:.0f}s)"
            )
        return
    timeout = opts["timeout"] or inventory.defaults.command_timeout.total_seconds()
    say = (lambda text: None) if opts["as_json"] else (lambda text: click.echo(text, err=True))
    results = roll_out(inventory, chosen, rollout, timeout, wait, say)
    if opts["as_json"]:
        print_json(upgrade_document(rollout, results).to_dict())
    else:
        for name in rollout.upgraded:
            click.echo(f"{name}: upgraded to {version}")
        for name, reason in rollout.failed.items():
            click.echo(f"{name}: FAILED: {reason}")
        if rollout.untouched:
            click.echo(f"not touched: {', '.join(rollout.untouched)}")
    ctx.exit(0 if rollout.ok else 1)


@fleet.command("history")
@inventory_option
@click.option("--limit", default=50, show_default=True, help="How many records to show.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def fleet_history(inventory_file: Path | None, limit: int, as_json: bool) -> None:
    """Past fleet commands: who, when, which hosts, what command, outcome."""
    from rich.markup import escape
    from rich.table import Table

    from agents.audit import entry
    from agents.fleet.commands import history

    records = history(_inventory(inventory_file), limit)
    if as_json:
        print_json([entry(r).to_dict() for r in records])
        return
    table = Table(title="fleet history, newest first")
    for column in ("when", "who", "action", "hosts", "outcome", "command"):
        table.add_column(column)
    for r in records:
        table.add_row(
            r.at.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
            r.actor,
            r.action,
            r.target,
            r.outcome,
            escape(str(r.detail.get("command", ""))[:60]),
        )
    _console().print(table)


@fleet.command("trust")
@inventory_option
@click.argument("host")
def fleet_trust(inventory_file: Path | None, host: str) -> None:
    """Fetch and print HOST's key for a person to verify and add to known_hosts
    (nothing is written: compare the fingerprint with the host's console first)."""
    from agents.fleet.commands import presented_key
    from agents.ssh import fingerprint

    inventory = _inventory(inventory_file)
    target, key = presented_key(inventory, host)
    name = target.known_hosts_name()
    click.echo(f"{host} presents {key.get_name()} {fingerprint(key)}")
    click.echo("Verify it on the host itself: ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub")
    click.echo(f"then append this line to {inventory.known_hosts}:")
    click.echo(f"{name} {key.get_name()} {key.get_base64()}")
