"""Benchmark: a PostgreSQL database backed up by opsagent against pg_dump + restic.

In one run, on the machine's PostgreSQL: builds a database of about `--size-mib`
(default 512), then
- day one: `opsagent backup run` (pg_dump streamed into the repository) against
  `pg_dump -Fc` to a file plus `restic backup` of that file;
- day two, after 1 % of the rows changed: the same, reporting repository growth;
- restore: `opsagent restore --database` (restore plus fact comparison) against
  `pg_restore --jobs 2` from the local dump file.
Prints a Markdown table with wall times, growth and the ratios (opsagent / peer).

    .venv/bin/python bench/database_vs_restic.py [--size-mib 512] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.backup_vs_restic import PASSWORD, Timing, run  # noqa: E402

ADMIN = os.environ.get("OPSAGENT_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
BASE = ADMIN.rsplit("/", 1)[0]


def fill(dsn: str, size_mib: int) -> None:
    rows = size_mib * 2**20 // 420
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "create table invoices (id bigserial primary key, client int, amount numeric(12,2),"
            " body text, created timestamptz default now())"
        )
        step = 200_000
        for start in range(0, rows, step):
            conn.execute(
                "insert into invoices (client, amount, body) select i %% 5000, i %% 1000,"
                " md5(i::text) || ' ' || md5((i * 7)::text) || ' ' || md5((i * 13)::text)"
                " || ' ' || md5((i * 17)::text) || ' ' || md5((i * 19)::text) || ' '"
                " || md5((i * 23)::text) || ' ' || md5((i * 29)::text) || ' '"
                " || md5((i * 31)::text) || ' ' || md5((i * 37)::text) || ' '"
                " || md5((i * 41)::text) || ' ' || md5((i * 43)::text)"
                " from generate_series(%s::bigint, %s::bigint) i",
                (start, min(rows, start + step) - 1),
            )
        conn.execute("vacuum analyze invoices")


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def opsagent_json(argv: list[str], env: dict[str, str]) -> tuple[Timing, dict]:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])}: {proc.stderr.strip()[-400:]}")
    return Timing(seconds, 0.0), json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    name = "opsagent_bench_src"
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        for db in (name, "opsagent_bench_ops", "opsagent_bench_peer"):
            admin.execute(f'drop database if exists "{db}" with (force)')
        admin.execute(f'create database "{name}"')
    dsn = f"{BASE}/{name}"
    print(f"filling {args.size_mib} MiB ...", file=sys.stderr)
    fill(dsn, args.size_mib)
    with tempfile.TemporaryDirectory(prefix="opsagent-dbbench-") as tmp:
        work = Path(tmp)
        env = {**os.environ, "RESTIC_PASSWORD": PASSWORD}
        key = work / "key"
        key.write_text(PASSWORD + "\n")
        key.chmod(0o600)
        config = work / "config.yml"
        config.write_text(
            f"""
host: bench
state_dir: {work / "state"}
backup:
  repository: {work / "repo-ops"}
  password_file: {key}
  sources: [{{name: db, kind: postgres, dsn: "{dsn}", globals: false}}]
"""
        )
        ops = [str(ROOT / ".venv" / "bin" / "opsagent"), "--log-level", "warning"]
        restic = ["restic", "-r", str(work / "repo-restic"), "--quiet"]
        run([*ops, "backup", "init", "--config", str(config)], env)
        run([*restic, "init"], env)
        dump = work / "app.dump"
        rows = []
        for day in ("day one", "day two (1 % of rows changed)"):
            if day.startswith("day two"):
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute("update invoices set amount = amount + 1 where id % 100 = 7")
            before_ops, before_restic = du(work / "repo-ops"), du(work / "repo-restic")
            ops_time = run([*ops, "backup", "run", "--config", str(config)], env)
            dump_time = run(["pg_dump", "-Fc", f"--dbname={dsn}", f"--file={dump}"], env)
            restic_time = run([*restic, "backup", str(dump)], env)
            rows.append(
                (
                    f"{day}: back up",
                    ops_time.seconds,
                    dump_time.seconds + restic_time.seconds,
                    du(work / "repo-ops") - before_ops,
                    du(work / "repo-restic") - before_restic,
                )
            )
        target = f"{BASE}/opsagent_bench_ops"
        restore_time, result = opsagent_json(
            [
                *ops,
                "restore",
                "latest",
                "--source",
                "db",
                "--database",
                name,
                "--to",
                target,
                "--create",
                "--jobs",
                "2",
                "--json",
                "--config",
                str(config),
            ],
            env,
        )
        if not result["ok"]:
            raise SystemExit(f"restored facts differ: {result['problems']}")
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute('create database "opsagent_bench_peer"')
        peer = run(
            ["pg_restore", "--jobs=2", f"--dbname={BASE}/opsagent_bench_peer", str(dump)], env
        )
        rows.append(
            ("restore (opsagent: with fact check)", restore_time.seconds, peer.seconds, 0, 0)
        )
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            for db in (name, "opsagent_bench_ops", "opsagent_bench_peer"):
                admin.execute(f'drop database if exists "{db}" with (force)')
    lines = [
        f"PostgreSQL database of about {args.size_mib} MiB; peer = pg_dump -Fc to a file +"
        " restic backup of that file; restore peer = pg_restore --jobs 2 from the local file.",
        "",
        "| step | opsagent s | peer s | time ratio | opsagent growth MiB | restic growth MiB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for step, ops_s, peer_s, ops_growth, peer_growth in rows:
        lines.append(
            f"| {step} | {ops_s:.2f} | {peer_s:.2f} | {ops_s / peer_s:.2f} |"
            f" {ops_growth / 2**20:.1f} | {peer_growth / 2**20:.1f} |"
        )
    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.write_text(report + "\n")


if __name__ == "__main__":
    main()
