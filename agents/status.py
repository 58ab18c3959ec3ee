"""`opsagent status`: this host on one screen, the thing that matters most first.

Read from the state database and the case store only (no repository, no network beyond
the store), so it answers in well under a second at 03:00 even when S3 or the daemon is
down. The same document is served as JSON at `/status` on the exporter.

A problem is anything that needs a person: the daemon not running (or, on a host run by
the systemd timers, a timer not active or a job gone stale), a failing check, backup or
restore test, a case store that cannot be read, notifications that failed for good, and
any open case of major severity or above. Problems come most urgent first: opsagent's
own (not running, a timer inactive, the store unreadable, notifications failed for good)
lead, because until they are fixed the rest may be stale or nobody told; then the least
time left on the SLA clock, which is the clock of the case that tracks the problem, else
the response clock a case of its severity would get under the policy from when it began.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from agents.cases.sla import BusinessCalendar, due_times, target_for
from agents.config import Config
from agents.errors import OpsagentError
from agents.freshness import freshness, limit_of, watched_schedules
from agents.records import (
    JOB_KINDS,
    AgentRow,
    BackupDetails,
    BackupRow,
    BackupSourceDetails,
    CaseRow,
    CheckRow,
    ProblemRow,
    RepositoryRow,
    RestoreTestDetails,
    RestoreTestRow,
    StatusDocument,
    TimerRow,
)
from agents.results import Severity
from agents.state import JobState, StateDB
from agents.timers import timer_driven, timer_states
from agents.units import format_duration, format_size, printable

_RANK = {Severity.CRITICAL: 0, Severity.MAJOR: 1, Severity.MODERATE: 2, Severity.MINOR: 3}
# open cases at these severities are problems on their own, whatever opened them
CASE_PROBLEM_SEVERITIES = frozenset({Severity.CRITICAL, Severity.MAJOR})


# problems of opsagent itself: until they are fixed nothing else on the screen can be
# trusted to be current, or anybody to have been told, so they come first
WATCHER_SOURCES = frozenset({"agent", "timer", "cases", "notifications"})


@dataclass(frozen=True)
class Problem:
    """One thing that is wrong, with the SLA clock that ranks it."""

    severity: Severity
    text: str
    since: datetime | None
    source: str  # the case source it would carry: kind:name
    due: datetime | None = None  # its case's clock, else the response clock it would get
    case: int | None = None  # the case that tracks it
    clock: str = "response"

    def rank(self) -> tuple[int, float, int, float]:
        """The watcher's own problems first, by severity; then least time left on the
        SLA clock; severity, then the oldest, break ties."""
        since = self.since.timestamp() if self.since else 0.0
        if self.source.partition(":")[0] in WATCHER_SOURCES:
            return (0, 0.0, _RANK[self.severity], since)
        assert self.due is not None
        return (1, self.due.timestamp(), _RANK[self.severity], since)


@dataclass(frozen=True)
class CaseView:
    """What the case store says: open cases, undelivered notifications, or why it cannot."""

    cases: list[CaseRow]
    error: str | None
    undelivered: list[str]


def collect(config: Config, now: datetime | None = None) -> StatusDocument:
    """The status document: agent, checks, backups, restore test, repository, cases."""
    now = now or datetime.now(UTC)
    state = StateDB(config.state_db)
    records = {r.name: r for r in state.jobs()}
    problems: list[Problem] = []

    agent = _agent(state, now)
    if agent.mode == "timers":
        problems += _timer_problems(agent.timers)
        records = _with_timer_freshness(config, records, state.timer_runs(), now)
    elif not agent.running:
        stopped = datetime.fromisoformat(agent.stopped_at) if agent.stopped_at else None
        problems.append(Problem(Severity.CRITICAL, "agent is not running", stopped, "agent"))

    checks = _check_rows(records, problems)
    backups = _backup_rows(config, records, now, problems)
    restore = _restore_test_row(records, now, problems)
    repository = _repository_row(records)
    view = _case_view(config, now)
    problems += _case_problems(view, agent, state)
    problems = _ranked(problems, view.cases, config, now)
    return StatusDocument(
        host=config.host,
        ok=not problems,
        headline=_headline(problems, view.cases, now),
        problems=[_problem_row(p, now) for p in problems],
        agent=agent,
        checks=checks,
        backups=backups,
        restore_test=restore,
        repository=repository,
        cases=view.cases,
        cases_error=view.error,
        generated_at=now.isoformat(),
    )


def _check_rows(records: dict[str, JobState], problems: list[Problem]) -> list[CheckRow]:
    """Each check's row (the jobs have sections of their own); a failing one adds its
    problem."""
    checks: list[CheckRow] = []
    for record in records.values():
        if record.kind in JOB_KINDS:
            continue
        result = record.last_result
        severity = result.severity if result else Severity.MAJOR
        ok = record.last_status == "ok"
        checks.append(
            CheckRow(
                name=record.name,
                kind=record.kind,
                status=record.last_status,
                since=_iso(record.status_since),
                last_run=_iso(record.last_finish),
                summary=result.summary if result else "",
                severity=severity.value,
            )
        )
        if not ok:
            text = f"check {record.name} failing"
            if record.kind == "job_freshness":
                text = f"{record.name.removesuffix('-freshness')} stale: {_summary(record)}"
            problems.append(
                Problem(severity, text, record.status_since, f"{record.kind}:{record.name}")
            )
    return checks


def _backup_rows(
    config: Config, records: dict[str, JobState], now: datetime, problems: list[Problem]
) -> list[BackupRow]:
    """Each configured source's backups; a failing one adds its problem."""
    backups: list[BackupRow] = []
    sources = [s.name for s in config.backup.sources] if config.backup else []
    for source in sources:
        record = records.get(f"backup/{source}")
        if record is None:
            backups.append(BackupRow(source=source, status=None, last_success=None))
            continue
        stats = (
            BackupSourceDetails.of(record.last_result)
            if record.last_result
            else BackupSourceDetails()
        )
        backups.append(
            BackupRow(
                source=source,
                status=record.last_status,
                last_success=_iso(record.last_success),
                last_run=_iso(record.last_finish),
                age_seconds=_age(record.last_success, now),
                bytes=stats.bytes,
                bytes_added=stats.bytes_added,
                summary=_summary(record),
            )
        )
        if record.last_status != "ok":
            problems.append(
                Problem(
                    Severity.CRITICAL,
                    f"backup of {source} failing",
                    record.status_since,
                    f"backup_source:backup/{source}",
                )
            )
    return backups


def _restore_test_row(
    records: dict[str, JobState], now: datetime, problems: list[Problem]
) -> RestoreTestRow | None:
    """The last restore test, if any ran; a failed one adds its problem."""
    record = records.get("restore_test")
    if record is None:
        return None
    tested = (
        RestoreTestDetails.of(record.last_result) if record.last_result else RestoreTestDetails()
    )
    if record.last_status != "ok":
        problems.append(
            Problem(
                Severity.CRITICAL,
                "restore test failing",
                record.status_since,
                "restore_test:restore_test",
            )
        )
    return RestoreTestRow(
        status=record.last_status,
        last_run=_iso(record.last_finish),
        last_success=_iso(record.last_success),
        age_seconds=_age(record.last_finish, now),
        rto_seconds=tested.rto_seconds,
        rpo_seconds=tested.rpo_seconds,
        summary=_summary(record),
    )


def _repository_row(records: dict[str, JobState]) -> RepositoryRow | None:
    """The repository as the last backup saw it, once one has run."""
    record = records.get("backup")
    if record is None or record.last_result is None:
        return None
    backup = BackupDetails.of(record.last_result)
    return RepositoryRow(
        url=backup.repository,
        snapshots=backup.snapshots,
        bytes=backup.repository_bytes,
        as_of=_iso(record.last_finish),
    )


def _case_problems(view: CaseView, agent: AgentRow, state: StateDB) -> list[Problem]:
    """The case store unreadable, the running agent unable to update it (read from its
    upkeep: a read-only database this command can still read), notifications failed."""
    problems: list[Problem] = []
    if view.error is not None:
        problems.append(Problem(Severity.CRITICAL, view.error, None, "cases"))
    outbox = next((r for r in state.upkeep() if r.kind == "outbox"), None)
    if (
        view.error is None
        and agent.running
        and outbox is not None
        and outbox.last_status != "ok"
        and outbox.last_result is not None
        and "notifications wait" in outbox.last_result.summary
    ):  # the agent cannot use the store though this command can (a read-only database)
        problems.append(
            Problem(
                Severity.CRITICAL,
                f"the agent cannot update cases: {outbox.last_result.summary}",
                outbox.status_since,
                "cases",
            )
        )
    problems += [Problem(Severity.MAJOR, text, None, "notifications") for text in view.undelivered]
    return problems


def _problem_row(problem: Problem, now: datetime) -> ProblemRow:
    """A ranked problem as the document shows it, with the time left on its clock."""
    return ProblemRow(
        severity=problem.severity.value,
        text=problem.text,
        since=_iso(problem.since),
        case=problem.case,
        clock=problem.clock if problem.case is not None else None,
        due=_iso(problem.due),
        seconds_left=round((problem.due - now).total_seconds()) if problem.due else None,
    )


def _ranked(
    problems: list[Problem], cases: list[CaseRow], config: Config, now: datetime
) -> list[Problem]:
    """Every problem on an SLA clock, most urgent first. A problem takes the open case
    with its source; an open case at major or above that no problem took is a problem
    of its own; the rest get the response clock a case would get from when they began."""
    calendar = BusinessCalendar.from_config(config.cases.calendar)
    untaken = list(cases)
    clocked = []
    for problem in problems:
        case = next((c for c in untaken if c.source == problem.source), None)
        if case is not None:
            untaken.remove(case)
            clocked.append(_tracked_by(problem, case))
            continue
        opened = problem.since or now
        target = target_for(config.cases, problem.severity)
        due = due_times(problem.severity, opened, calendar, target).response
        clocked.append(replace(problem, due=due))
    for case in untaken:
        severity = Severity(case.severity)
        if severity in CASE_PROBLEM_SEVERITIES:
            opened = datetime.fromisoformat(case.first_seen)
            problem = Problem(severity, case.title, opened, case.source)
            clocked.append(_tracked_by(problem, case))
    return sorted(clocked, key=Problem.rank)


def _tracked_by(problem: Problem, case: CaseRow) -> Problem:
    return replace(problem, due=datetime.fromisoformat(case.due), case=case.id, clock=case.clock)


def _agent(state: StateDB, now: datetime) -> AgentRow:
    from agents import __version__

    started = state.meta("daemon_started_at")
    stopped = state.meta("daemon_stopped_at")
    pid = state.meta("daemon_pid")
    running = bool(started) and not stopped and pid is not None and _alive(int(pid))
    started_at = datetime.fromisoformat(started) if started else None
    runs = state.timer_runs()
    by_timers = timer_driven(runs, started_at, running)
    timers = []
    if by_timers:
        states = timer_states(sorted(runs))
        for unit in sorted(runs):
            timers.append(
                TimerRow(
                    unit=unit,
                    active=states[unit].active,
                    state=states[unit].state,
                    last_run=_iso(runs[unit]),
                    age_seconds=_age(runs[unit], now),
                )
            )
    return AgentRow(
        # the timers start the installed version at their next run
        version=__version__ if by_timers else state.meta("daemon_version") or __version__,
        cli_version=__version__,
        mode="timers" if by_timers else "daemon",
        running=running,
        pid=int(pid) if pid and running else None,
        started_at=_iso(started_at),
        uptime_seconds=_age(started_at, now) if running else None,
        stopped_at=stopped or None,
        timers=timers,
    )


def _timer_problems(timers: list[TimerRow]) -> list[Problem]:
    """A timer systemd says is not active runs nothing; one it could not be asked about
    is judged by its job's freshness alone."""
    return [
        Problem(
            Severity.CRITICAL,
            f"{t.unit} not active ({t.state}): its job no longer runs",
            None,
            f"timer:{t.unit}",
        )
        for t in timers
        if t.active is False
    ]


def _with_timer_freshness(
    config: Config, records: dict[str, JobState], runs: dict[str, datetime], now: datetime
) -> dict[str, JobState]:
    """On a host run by its timers no daemon watches job freshness: judge it here, in
    place of whatever a former daemon last recorded."""
    judged = {name: r for name, r in records.items() if r.kind != "job_freshness"}
    began = min(runs.values())
    for job, schedule in watched_schedules(config).items():
        record = records.get(job)
        last = record.last_success if record else None
        limit = limit_of(schedule)
        result = freshness(job, config.host, last, limit, began, now, "the timers' first run")
        judged[result.name] = JobState(
            name=result.name,
            kind=result.kind,
            last_start=None,
            last_finish=now,
            last_success=last,
            last_status=result.status.value,
            last_result=result,
            consecutive_failures=0 if result.ok else 1,
            status_since=(last or began) + (limit if not result.ok else timedelta(0)),
        )
    return dict(sorted(judged.items()))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, alive
    return True


def _case_view(config: Config, now: datetime) -> CaseView:
    from agents.cases.store import CaseStore

    try:
        store = CaseStore(config.cases_store)
        open_cases = store.cases(status="open")
        undelivered = store.notification_problems(now)
    except OpsagentError as exc:
        return CaseView([], str(exc), [])
    rows = []
    for case in open_cases:
        responded = case.acknowledged_at is not None
        due = case.resolution_due if responded else case.response_due
        rows.append(
            CaseRow(
                id=case.id,
                severity=case.severity.value,
                status=case.status,
                title=case.title,
                source=case.source,
                first_seen=case.first_seen.isoformat(),
                clock="resolution" if responded else "response",
                due=due.isoformat(),
                seconds_left=round((due - now).total_seconds()),
            )
        )
    rows.sort(key=lambda c: (c.seconds_left, _RANK[Severity(c.severity)]))
    return CaseView(rows, None, undelivered)


def _headline(problems: list[Problem], cases: list[CaseRow], now: datetime) -> str:
    if not problems:
        return f"OK: all well ({len(cases)} open case(s))"
    top = problems[0]
    text = f"{top.severity.value.upper()}: {top.text}"
    if top.since is not None:
        text += f" since {_clock(top.since, now)}"
    if top.case is not None and top.due is not None:
        text += f" (case #{top.case}, {top.clock} {_time_left((top.due - now).total_seconds())})"
    more = len(problems) - 1
    return text + (f"; {more} more problem(s)" if more else "")


def _time_left(seconds: float) -> str:
    left = round(seconds)
    return (
        f"due in {format_duration(left)}" if left >= 0 else f"overdue by {format_duration(-left)}"
    )


def _clock(when: datetime, now: datetime) -> str:
    local = when.astimezone()
    if (now - when).total_seconds() < 20 * 3600:
        return local.strftime("%H:%M")
    return local.strftime("%Y-%m-%d %H:%M")


def _summary(record: JobState) -> str:
    return record.last_result.summary if record.last_result else ""


def _age(when: datetime | None, now: datetime) -> float | None:
    return round((now - when).total_seconds(), 1) if when else None


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None


def render(status: StatusDocument) -> list[str]:
    """The screen, as rich markup lines (colour on a terminal, plain when piped)."""
    colour = "green" if status.ok else "red"
    lines = [f"[bold {colour}]{escape(printable(status.headline))}[/]", ""]
    lines += _problem_lines(status.problems)
    lines += _agent_lines(status)
    lines.append("")
    lines += _check_lines(status.checks)
    lines.append("")
    lines += _backup_lines(status.backups)
    lines.append("")
    lines += _restore_lines(status.restore_test, status.repository)
    lines.append("")
    lines += _case_lines(status.cases, status.cases_error)
    return lines


def _problem_lines(problems: list[ProblemRow]) -> list[str]:
    """Every problem with its case's clock, when there is more than the headline's one."""
    if len(problems) <= 1:
        return []
    lines = ["[bold]problems[/]"]
    for problem in problems:
        clock = ""
        if problem.case is not None:
            left = _time_left(problem.seconds_left or 0)
            clock = f"  (case #{problem.case}, {problem.clock} {left})"
        lines.append(f"  {problem.severity:<9} {escape(printable(problem.text))}{clock}")
    lines.append("")
    return lines


def _agent_lines(status: StatusDocument) -> list[str]:
    """The daemon's line, or on a host run by the systemd timers a line per timer."""
    agent = status.agent
    if agent.mode == "timers":
        lines = [f"agent     systemd timers on {status.host} (cli {agent.cli_version})"]
        for timer in agent.timers:
            mark = {True: "[green]ok  [/]", False: "[red]FAIL[/]"}.get(
                timer.active, "[yellow]??  [/]"
            )
            ran = format_duration(timer.age_seconds or 0)
            lines.append(f"  {mark} {timer.unit:<28} {shown(timer.state)}, last run {ran} ago")
        return lines
    if agent.running:
        uptime = format_duration(agent.uptime_seconds or 0)
        return [f"agent     {agent.version} on {status.host}, up {uptime}"]
    return [f"agent     [red]not running[/] ({status.host}, cli {agent.cli_version})"]


def _check_lines(checks: list[CheckRow]) -> list[str]:
    """A line per check: ok or FAIL, since when, its summary."""
    lines = ["[bold]checks[/]"]
    for check in checks:
        mark = "[green]ok  [/]" if check.status == "ok" else "[red]FAIL[/]"
        since = _since(check.since)
        lines.append(f"  {mark} {check.name:<24} {check.kind:<14} {since}  {shown(check.summary)}")
    if not checks:
        lines.append("  (none yet)")
    return lines


def _backup_lines(backups: list[BackupRow]) -> list[str]:
    """A line per source: its last success and size, or that it was never backed up here."""
    lines = ["[bold]backups[/]"]
    for backup in backups:
        if backup.status is None:
            lines.append(f"  [yellow]----[/] {backup.source:<24} never backed up here")
            continue
        mark = "[green]ok  [/]" if backup.status == "ok" else "[red]FAIL[/]"
        age = backup.age_seconds
        age_text = (
            f"last success {format_duration(age)} ago" if age is not None else "never succeeded"
        )
        size = format_size(backup.bytes) if backup.bytes is not None else "-"
        lines.append(f"  {mark} {backup.source:<24} {age_text}, {size}")
    if not backups:
        lines.append("  (no sources configured)")
    return lines


def _restore_lines(restore: RestoreTestRow | None, repository: RepositoryRow | None) -> list[str]:
    """The last restore test with its RTO and RPO, and the repository's size."""
    if restore is None:
        lines = ["[bold]restore test[/]  none yet"]
    else:
        mark = "[green]passed[/]" if restore.status == "ok" else "[red]FAILED[/]"
        age_ago = format_duration(restore.age_seconds or 0)
        rto, rpo = restore.rto_seconds, restore.rpo_seconds
        figures = ""
        if rto is not None and rpo is not None:
            figures = f", RTO {format_duration(rto)}, RPO {format_duration(rpo)}"
        lines = [f"[bold]restore test[/]  {mark} {age_ago} ago{figures}"]
    if repository is not None:
        size = format_size(repository.bytes or 0)
        url = escape(str(repository.url))
        lines.append(f"[bold]repository[/]    {repository.snapshots} snapshots, {size} ({url})")
    return lines


def _case_lines(cases: list[CaseRow], cases_error: str | None) -> list[str]:
    """Open cases by severity and the first ten with their clocks, or why the store
    cannot be read."""
    if cases_error:
        return [f"[bold]cases[/]  [red]{escape(printable(cases_error))}[/]"]
    counts = {s.value: 0 for s in Severity}
    for case in cases:
        counts[case.severity] += 1
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "none open"
    lines = [f"[bold]cases[/]  {summary}"]
    for case in cases[:10]:
        left = case.seconds_left
        when = (
            f"{case.clock} due in {format_duration(left)}"
            if left >= 0
            else f"[red]{case.clock} overdue by {format_duration(-left)}[/]"
        )
        lines.append(f"  #{case.id:<5} {case.severity:<9} {when:<34} {shown(case.title[:70])}")
    if len(cases) > 10:
        lines.append(f"  ... {len(cases) - 10} more: opsagent cases list")
    return lines


def _since(value: str | None) -> str:
    if value is None:
        return "".ljust(16)
    return datetime.fromisoformat(value).astimezone().strftime("since %m-%d %H:%M")


def escape(text: str) -> str:
    """Text with rich's markup escaped; rich is imported only to render, so `/status` on
    the exporter (the document alone) leaves it out of the agent's memory."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def shown(text: str) -> str:
    """Text from checks, cases and the intake as rich may print it: no markup, no
    terminal control characters."""
    return escape(printable(text))
