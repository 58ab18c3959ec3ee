"""Rendering for the command line: JSON on stdout, tables of results, progress bars.

Shared by every command module, so one command's output looks like another's.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from agents.results import CheckResult, Status

if TYPE_CHECKING:  # rich is imported where output is drawn: `--help` never needs it
    from rich.table import Table


def print_json(data: Any) -> None:
    """`data` as indented JSON with sorted keys on stdout."""
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def results_table(results: list[CheckResult], title: str) -> Table:
    """One row per result: name, kind, coloured status, summary, time."""
    from rich.table import Table

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


@contextmanager
def progress_bar(
    label: str, total: int | None = None, enabled: bool = True
) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar (bytes, files, rate, ETA) on a terminal; silent otherwise."""
    if not enabled or not sys.stderr.isatty():
        yield lambda b, f: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

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
