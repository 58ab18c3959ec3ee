"""`opsagent status`: this host on one screen, the thing that matters most first.

Read from the state database and the case store only (no repository, no network), so
it answers in well under a second at 03:00 even when S3 or the daemon is down. The same
document is served as JSON at `/status` on the exporter.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rich.markup import escape

from agents.config import Config
from agents.errors import OpsagentError
from agents.results import Severity
from agents.state import JobState, StateDB
from agents.units import format_duration, format_size

JOB_KINDS = frozenset({"backup", "backup_source", "restore_test", "prune", "forget"})
INTERNAL_KINDS = frozenset({"outbox", "textfile"})
_RANK = {Severity.CRITICAL: 0, Severity.MAJOR: 1, Severity.MODERATE: 2, Severity.MINOR: 3}


@dataclass(frozen=True)
class Problem:
    """One thing that is wrong, ranked for the headline."""

    severity: Severity
    text: str
    since: datetime | None
    source: str  # the case source it would carry: kind:name

    def rank(self) -> tuple[int, float]:
        return (_RANK[self.severity], self.since.timestamp() if self.since else 0.0)


def collect(config: Config, now: datetime | None = None) -> dict[str, Any]:
    """The status document: agent, checks, backups, restore test, repository, cases."""
    now = now or datetime.now(UTC)
    state = StateDB(config.state_db)
    records = {r.name: r for r in state.jobs()}
    problems: list[Problem] = []

    agent = _agent(state, now)
    if not agent["running"]:
        problems.append(Problem(Severity.CRITICAL, "agent is not running", None, "agent"))

    checks = []
    for record in records.values():
        if record.kind in JOB_KINDS or record.kind in INTERNAL_KINDS:
            continue
        result = record.last_result
        severity = result.severity if result else Severity.MAJOR
        ok = record.last_status == "ok"
        checks.append(
            {
                "name": record.name,
                "kind": record.kind,
                "status": record.last_status,
                "since": _iso(record.status_since),
                "last_run": _iso(record.last_finish),
                "summary": result.summary if result else "",
                "severity": severity.value,
            }
        )
        if not ok:
            text = f"check {record.name} failing"
            if record.kind == "job_freshness":
                text = f"{record.name.removesuffix('-freshness')} stale: {_summary(record)}"
            problems.append(
                Problem(severity, text, record.status_since, f"{record.kind}:{record.name}")
            )

    backups = []
    sources = [s.name for s in config.backup.sources] if config.backup else []
    for source in sources:
        record = records.get(f"backup/{source}")
        entry: dict[str, Any] = {"source": source, "status": None, "last_success": None}
        if record is not None:
            details = record.last_result.details if record.last_result else {}
            entry |= {
                "status": record.last_status,
                "last_run": _iso(record.last_finish),
                "last_success": _iso(record.last_success),
                "age_seconds": _age(record.last_success, now),
                "bytes": details.get("bytes"),
                "bytes_added": details.get("bytes_added"),
                "summary": _summary(record),
            }
            if record.last_status != "ok":
                problems.append(
                    Problem(
                        Severity.CRITICAL,
                        f"backup of {source} failing",
                        record.status_since,
                        f"backup_source:backup/{source}",
                    )
                )
        backups.append(entry)

    restore: dict[str, Any] | None = None
    record = records.get("restore_test")
    if record is not None:
        details = record.last_result.details if record.last_result else {}
        restore = {
            "status": record.last_status,
            "last_run": _iso(record.last_finish),
            "last_success": _iso(record.last_success),
            "age_seconds": _age(record.last_finish, now),
            "rto_seconds": details.get("rto_seconds"),
            "rpo_seconds": details.get("rpo_seconds"),
            "summary": _summary(record),
        }
        if record.last_status != "ok":
            problems.append(
                Problem(
                    Severity.CRITICAL,
                    "restore test failing",
                    record.status_since,
                    "restore_test:restore_test",
                )
            )

    repository: dict[str, Any] | None = None
    record = records.get("backup")
    if record is not None and record.last_result is not None:
        details = record.last_result.details
        repository = {
            "url": details.get("repository"),
            "snapshots": details.get("snapshots"),
            "bytes": details.get("repository_bytes"),
            "as_of": _iso(record.last_finish),
        }

    cases, cases_error = _cases(config, now)
    for case in cases:
        if case["severity"] == "critical" and not any(p.source == case["source"] for p in problems):
            problems.append(
                Problem(
                    Severity.CRITICAL,
                    f"case #{case['id']} open: {case['title']}",
                    datetime.fromisoformat(case["first_seen"]),
                    case["source"],
                )
            )
    problems.sort(key=Problem.rank)
    headline = _headline(problems, cases, now)
    return {
        "host": config.host,
        "ok": not problems,
        "headline": headline,
        "problems": [
            {"severity": p.severity.value, "text": p.text, "since": _iso(p.since)} for p in problems
        ],
        "agent": agent,
        "checks": checks,
        "backups": backups,
        "restore_test": restore,
        "repository": repository,
        "cases": cases,
        "cases_error": cases_error,
        "generated_at": now.isoformat(),
    }


def _agent(state: StateDB, now: datetime) -> dict[str, Any]:
    from agents import __version__

    started = state.meta("daemon_started_at")
    stopped = state.meta("daemon_stopped_at")
    pid = state.meta("daemon_pid")
    running = bool(started) and not stopped and pid is not None and _alive(int(pid))
    started_at = datetime.fromisoformat(started) if started else None
    return {
        "version": state.meta("daemon_version") or __version__,
        "cli_version": __version__,
        "running": running,
        "pid": int(pid) if pid and running else None,
        "started_at": _iso(started_at),
        "uptime_seconds": _age(started_at, now) if running else None,
        "stopped_at": stopped or None,
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, alive
    return True


def _cases(config: Config, now: datetime) -> tuple[list[dict[str, Any]], str | None]:
    from agents.cases.store import CaseStore

    try:
        open_cases = CaseStore(config.cases_store).cases(status="open")
    except OpsagentError as exc:
        return [], str(exc)
    rows = []
    for case in sorted(open_cases, key=lambda c: (_RANK[c.severity], c.first_seen)):
        responded = case.acknowledged_at is not None
        due = case.resolution_due if responded else case.response_due
        rows.append(
            {
                "id": case.id,
                "severity": case.severity.value,
                "status": case.status,
                "title": case.title,
                "source": case.source,
                "first_seen": case.first_seen.isoformat(),
                "clock": "resolution" if responded else "response",
                "due": due.isoformat(),
                "seconds_left": round((due - now).total_seconds()),
            }
        )
    return rows, None


def _headline(problems: list[Problem], cases: list[dict[str, Any]], now: datetime) -> str:
    if not problems:
        return f"OK: all well ({len(cases)} open case(s))"
    top = problems[0]
    text = f"{top.severity.value.upper()}: {top.text}"
    if top.since is not None:
        text += f" since {_clock(top.since, now)}"
    case = next((c for c in cases if c["source"] == top.source), None)
    if case is not None:
        left = case["seconds_left"]
        when = (
            f"due in {format_duration(left)}"
            if left >= 0
            else f"overdue by {format_duration(-left)}"
        )
        text += f" (case #{case['id']}, {case['clock']} {when})"
    more = len(problems) - 1
    return text + (f"; {more} more problem(s)" if more else "")


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


def render(status: dict[str, Any]) -> list[str]:
    """The screen, as rich markup lines (colour on a terminal, plain when piped)."""
    colour = "green" if status["ok"] else "red"
    lines = [f"[bold {colour}]{escape(status['headline'])}[/]", ""]
    agent = status["agent"]
    if agent["running"]:
        uptime = format_duration(agent["uptime_seconds"] or 0)
        lines.append(f"agent     {agent['version']} on {status['host']}, up {uptime}")
    else:
        lines.append(
            f"agent     [red]not running[/] ({status['host']}, cli {agent['cli_version']})"
        )
    lines.append("")
    lines.append("[bold]checks[/]")
    for check in status["checks"]:
        mark = "[green]ok  [/]" if check["status"] == "ok" else "[red]FAIL[/]"
        since = _since(check["since"])
        lines.append(
            f"  {mark} {check['name']:<24} {check['kind']:<14} {since}  {escape(check['summary'])}"
        )
    if not status["checks"]:
        lines.append("  (none yet)")
    lines.append("")
    lines.append("[bold]backups[/]")
    for backup in status["backups"]:
        if backup["status"] is None:
            lines.append(f"  [yellow]----[/] {backup['source']:<24} never backed up here")
            continue
        mark = "[green]ok  [/]" if backup["status"] == "ok" else "[red]FAIL[/]"
        age = backup.get("age_seconds")
        age_text = (
            f"last success {format_duration(age)} ago" if age is not None else "never succeeded"
        )
        size = format_size(backup["bytes"]) if backup.get("bytes") is not None else "-"
        lines.append(f"  {mark} {backup['source']:<24} {age_text}, {size}")
    if not status["backups"]:
        lines.append("  (no sources configured)")
    restore = status["restore_test"]
    lines.append("")
    if restore is None:
        lines.append("[bold]restore test[/]  none yet")
    else:
        mark = "[green]passed[/]" if restore["status"] == "ok" else "[red]FAILED[/]"
        age = format_duration(restore["age_seconds"] or 0)
        rto = restore.get("rto_seconds")
        rpo = restore.get("rpo_seconds")
        figures = ""
        if rto is not None and rpo is not None:
            figures = f", RTO {format_duration(rto)}, RPO {format_duration(rpo)}"
        lines.append(f"[bold]restore test[/]  {mark} {age} ago{figures}")
    repository = status["repository"]
    if repository is not None:
        size = format_size(repository["bytes"] or 0)
        url = escape(str(repository["url"]))
        lines.append(f"[bold]repository[/]    {repository['snapshots']} snapshots, {size} ({url})")
    lines.append("")
    cases = status["cases"]
    if status["cases_error"]:
        lines.append(f"[bold]cases[/]  [red]store unreachable: {status['cases_error']}[/]")
    else:
        counts = {s.value: 0 for s in Severity}
        for case in cases:
            counts[case["severity"]] += 1
        summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "none open"
        lines.append(f"[bold]cases[/]  {summary}")
        for case in cases[:10]:
            left = case["seconds_left"]
            when = (
                f"{case['clock']} due in {format_duration(left)}"
                if left >= 0
                else f"[red]{case['clock']} overdue by {format_duration(-left)}[/]"
            )
            lines.append(
                f"  #{case['id']:<5} {case['severity']:<9} {when:<34} {escape(case['title'][:70])}"
            )
        if len(cases) > 10:
            lines.append(f"  ... {len(cases) - 10} more: opsagent cases list")
    return lines


def _since(value: str | None) -> str:
    if value is None:
        return "".ljust(16)
    return datetime.fromisoformat(value).astimezone().strftime("since %m-%d %H:%M")
