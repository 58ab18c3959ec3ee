"""Benchmark: a whole opsagent restore test against restic + pg_restore doing the same work.

Data: the backup benchmark's file set plus a PostgreSQL database (defaults 1 GiB of
files, 512 MiB of database). Both tools back it up (restic gets the files and a
`pg_dump -Fc` file). Then, in the same run:
- opsagent: `restore-test run` (restore files and database into a sandbox, verify files
  chunk by chunk and the database against its facts, verify every pack's data);
- peer: `restic restore` + `restic check --read-data` + `pg_restore --jobs 2` into a
  fresh database.
Prints a Markdown table with wall times and the ratio.

    .venv/bin/python bench/restore_test_vs_restic.py [--files-mib 1024] [--db-mib 512]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.backup_vs_restic import PASSWORD, make_data, run  # noqa: E402
from bench.database_vs_restic import ADMIN, BASE, fill  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files-mib", type=int, default=1024)
    parser.add_argument("--db-mib", type=int, default=512)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    name = "opsagent_rtbench_src"
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        for db in (name, "opsagent_rtbench_peer"):
            admin.execute(f'drop database if exists "{db}" with (force)')
        admin.execute(f'create database "{name}"')
    dsn = f"{BASE}/{name}"
    with tempfile.TemporaryDirectory(prefix="opsagent-rtbench-") as tmp:
        work = Path(tmp)
        print("generating data ...", file=sys.stderr)
        make_data(work / "files", args.files_mib)
        fill(dsn, args.db_mib)
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
  sources:
    - {{name: files, kind: files, paths: ["{work / "files"}"]}}
    - {{name: db, kind: postgres, dsn: "{dsn}", globals: false}}
restore_test:
  sandbox: {{kind: local, root: {work / "sandbox"}, postgres_dsn: "{ADMIN}"}}
"""
        )
        ops = [str(ROOT / ".venv" / "bin" / "opsagent"), "--log-level", "warning"]
        restic = ["restic", "-r", str(work / "repo-restic"), "--quiet"]
        run([*ops, "backup", "init", "--config", str(config)], env)
        run([*ops, "backup", "run", "--config", str(config)], env)
        dump = work / "app.dump"
        run(["pg_dump", "-Fc", f"--dbname={dsn}", f"--file={dump}"], env)
        run([*restic, "init"], env)
        run([*restic, "backup", str(work / "files"), str(dump)], env)
        print("timing ...", file=sys.stderr)
        ours = run([*ops, "restore-test", "run", "--config", str(config)], env)
        peer_restore = run([*restic, "restore", "latest", "--target", str(work / "out")], env)
        peer_check = run([*restic, "check", "--read-data"], env)
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute('create database "opsagent_rtbench_peer"')
        restored_dump = work / "out" / str(dump).lstrip("/")
        peer_pg = run(
            [
                "pg_restore",
                "--jobs=2",
                f"--dbname={BASE}/opsagent_rtbench_peer",
                str(restored_dump),
            ],
            env,
        )
        peer = peer_restore.seconds + peer_check.seconds + peer_pg.seconds
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            for db in (name, "opsagent_rtbench_peer"):
                admin.execute(f'drop database if exists "{db}" with (force)')
    lines = [
        f"Files {args.files_mib} MiB + PostgreSQL {args.db_mib} MiB, local repositories.",
        "",
        "| work | opsagent s | peer s | ratio | peer parts |",
        "|---|---:|---:|---:|---|",
        f"| restore test: restore + verify files, database facts, all pack data |"
        f" {ours.seconds:.2f} | {peer:.2f} | {ours.seconds / peer:.2f} |"
        f" restic restore {peer_restore.seconds:.2f} + check --read-data"
        f" {peer_check.seconds:.2f} + pg_restore {peer_pg.seconds:.2f} |",
        f"| peak RSS MiB | {ours.rss_mib:.0f} |"
        f" {max(peer_restore.rss_mib, peer_check.rss_mib, peer_pg.rss_mib):.0f} | | |",
    ]
    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.write_text(report + "\n")


if __name__ == "__main__":
    main()
