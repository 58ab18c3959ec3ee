"""The scheduler: runs on time, never overlaps a job, catches up stale daily jobs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agents.config import ExporterConfig, Schedule
from agents.daemon import Daemon, exposure_problem
from agents.jobs import Job, JobContext, next_runs
from agents.results import CheckResult, Status
from agents.state import StateDB


def ok_result(name: str, kind: str = "test") -> CheckResult:
    return CheckResult(name=name, kind=kind, host="h", status=Status.OK, summary="fine")


def run_for(daemon: Daemon, seconds: float) -> None:
    thread = threading.Thread(target=daemon.run, args=("test", False), daemon=True)
    thread.start()
    time.sleep(seconds)
    daemon.stop()
    thread.join(10)
    assert not thread.is_alive()


def test_job_every_second_runs(tmp_path: Path) -> None:
    runs: list[float] = []

    def body(ctx: JobContext) -> CheckResult:
        runs.append(time.monotonic())
        return ok_result("tick")

    job = Job("tick", "test", Schedule(every=timedelta(seconds=1)), body)
    daemon = Daemon([job], StateDB(tmp_path / "state.db"), "h")
    run_for(daemon, 3.6)
    assert 3 <= len(runs) <= 4
    state = daemon.state.job("tick")
    assert state is not None and state.last_status == "ok" and state.last_success is not None


def test_same_job_never_overlaps(tmp_path: Path) -> None:
    active = 0
    peak = 0
    lock = threading.Lock()
    runs = 0

    def body(ctx: JobContext) -> CheckResult:
        nonlocal active, peak, runs
        with lock:
            active += 1
            runs += 1
            peak = max(peak, active)
        ctx.stop.wait(2.5)
        with lock:
            active -= 1
        return ok_result("slow")

    job = Job("slow", "test", Schedule(every=timedelta(seconds=1)), body)
    daemon = Daemon([job], StateDB(tmp_path / "state.db"), "h")
    run_for(daemon, 5.5)
    assert peak == 1
    assert runs >= 2
    assert daemon.skipped["slow"] >= 2


def test_slow_job_does_not_delay_others(tmp_path: Path) -> None:
    fast_runs = 0

    def slow(ctx: JobContext) -> CheckResult:
        ctx.stop.wait(10)
        return ok_result("slow")

    def fast(ctx: JobContext) -> CheckResult:
        nonlocal fast_runs
        fast_runs += 1
        return ok_result("fast")

    every = Schedule(every=timedelta(seconds=1))
    daemon = Daemon(
        [Job("slow", "test", every, slow), Job("fast", "test", every, fast)],
        StateDB(tmp_path / "state.db"),
        "h",
    )
    run_for(daemon, 3.6)
    assert fast_runs >= 3


def _far_daily() -> Schedule:
    later = datetime.now(ZoneInfo("America/Toronto")) + timedelta(hours=12)
    return Schedule(daily_at=later.strftime("%H:%M"), timezone="America/Toronto")


def test_stale_daily_job_catches_up_at_start(tmp_path: Path) -> None:
    state = StateDB(tmp_path / "state.db")
    old = datetime.now(UTC) - timedelta(days=3)
    state.record_result(
        CheckResult(
            name="backup", kind="backup", host="h", status=Status.OK, summary="old", started_at=old
        )
    )
    ran = threading.Event()

    def body(ctx: JobContext) -> CheckResult:
        ran.set()
        return ok_result("backup", "backup")

    job = Job("backup", "backup", _far_daily(), body, catch_up=True)
    daemon = Daemon([job], state, "h")
    thread = threading.Thread(target=daemon.run, args=("test", False), daemon=True)
    thread.start()
    assert ran.wait(5), "stale backup was not run at start"
    daemon.stop()
    thread.join(10)
    last = state.job("backup")
    assert last is not None and last.last_success is not None
    assert datetime.now(UTC) - last.last_success < timedelta(minutes=1)


def test_fresh_daily_job_waits_for_its_time(tmp_path: Path) -> None:
    state = StateDB(tmp_path / "state.db")
    state.record_result(ok_result("backup", "backup"))
    ran = threading.Event()

    def body(ctx: JobContext) -> CheckResult:
        ran.set()
        return ok_result("backup", "backup")

    daemon = Daemon([Job("backup", "backup", _far_daily(), body, catch_up=True)], state, "h")
    assert daemon.catch_up() == []
    run_for(daemon, 1.0)
    assert not ran.is_set()


def test_never_run_daily_job_runs_at_start(tmp_path: Path) -> None:
    ran = threading.Event()

    def body(ctx: JobContext) -> CheckResult:
        ran.set()
        return ok_result("backup", "backup")

    daemon = Daemon(
        [Job("backup", "backup", _far_daily(), body, catch_up=True)],
        StateDB(tmp_path / "state.db"),
        "h",
    )
    assert daemon.catch_up() == ["backup"]
    assert ran.wait(5)
    assert daemon.wait_idle(30)


def test_exception_becomes_error_result_and_reaches_sinks(tmp_path: Path) -> None:
    seen: list[CheckResult] = []

    def body(ctx: JobContext) -> CheckResult:
        raise RuntimeError("disk on fire\nsecond line")

    def broken_sink(result: CheckResult) -> None:
        raise ValueError("sink broken")

    job = Job("boom", "test", Schedule(every=timedelta(seconds=1)), body)
    daemon = Daemon([job], StateDB(tmp_path / "state.db"), "h", sinks=[broken_sink, seen.append])
    assert daemon.launch("boom")
    assert daemon.wait_idle(30)
    assert seen and seen[0].status is Status.ERROR
    assert seen[0].summary == "disk on fire second line"
    state = daemon.state.job("boom")
    assert state is not None and state.last_status == "error" and state.last_success is None
    assert state.consecutive_failures == 1


def test_next_runs_in_time_zone() -> None:
    schedule = Schedule(daily_at="02:00", timezone="America/Toronto")
    job = Job("backup", "backup", schedule, lambda ctx: ok_result("backup"))
    when = next_runs([job])["backup"]
    assert when is not None
    local = when.astimezone(ZoneInfo("America/Toronto"))
    assert (local.hour, local.minute) == (2, 0)
    assert timedelta(0) < when - datetime.now(UTC) <= timedelta(days=1)


def test_job_freshness_fails_a_stale_backup(tmp_path: Path) -> None:
    from agents.jobs import freshness_job

    state = StateDB(tmp_path / "state.db")
    backup = Job("backup", "backup", Schedule(daily_at="02:00"), lambda ctx: ok_result("b"))
    check = freshness_job(backup, state, "h")
    context = JobContext(stop=threading.Event(), emit=lambda r: None)
    assert check.body(context).summary == "not due yet"

    def success(hours_ago: float) -> CheckResult:
        when = datetime.now(UTC) - timedelta(hours=hours_ago)
        return CheckResult(
            name="backup", kind="backup", host="h", status=Status.OK, summary="ok", started_at=when
        )

    state.record_result(success(2))
    fresh = check.body(context)
    assert fresh.ok and fresh.summary.startswith("last success 2h")
    state.record_result(success(30))
    # a newer failure does not count as a success
    state.record_result(
        CheckResult(name="backup", kind="backup", host="h", status=Status.FAILED, summary="no")
    )
    stale = check.body(context)
    assert stale.status is Status.FAILED and stale.severity.value == "critical"
    assert stale.summary.startswith("last success 1d6h") and stale.summary.endswith("over 1d1h")


def test_checks_share_a_bounded_pool(tmp_path: Path) -> None:
    active = 0
    peak = 0
    lock = threading.Lock()

    def body(ctx: JobContext) -> CheckResult:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.3)
        with lock:
            active -= 1
        return ok_result("c")

    every = Schedule(every=timedelta(seconds=30))
    jobs = [Job(f"c{i}", "disk", every, body, resource="checks") for i in range(8)]
    daemon = Daemon(jobs, StateDB(tmp_path / "state.db"), "h", limits={"checks": 3})
    for job in jobs:
        daemon.launch(job.name)
    assert daemon.wait_idle(10)
    assert peak == 3


def test_only_the_repository_s_jobs_keep_freed_memory_while_they_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backup, prune or restore test (resource "repository") runs inside
    `memory_kept_for_job`, which gives the memory back when it ends; a check does not."""
    from agents.backup import heap

    calls: list[str] = []
    monkeypatch.setattr(heap, "keep_freed_memory", lambda: calls.append("keep") or True)
    monkeypatch.setattr(heap, "give_memory_back", lambda: calls.append("give back") or True)
    inside: dict[str, int] = {}

    def body_of(name: str) -> Callable[[JobContext], CheckResult]:
        def body(ctx: JobContext) -> CheckResult:
            inside[name] = heap._jobs  # jobs inside the scope as this one runs
            return ok_result(name)

        return body

    every = Schedule(every=timedelta(seconds=30))
    jobs = [
        Job("backup", "backup", every, body_of("backup"), resource="repository"),
        Job("disk", "disk", every, body_of("disk"), resource="checks"),
    ]
    daemon = Daemon(jobs, StateDB(tmp_path / "state.db"), "h")
    for name in ("backup", "disk"):
        daemon.launch(name)
        assert daemon.wait_idle(10)
    assert inside == {"backup": 1, "disk": 0}
    assert calls == ["keep", "give back"]
    assert heap._jobs == 0


def test_a_check_that_keeps_passing_logs_at_debug_not_all_day(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Failures are warnings, a status change is info, the same pass again is debug: a
    check every 5 s must not write 17,000 info lines a day."""
    import logging

    outcomes = iter([Status.OK, Status.OK, Status.FAILED, Status.FAILED, Status.OK, Status.OK])

    def body(ctx: JobContext) -> CheckResult:
        return CheckResult("web", "http", "h", next(outcomes), "x")

    job = Job("web", "http", Schedule(every=timedelta(seconds=1)), body, history=False)
    daemon = Daemon([job], StateDB(tmp_path / "state.db"), "h")
    caplog.set_level(logging.DEBUG, logger="opsagent.daemon")
    for _ in range(6):
        daemon._run_job_now(job)
    levels = [r.levelname for r in caplog.records if r.getMessage().startswith("web ")]
    assert levels == ["INFO", "DEBUG", "WARNING", "WARNING", "INFO", "DEBUG"]


@pytest.mark.parametrize(
    ("listen", "tls", "basic_auth", "plain", "refused_for"),
    [
        ("127.0.0.1:9108", False, False, False, None),
        ("127.3.2.1:9108", False, False, False, None),
        ("[::1]:9108", False, False, False, None),
        ("localhost:9108", False, False, False, None),
        ("0.0.0.0:9108", False, False, False, "without TLS and basic auth"),
        ("[::]:9108", False, False, False, "without TLS and basic auth"),
        ("10.0.0.5:9108", True, False, False, "without basic auth"),
        ("10.0.0.5:9108", False, True, False, "without TLS:"),
        ("10.0.0.5:9108", False, True, True, None),
        ("10.0.0.5:9108", False, False, True, "without TLS and basic auth"),
        ("agent.example:9108", True, True, False, None),
    ],
)
def test_exposure_beyond_loopback_needs_tls_and_basic_auth(
    listen: str, tls: bool, basic_auth: bool, plain: bool, refused_for: str | None
) -> None:
    exporter = ExporterConfig(listen=listen, allow_plain_http=plain)
    problem = exposure_problem(exporter, tls=tls, basic_auth=basic_auth)
    if refused_for is None:
        assert problem is None
    else:
        assert problem is not None and refused_for in problem and "\n" not in problem
