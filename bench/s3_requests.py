"""Benchmark: the S3 requests of each backup step, opsagent against restic (issue #20).

Time on a shared machine swings with its load; the number of requests a command makes
does not, and on a real S3 endpoint each one is a round trip of 10-50 ms. This runs
the steps of `backup_vs_restic.py` (first backup, a second after changing 5 % of the
files, one with nothing changed; optionally restore and check) for opsagent and
restic into buckets of one moto server, reads moto's request log, and prints per step
and tool the requests by kind: method and what the key is (`config`, `keys/`,
`locks/`, `index/`, `snapshots/`, `data/`), a LIST by its prefix, DeleteObjects as
`DELETE (batch)`, bucket-level requests as `bucket`.

    .venv/bin/python bench/s3_requests.py [--size-mib 256] [--restore] [--json FILE]
        [--code DIR]

`--code DIR` counts another checkout's requests (e.g. the main branch's), run with
DIR on the path and as the working directory (`python -m agents` looks there first).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from backup_vs_restic import (  # noqa: E402
    Tool,
    change_five_percent,
    installed_like,
    make_data,
    s3_tools,
)

from tests.support import services  # noqa: E402

_LINE = re.compile(r'"(?:\x1b\[[0-9;]*m)*([A-Z]+) (\S+) HTTP/[0-9.]+(?:\x1b\[[0-9;]*m)*" (\d+)')
KINDS = ("config", "keys", "locks", "index", "snapshots", "data")


def classify(method: str, target: str, repo_prefix: str) -> str:
    """One request as `METHOD what`: the kind of object (or listing) it touches."""
    parts = urlsplit(target)
    query = parse_qs(parts.query, keep_blank_values=True)
    _, _, key = unquote(parts.path).lstrip("/").partition("/")
    key = key.removeprefix(repo_prefix)
    if method == "POST" and "delete" in query:
        return "DELETE (batch)"
    if not key and "uploads" in query:
        return "LIST multipart uploads"
    if "uploads" in query or "uploadId" in query:
        return f"{method} multipart {_kind(key)}"
    if not key:
        if method == "GET" and "list-type" in query:
            prefix = query.get("prefix", [""])[0].removeprefix(repo_prefix)
            return f"LIST {_kind(prefix) or '(all)'}"
        if method == "GET" and "prefix" in query:  # ListObjects v1
            prefix = query.get("prefix", [""])[0].removeprefix(repo_prefix)
            return f"LIST {_kind(prefix) or '(all)'}"
        return f"{method} bucket" + (f" ?{','.join(sorted(query))}" if query else "")
    return f"{method} {_kind(key)}"


def _kind(key: str) -> str:
    head = key.split("/", 1)[0]
    if head in KINDS:
        return head if head == "config" else f"{head}/"
    return head


def requests_since(log: Path, offset: int, repo_prefix: str, bucket: str) -> Counter[str]:
    """Requests in moto's log after `offset`, of one bucket, by kind."""
    with log.open("rb") as handle:
        handle.seek(offset)
        text = handle.read().decode(errors="replace")
    found: Counter[str] = Counter()
    for line in text.splitlines():
        match = _LINE.search(line)
        if match is None:
            continue
        method, target, _ = match.groups()
        if unquote(urlsplit(target).path).lstrip("/").split("/", 1)[0] != bucket:
            continue
        found[classify(method, target, repo_prefix)] += 1
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--restore", action="store_true", help="also restore and check")
    parser.add_argument("--json", type=Path, default=None, help="write the counts here")
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout to measure")
    args = parser.parse_args()
    code = args.code.resolve()
    with tempfile.TemporaryDirectory(prefix="opsagent-s3req-") as tmp:
        work = Path(tmp)
        env = installed_like(dict(os.environ))
        env["PYTHONPATH"] = str(code)
        os.chdir(code)
        data = work / "data"
        make_data(data, args.size_mib)
        s3 = services.start_s3(work)
        try:
            ops, restic = s3_tools(s3, env, work, data)
            tools: list[tuple[Tool, str, str]] = [
                (ops, "bench-ops", "repo/"),
                (restic, "bench-restic", ""),
            ]
            steps = [
                ("init", "init"),
                ("first backup", "backup"),
                ("second backup (5 % changed)", "backup"),
                ("backup, nothing changed", "backup"),
            ]
            if args.restore:
                steps += [("full restore", "restore"), ("check --read-data", "check")]
            counts: dict[str, dict[str, Counter[str]]] = {}
            for step, action in steps:
                if step.startswith("second"):
                    change_five_percent(data)
                counts[step] = {}
                for tool, bucket, prefix in tools:
                    offset = s3.process.log.stat().st_size
                    if action == "restore":
                        tool.restore(work / f"restore-{tool.name}")
                    else:
                        getattr(tool, action)()
                    counts[step][tool.name] = requests_since(s3.process.log, offset, prefix, bucket)
        finally:
            s3.process.stop()
    print(f"opsagent code: {code}\n")
    print(report(counts))
    if args.json:
        args.json.write_text(
            json.dumps({s: {t: dict(c) for t, c in v.items()} for s, v in counts.items()}, indent=2)
        )


def report(counts: dict[str, dict[str, Counter[str]]]) -> str:
    """A Markdown table per step: each kind of request, opsagent's and restic's count."""
    lines = []
    for step, by_tool in counts.items():
        tools = list(by_tool)
        totals = " | ".join(str(sum(by_tool[t].values())) for t in tools)
        lines += [f"#### {step}", "", f"| request | {' | '.join(tools)} |"]
        lines.append("|---|" + "---:|" * len(tools))
        kinds = sorted({k for c in by_tool.values() for k in c})
        for kind in kinds:
            lines.append(f"| {kind} | " + " | ".join(str(by_tool[t][kind]) for t in tools) + " |")
        lines += [f"| **total** | {totals} |", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
