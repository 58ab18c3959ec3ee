"""Restore tests against real PostgreSQL, MariaDB and files; every failure injected for real."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from agents.backup.runner import init_repository, open_repository, run_backup
from agents.config import Config, Sandbox, parse_config
from agents.restore_test import runner
from agents.restore_test.runner import run_restore_test
from agents.restore_test.sandbox import LocalSandbox, new_run_id, sweep
from agents.state import StateDB
from tests.support import services
from tests.support.trees import make_tree


def setup(tmp_path: Path, pg: services.Database, extra: str = "", restore_extra: str = "") -> Path:
    docs = tmp_path / "docs"
    if not docs.exists():
        make_tree(docs, small_files=60, large_mib=2)
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute("create table if not exists invoices (id serial primary key, amount int)")
        conn.execute("insert into invoices (amount) select i from generate_series(1, 500) i")
    key = tmp_path / "repo.key"
    key.write_text("pw\n")
    path = tmp_path / "config.yml"
    path.write_text(
        f"""
host: rt-host
state_dir: {tmp_path / "state"}
backup:
  repository: {tmp_path / "repo"}
  password_file: {key}
  sources:
    - {{name: docs, kind: files, paths: ["{docs}"]}}
    - {{name: db, kind: postgres, dsn: "{pg.dsn}", globals: false}}
{extra}
restore_test:
  sandbox: {{kind: local, root: {tmp_path / "sandbox"}, postgres_dsn: "{services.PG_ADMIN_DSN}"}}
  max_rto: 1h
  max_rpo: 26h
{restore_extra}
"""
    )
    config = load(path)
    assert config.backup is not None
    init_repository(config.backup, config.host)
    assert run_backup(config).ok
    return path


def load(path: Path) -> Config:
    return parse_config(path.read_text(), str(path))


def scratch_databases() -> list[str]:
    with psycopg.connect(services.PG_ADMIN_DSN) as conn:
        rows = conn.execute(
            "select datname from pg_database where datname like 'opsagent_rt_%'"
        ).fetchall()
    return [r[0] for r in rows]


def run(path: Path, **kwargs: object):  # type: ignore[no-untyped-def]
    config = load(path)
    return run_restore_test(config, StateDB(config.state_db), **kwargs)  # type: ignore[arg-type]


def step(result, name: str) -> dict:  # type: ignore[no-untyped-def]
    return next(s for s in result.details["steps"] if s["name"] == name)


def test_good_snapshot_passes_every_step_and_leaves_nothing(
    pg_database: services.Database, tmp_path: Path
) -> None:
    path = setup(
        tmp_path,
        pg_database,
        restore_extra=(
            '  verify: {sql: ["select count(*) = 500 from invoices"],'
            ' commands: [["sh", "-c", "test -f $OPSAGENT_SANDBOX_DIR/docs/run.sh || ls -R'
            ' $OPSAGENT_SANDBOX_DIR | grep -q run.sh"]]}'
        ),
    )
    before = set(scratch_databases())
    result = run(path)
    assert result.ok, result.summary
    names = [s["name"] for s in result.details["steps"]]
    assert names == ["restore", "files", "database", "sql", "commands", "data"]
    assert result.details["rto_seconds"] > 0 and result.details["rpo_seconds"] >= 0
    assert result.details["coverage"] == 1.0
    assert list((tmp_path / "sandbox").iterdir()) == []
    assert set(scratch_databases()) == before


@pytest.mark.parametrize("commands", [False, True])
def test_scratch_database_is_dropped_once_nothing_needs_it(
    pg_database: services.Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, commands: bool
) -> None:
    """Without verify commands (which may look at it) and without a kept sandbox, the
    scratch database starts going as soon as it is verified, before the pack data is;
    with commands it waits for teardown. Nothing is left either way."""
    extra = '  verify: {commands: [["true"]]}' if commands else ""
    path = setup(tmp_path, pg_database, restore_extra=extra)
    events: list[str] = []
    drop_soon, verify_data = runner.LocalSandbox.drop_soon, runner.verify_data

    def dropping(sandbox: LocalSandbox, name: str) -> None:
        events.append("drop")
        drop_soon(sandbox, name)

    def verifying(*args: object) -> object:
        events.append("data")
        return verify_data(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(runner.LocalSandbox, "drop_soon", dropping)
    monkeypatch.setattr(runner, "verify_data", verifying)
    before = set(scratch_databases())
    result = run(path)
    assert result.ok, result.summary
    assert events == (["data"] if commands else ["drop", "data"])
    assert set(scratch_databases()) == before


def test_flipped_byte_and_missing_pack_fail_named_steps(
    pg_database: services.Database, tmp_path: Path
) -> None:
    path = setup(tmp_path, pg_database)
    packs = sorted(p for p in (tmp_path / "repo" / "data").rglob("*") if p.is_file())
    victim = max(packs, key=lambda p: p.stat().st_size)
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 3] ^= 0x40
    victim.write_bytes(bytes(raw))
    result = run(path)
    assert not result.ok
    assert result.summary.startswith("step ")
    assert victim.name[:12] in result.summary
    assert list((tmp_path / "sandbox").iterdir()) == []
    victim.unlink()
    result = run(path)
    assert not result.ok and "missing" in result.summary


def test_facts_disagree_only_when_the_restored_copy_lacks_rows(
    pg_database: services.Database, tmp_path: Path
) -> None:
    path = setup(tmp_path, pg_database)
    with psycopg.connect(pg_database.dsn, autocommit=True) as conn:
        conn.execute("delete from invoices where id <= 100")  # after the backup: irrelevant
    assert run(path).ok
    config = load(path)
    assert config.backup is not None
    repo = open_repository(config.backup)
    snap = repo.find_snapshot("latest", source="db")
    facts = json.loads(json.dumps(snap.facts))
    facts["databases"][pg_database.name]["tables"]["public.invoices"] = 501
    repo.storage.delete([f"snapshots/{snap.id}"])
    repo.save_snapshot(replace(snap, id="", facts=facts))  # the dump lacks a row the facts name
    result = run(path, only_source="db")
    assert not result.ok
    assert result.summary == (
        f"step database failed: db snapshot {repo.find_snapshot('latest', source='db').short_id}"
        f" {pg_database.name}: table public.invoices has 500 rows, expected 501"
    )


def test_false_assertion_and_hanging_command(
    pg_database: services.Database, tmp_path: Path
) -> None:
    path = setup(
        tmp_path,
        pg_database,
        restore_extra=('  verify: {sql: ["select count(*) > 1000 from invoices"]}'),
    )
    result = run(path, only_source="db")
    assert not result.ok
    assert result.summary.startswith("step sql failed: db snapshot ")
    assert result.summary.endswith("assertion returned False: select count(*) > 1000 from invoices")
    text = path.read_text().replace(
        '  verify: {sql: ["select count(*) > 1000 from invoices"]}',
        "  verify: {commands: [{name: app-health, command: [sleep, '30'], timeout: 1s}]}",
    )
    path.write_text(text)
    result = run(path, only_source="docs")
    assert not result.ok
    assert result.summary == "step commands failed: app-health: timed out after 1s"
    assert list((tmp_path / "sandbox").iterdir()) == []


def test_sandbox_too_small_fails_cleanly(pg_database: services.Database, tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        path = setup(tmp_path, pg_database)
        path.write_text(path.read_text().replace(str(tmp_path / "sandbox"), str(small)))
        result = run(path, only_source="docs")
        assert not result.ok
        assert result.summary.startswith(f"step restore failed: sandbox {small} has ")
        assert "the restore needs" in result.summary
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_rto_and_rpo_targets(pg_database: services.Database, tmp_path: Path) -> None:
    path = setup(tmp_path, pg_database, restore_extra="")
    path.write_text(path.read_text().replace("max_rto: 1h", "max_rto: 1ms"))
    result = run(path, only_source="docs")
    assert not result.ok and step(result, "rto")["ok"] is False
    assert result.summary.startswith("step rto failed: restore took ")
    path.write_text(
        path.read_text()
        .replace("max_rto: 1ms", "max_rto: 1h")
        .replace("max_rpo: 26h", "max_rpo: 1ms")
    )
    result = run(path, only_source="docs")
    assert not result.ok
    assert result.summary.startswith("step rpo failed: newest snapshot is ")
    assert result.summary.endswith("old, over max_rpo 1ms")
    assert step(result, "files")["ok"] is True  # the restore itself was fine


def test_sigterm_leaves_a_sandbox_that_the_next_run_sweeps(
    pg_database: services.Database, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(12):
        (docs / f"big-{i}.bin").write_bytes(os.urandom(16 * 2**20))
    path = setup(tmp_path, pg_database)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agents",
            "restore-test",
            "run",
            "--source",
            "docs",
            "--config",
            str(path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sandbox = tmp_path / "sandbox"
    services.wait_for(
        "a sandbox in use",
        lambda: any(p.name.startswith("opsagent-rt-") for p in sandbox.iterdir()),
        timeout=30,
        proc=proc,
    )
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    leftover = [p for p in sandbox.iterdir()]
    assert leftover, "the killed run should have left its sandbox"
    result = run(path, only_source="db")
    assert result.ok, result.summary
    assert list(sandbox.iterdir()) == []


def test_keep_sandbox_then_swept_after_its_window(
    pg_database: services.Database, tmp_path: Path
) -> None:
    path = setup(tmp_path, pg_database)
    result = run(path, keep_sandbox=True)
    assert result.ok
    kept = Path(result.details["sandbox"])
    assert kept.is_dir() and any(kept.rglob("run.sh"))
    kept_dbs = [d for d in scratch_databases() if result.details["run_id"] in d]
    assert kept_dbs
    (kept / "keep-until").write_text((datetime.now(UTC) - timedelta(seconds=1)).isoformat())
    assert run(path, only_source="docs").ok
    assert not kept.exists()
    assert not [d for d in scratch_databases() if result.details["run_id"] in d]


def test_cli_run_history_json(pg_database: services.Database, tmp_path: Path) -> None:
    path = setup(tmp_path, pg_database)
    proc = subprocess.run(
        [sys.executable, "-m", "agents", "restore-test", "run", "--json", "--config", str(path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "ok"
    history = subprocess.run(
        [
            sys.executable,
            "-m",
            "agents",
            "restore-test",
            "history",
            "--json",
            "--config",
            str(path),
        ],
        capture_output=True,
        text=True,
    )
    runs = json.loads(history.stdout)
    assert len(runs) == 1 and runs[0]["details"]["steps"]


def _ssh_config(path: Path, original: str, sshd: services.SshServer, known: Path) -> None:
    """The config with its local sandbox replaced by an ssh one (same root remotely)."""
    start = original.index("sandbox: {kind: local")
    end = original.index("}", start) + 1
    local_root = original[start:end].split("root: ")[1].split(",")[0]
    ssh = (
        f"sandbox: {{kind: ssh, host: 127.0.0.1, port: {sshd.port}, user: {sshd.user},"
        f" key_file: {sshd.client_key}, known_hosts: {known},"
        f" remote_command: '{sys.executable} -m agents', remote_config: {path},"
        f' root: {local_root}, postgres_dsn: "{services.PG_ADMIN_DSN}"}}'
    )
    path.write_text(original[:start] + ssh + original[end:])


def test_ssh_sandbox_runs_remotely_and_refuses_unknown_keys(
    pg_database: services.Database, tmp_path: Path, sshd: services.SshServer
) -> None:
    path = setup(tmp_path, pg_database)
    original = path.read_text()
    _ssh_config(path, original, sshd, sshd.known_hosts)
    result = run(path)
    assert result.ok, result.summary
    assert result.details["sandbox_host"] == f"{sshd.user}@127.0.0.1:{sshd.port}"
    assert [s["name"] for s in result.details["steps"]][:3] == ["restore", "files", "database"]

    wrong = tmp_path / "known_hosts_wrong"
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kind, blob = other.with_suffix(".pub").read_text().split()[:2]
    wrong.write_text(f"[127.0.0.1]:{sshd.port} {kind} {blob}\n")
    _ssh_config(path, original, sshd, wrong)
    result = run(path)
    assert not result.ok
    assert result.summary.startswith(
        f"step ssh failed: sandbox host {sshd.user}@127.0.0.1:{sshd.port} presented a changed"
        " host key (ssh-ed25519 "
    )
    empty = tmp_path / "known_hosts_empty"
    empty.write_text("")
    _ssh_config(path, original, sshd, empty)
    result = run(path)
    assert result.summary == (
        f"step ssh failed: sandbox host {sshd.user}@127.0.0.1:{sshd.port} is not in {empty};"
        " refused"
    )
    assert empty.read_text() == ""  # never auto-added

    # a sandbox host that never answers is stopped at the test's time limit, not waited on
    _ssh_config(path, original, sshd, sshd.known_hosts)
    hung = path.read_text().replace(
        f"remote_command: '{sys.executable} -m agents'", "remote_command: 'sh -c \"sleep 60\" sh'"
    )
    path.write_text(hung.replace("  max_rpo: 26h\n", "  max_rpo: 26h\n  timeout: 3s\n"))
    started = time.monotonic()
    result = run(path)
    assert time.monotonic() - started < 30
    assert result.summary == (
        f"step ssh failed: sandbox host {sshd.user}@127.0.0.1:{sshd.port}: no result within 3s;"
        " stopped"
    )


def test_mariadb_snapshot_from_s3_passes_and_drops_its_scratch_database(
    s3_server: services.S3Server,
    s3_bucket: str,
    mysql_database: services.Database,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPSAGENT_T_AK", "testing")
    monkeypatch.setenv("OPSAGENT_T_SK", "testing")
    with services.mysql_connect(mysql_database.name) as conn, conn.cursor() as cur:
        cur.execute("create table orders (id int primary key auto_increment, total int)")
        cur.executemany("insert into orders (total) values (%s)", [(i,) for i in range(700)])
    key = tmp_path / "repo.key"
    key.write_text("pw\n")
    path = tmp_path / "config.yml"
    path.write_text(
        f"""
state_dir: {tmp_path / "state"}
backup:
  repository: s3://{s3_bucket}/repo
  password_file: {key}
  s3: {{endpoint_url: "{s3_server.endpoint_url}", path_style: true,
        access_key_id: "${{OPSAGENT_T_AK}}", secret_access_key: "${{OPSAGENT_T_SK}}"}}
  sources:
    - {{name: shop, kind: mysql, host: {services.MYSQL_HOST}, port: {services.MYSQL_PORT},
        databases: [{mysql_database.name}]}}
restore_test:
  sandbox: {{kind: local, root: {tmp_path / "sandbox"}, mysql_host: {services.MYSQL_HOST},
             mysql_port: {services.MYSQL_PORT}}}
"""
    )
    config = load(path)
    assert config.backup is not None
    init_repository(config.backup, config.host)
    assert run_backup(config).ok
    result = run(path)
    assert result.ok, result.summary
    assert [s["name"] for s in result.details["steps"]] == ["database", "data"]
    with services.mysql_connect() as conn, conn.cursor() as cur:
        cur.execute("show databases like 'opsagent_rt_%'")
        assert cur.fetchall() == ()


def test_data_verification_rolls_through_packs_within_a_budget(tmp_path: Path) -> None:
    from agents.config import DataVerify
    from agents.restore_test.verify import verify_data

    source = tmp_path / "src"
    source.mkdir()
    for i in range(6):
        (source / f"f{i}").write_bytes(os.urandom(700_000))
    key = tmp_path / "repo.key"
    key.write_text("pw\n")
    path = tmp_path / "config.yml"
    path.write_text(
        f"""
state_dir: {tmp_path / "state"}
backup:
  repository: {tmp_path / "repo"}
  password_file: {key}
  pack_size: 1MiB
  sources: [{{name: docs, kind: files, paths: ["{source}"]}}]
"""
    )
    config = load(path)
    assert config.backup is not None
    init_repository(config.backup, config.host)
    assert run_backup(config).ok
    repo = open_repository(config.backup)
    packs = len(list(repo.storage.list("data/")))
    assert packs >= 4
    state = StateDB(config.state_db)
    policy = DataVerify(full_every=timedelta(days=7), daily_budget=1)  # one pack a day
    day = datetime(2026, 11, 1, tzinfo=UTC)
    coverages = []
    for n in range(packs):
        step = verify_data(repo, state, policy, now=day + timedelta(days=n))
        assert step.ok and step.details["packs"] == 1
        coverages.append(step.details["coverage"])
    assert coverages == sorted(coverages) and coverages[-1] == 1.0
    assert coverages[0] == round(1 / packs, 4)
    later = verify_data(repo, state, policy, now=day + timedelta(days=7 + packs))
    assert later.details["packs"] == 1  # the oldest check comes round again


def test_cli_plan_says_what_and_when(pg_database: services.Database, tmp_path: Path) -> None:
    path = setup(tmp_path, pg_database)
    proc = subprocess.run(
        [sys.executable, "-m", "agents", "restore-test", "plan", "--json", "--config", str(path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert [s["source"] for s in plan["snapshots"]] == ["docs", "db"]
    assert plan["max_rto"] == "1h" and plan["max_rpo"] == "1d2h"
    when = datetime.fromisoformat(plan["next_run"])
    assert timedelta(0) < when - datetime.now(UTC) <= timedelta(days=1)


def test_cli_records_every_failure_and_tests_every_source(tmp_path: Path) -> None:
    """From the command line as from the daemon: a source never backed up fails alone,
    the other is still tested, and every run (one that cannot start too) is in the
    history with a case open."""
    docs, never = tmp_path / "docs", tmp_path / "never"
    make_tree(docs, small_files=20, large_mib=1)
    never.mkdir()
    key = tmp_path / "repo.key"
    key.write_text("pw\n")
    path = tmp_path / "config.yml"
    path.write_text(
        f"""
host: rt-host
state_dir: {tmp_path / "state"}
backup:
  repository: {tmp_path / "repo"}
  password_file: {key}
  sources:
    - {{name: docs, kind: files, paths: ["{docs}"]}}
    - {{name: never, kind: files, paths: ["{never}"]}}
restore_test:
  sandbox: {{kind: local, root: {tmp_path / "sandbox"}}}
"""
    )
    config = load(path)
    assert config.backup is not None
    init_repository(config.backup, config.host)
    assert run_backup(config, only=["docs"]).ok

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "agents", *args, "--config", str(path)],
            capture_output=True,
            text=True,
        )

    proc = cli("restore-test", "run", "--json")
    assert proc.returncode == 1, proc.stderr
    result = json.loads(proc.stdout)
    missing = "source never has no snapshot from rt-host to test"
    assert result["status"] == "failed"
    assert result["summary"] == f"step snapshot failed: {missing}"
    sources = result["details"]["sources"]
    assert sources["never"] == {"snapshot": None, "ok": False, "summary": missing}
    assert sources["docs"]["ok"] is True and sources["docs"]["snapshot"]
    assert [(s["name"], s["ok"]) for s in result["details"]["steps"]] == [
        ("snapshot", False),
        ("restore", True),
        ("files", True),
    ]

    key.write_text("wrong\n")  # the repository cannot even be opened: before the test starts
    proc = cli("restore-test", "run")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "step start failed: " in proc.stdout and "wrong password" in proc.stdout

    key.write_text("pw\n")
    (manifest,) = (tmp_path / "repo" / "snapshots").iterdir()
    manifest.write_bytes(manifest.read_bytes()[:-1] + b"\0")  # a damaged snapshot
    proc = cli("restore-test", "run", "--json")
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["summary"] == (
        f"step snapshot failed: snapshot {manifest.name[:8]} does not match its hash"
        " (+2 more failed step(s))"
    )

    history = json.loads(cli("restore-test", "history", "--json").stdout)
    assert [r["status"] for r in history] == ["failed", "failed", "failed"]
    assert history[1]["summary"].startswith("step start failed: ")
    assert history[1]["summary"].endswith("wrong password: no repository key opens with it")
    assert history[2]["details"]["sources"] == sources
    cases = json.loads(cli("cases", "list", "--json").stdout)
    assert len(cases) == 1 and cases[0]["severity"] == "critical"
    assert (
        cases[0]["title"]
        == f"restore_test restore_test on rt-host: step snapshot failed: {missing}"
    )
    assert cases[0]["status"] == "open"
    assert list((tmp_path / "sandbox").iterdir()) == []


def _pg_scratch(sandbox: LocalSandbox) -> str:
    """A PostgreSQL scratch database made as a restore test makes one: named by its
    sandbox, then created on the sandbox server."""
    name = sandbox.new_database("postgres")
    with psycopg.connect(services.PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def test_sweep_spares_another_agents_scratch_databases_on_a_shared_server(
    pg_database: services.Database, tmp_path: Path
) -> None:
    """Two agents (different sandbox roots) share one sandbox PostgreSQL server. Agent A's
    restore test sweeps at its start: B's young scratch databases survive, one restoring
    at that moment keeps its connection; what is older than the limit and margin, and
    A's own dead run, go."""
    path = setup(tmp_path, pg_database, restore_extra="  timeout: 1h")
    config = load(path)
    assert config.restore_test is not None
    mine = config.restore_test.sandbox
    theirs = Sandbox(root=tmp_path / "b-sandbox", postgres_dsn=services.PG_ADMIN_DSN)
    now = datetime.now(UTC)
    b_running = LocalSandbox(theirs, new_run_id())
    b_running.create(0)
    b_young = _pg_scratch(b_running)
    # started 1h50m ago: past A's 1h limit, but within the margin (the limit again)
    b_recent = _pg_scratch(LocalSandbox(theirs, new_run_id(now - timedelta(minutes=110))))
    b_old = _pg_scratch(LocalSandbox(theirs, new_run_id(now - timedelta(hours=2, minutes=10))))
    a_dead = LocalSandbox(mine, new_run_id())  # killed a moment ago: no keep marker
    a_dead.create(0)
    a_dead.release()  # its process is gone, and its lock with it
    a_dead_db = _pg_scratch(a_dead)
    a_kept = LocalSandbox(mine, new_run_id(now - timedelta(hours=5)))
    a_kept.create(0)
    a_kept_db = _pg_scratch(a_kept)
    a_kept.keep_until(now + timedelta(hours=1))
    made = [b_young, b_recent, b_old, a_dead_db, a_kept_db]
    restoring = psycopg.connect(f"{services.PG_ADMIN_DSN.rsplit('/', 1)[0]}/{b_young}")
    try:
        result = run(path, only_source="docs")
        assert result.ok, result.summary
        left = set(scratch_databases())
        assert {b_young, b_recent, a_kept_db} <= left
        assert not {b_old, a_dead_db} & left
        assert restoring.execute("select 1").fetchone() == (1,)  # B's restore goes on
        assert b_running.directory.is_dir() and a_kept.directory.is_dir()
        assert not a_dead.directory.exists()
    finally:
        restoring.close()
        with psycopg.connect(services.PG_ADMIN_DSN, autocommit=True) as conn:
            for name in made:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_sweep_on_a_shared_mariadb_server_drops_only_abandoned_scratch_databases(
    tmp_path: Path,
) -> None:
    """The same rule on a MariaDB sandbox server shared by two agents, with the default
    6 h limit; a name whose run ID carries no time cannot be aged and is dropped."""

    def scratch(sandbox: LocalSandbox) -> str:
        name = sandbox.new_database("mysql")
        with services.mysql_connect() as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}`")
        return name

    server = {"mysql_host": services.MYSQL_HOST, "mysql_port": services.MYSQL_PORT}
    mine = Sandbox(root=tmp_path / "a-sandbox", **server)
    theirs = Sandbox(root=tmp_path / "b-sandbox", **server)
    now = datetime.now(UTC)
    b_young = scratch(LocalSandbox(theirs, new_run_id(now - timedelta(hours=7))))
    b_old = scratch(LocalSandbox(theirs, new_run_id(now - timedelta(hours=12, minutes=5))))
    untimed = scratch(LocalSandbox(theirs, f"untimed{uuid.uuid4().hex[:8]}"))
    a_dead = LocalSandbox(mine, new_run_id())
    a_dead.create(0)
    a_dead.release()  # its process is gone, and its lock with it
    a_dead_db = scratch(a_dead)
    made = [b_young, b_old, untimed, a_dead_db]
    try:
        removed = sweep(mine, timedelta(hours=6), now)
        assert str(a_dead.directory) in removed
        with services.mysql_connect() as conn, conn.cursor() as cur:
            cur.execute("SHOW DATABASES LIKE 'opsagent\\_rt\\_%'")
            left = {r[0] for r in cur.fetchall()}
        assert b_young in left
        assert not {b_old, untimed, a_dead_db} & left
    finally:
        with services.mysql_connect() as conn, conn.cursor() as cur:
            for name in made:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
