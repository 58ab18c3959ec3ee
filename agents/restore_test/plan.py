"""What the next restore test will do (`opsagent restore-test plan`): the snapshots the
runner would choose now, what keeps a source from being tested, and the plan's rules."""

from __future__ import annotations

from datetime import datetime

from agents.backup.errors import BackupError
from agents.backup.runner import open_repository
from agents.config import Config, RestoreTestConfig
from agents.records.backup import PlannedSnapshot, PlanSandbox, PlanVerify, RestoreTestPlan
from agents.restore_test.runner import choose_snapshots
from agents.units import format_duration


def next_run_plan(config: Config, next_run: datetime | None) -> RestoreTestPlan:
    """The plan of the run due at `next_run` (None: not scheduled), with the snapshots
    it would test if it ran now."""
    plan = config.restore_test or RestoreTestConfig()
    if config.backup is None:
        raise BackupError("no backup section in the config")
    repo = open_repository(config.backup)
    snaps, problems = choose_snapshots(repo, config, plan, None, None)
    return RestoreTestPlan(
        next_run=next_run.isoformat() if next_run else None,
        snapshots=[
            PlannedSnapshot(
                source=s.source, id=s.id, time=s.time.isoformat(), bytes=s.stats.get("bytes")
            )
            for s in snaps
        ],
        problems=[text for _, text in problems],
        snapshot_rule=plan.snapshot
        if isinstance(plan.snapshot, str)
        else f"random within {format_duration(plan.snapshot.random_within)}",
        sandbox=PlanSandbox(kind=plan.sandbox.kind, root=str(plan.sandbox.root)),
        verify=PlanVerify(
            sql=len(plan.verify.sql),
            commands=len(plan.verify.commands),
            data_full_every=format_duration(plan.verify.data.full_every),
        ),
        max_rto=format_duration(plan.max_rto) if plan.max_rto else None,
        max_rpo=format_duration(plan.max_rpo) if plan.max_rpo else None,
    )
