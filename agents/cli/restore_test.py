"""`opsagent restore-test ...`: run a restore test now, list past runs, show the next one's plan."""

from __future__ import annotations

from pathlib import Path

import click

from agents.cli.common import (
    EXIT_RUNTIME,
    backup_config,
    config_option,
    exit_for,
    json_option,
    load,
    record_outcome,
)
from agents.cli.render import print_json
from agents.results import Severity, Status, run_guarded


@click.group("restore-test")
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
    from rich.console import Console
    from rich.table import Table

    from agents.config import RestoreTestConfig
    from agents.records import RestoreTestDetails
    from agents.records.backup import JobResult
    from agents.restore_test.runner import run_restore_test
    from agents.state import StateDB

    config = load(ctx, config_file)
    plan = config.restore_test or RestoreTestConfig()
    if plan.sandbox.kind == "local" or sandbox_kind == "local":  # else the sandbox host's
        from agents.backup import unlock
        from agents.backup.heap import keep_freed_memory

        unlock.begin(config.backup)  # scrypt runs while the sandbox is swept
        keep_freed_memory()  # every blob restored, re-read and checked lands in new buffers
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
        print_json(JobResult.of(result).to_dict())
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
    from rich.console import Console
    from rich.table import Table

    from agents.records import RestoreTestDetails
    from agents.records.backup import JobResult
    from agents.state import StateDB

    config = load(ctx, config_file)
    runs = StateDB(config.state_db).runs("restore_test", limit)
    if as_json:
        print_json([JobResult.of(r).to_dict() for r in runs])
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
    import yaml

    from agents.jobs import next_runs, restore_test_job
    from agents.restore_test.plan import next_run_plan

    config = load(ctx, config_file)
    job = restore_test_job(config)
    when = next_runs([job])[job.name] if job else None
    backup_config(config)  # no backup section: a usage error
    data = next_run_plan(config, when).to_dict()
    if as_json:
        print_json(data)
    else:
        click.echo(yaml.safe_dump(data, sort_keys=False), nl=False)
