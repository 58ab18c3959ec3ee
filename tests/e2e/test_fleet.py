"""`opsagent fleet` against three real OpenSSH servers on loopback, each with its own host
key, each running the real `opsagent` with its own config (its own host name and state):
aggregation, a stopped host, a changed host key, a hung command, the parallelism bound
measured on the servers, a jump host, an encrypted key, Ctrl-C, JSON and the audit."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support import services
from tests.support.services import SshServer

OPSAGENT = str(Path(sys.executable).with_name("opsagent"))


@dataclass
class Fleet:
    root: Path
    servers: list[SshServer]
    inventory: Path
    known_hosts: Path
    client_key: Path

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "agents", "fleet", *args, "--inventory", str(self.inventory)]
            if args[0] not in ("exec",)
            else [
                sys.executable,
                "-m",
                "agents",
                "fleet",
                "exec",
                "--inventory",
                str(self.inventory),
                *args[1:],
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def _keygen(path: Path, passphrase: str = "") -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-f", str(path)],
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("fleet")
    client = root / "client_ed25519"
    _keygen(client)
    encrypted = root / "encrypted_ed25519"
    _keygen(encrypted, "correct horse")
    (root / "passphrase").write_text("correct horse\n")
    servers = []
    try:
        for i in (1, 2, 3):
            work = root / f"sshd{i}"
            work.mkdir()
            for suffix in ("", ".pub"):  # one operator key for every server
                shutil.copy(f"{client}{suffix}", work / f"client_ed25519{suffix}")
            servers.append(services.start_sshd(work))
            keys = (
                client.with_suffix(".pub").read_text(),
                encrypted.with_suffix(".pub").read_text(),
            )
            (work / "authorized_keys").write_text("".join(keys))
        known_hosts = root / "known_hosts"
        known_hosts.write_text("".join(s.known_hosts.read_text() for s in servers))
        hosts = []
        for i, server in enumerate(servers, start=1):
            name = f"app-0{i}"
            config = root / f"{name}.yml"
            config.write_text(f"host: {name}\nstate_dir: {root / name}\n")
            hosts.append(
                {
                    "name": name,
                    "address": "127.0.0.1",
                    "port": server.port,
                    "config": str(config),
                    "groups": ["web"] if i < 3 else ["db"],
                    "labels": {"client": "acme" if i == 1 else "globex"},
                }
            )
        # more names over the same servers, for the concurrency measurement
        for n in range(6):
            server = servers[n % 3]
            hosts.append(
                {
                    "name": f"load-{n}",
                    "address": "127.0.0.1",
                    "port": server.port,
                    "groups": ["load"],
                }
            )
        hosts.append(
            {
                "name": "behind-jump",
                "address": "127.0.0.1",
                "port": servers[1].port,
                "jump": "app-01",
                "config": str(root / "app-02.yml"),
                "groups": ["jump"],
            }
        )
        hosts.append(
            {
                "name": "encrypted-key",
                "address": "127.0.0.1",
                "port": servers[0].port,
                "key_file": str(encrypted),
                "passphrase_file": str(root / "passphrase"),
                "config": str(root / "app-01.yml"),
                "groups": ["enc"],
            }
        )
        inventory = root / "inventory.yml"
        inventory.write_text(
            yaml.safe_dump(
                {
                    "known_hosts": str(known_hosts),
                    "state_dir": str(root / "operator"),
                    "defaults": {
                        "user": servers[0].user,
                        "key_file": str(client),
                        "opsagent": OPSAGENT,
                        "connect_timeout": "5s",
                        "command_timeout": "60s",
                    },
                    "hosts": hosts,
                }
            )
        )
        yield Fleet(root, servers, inventory, known_hosts, client)
    finally:
        for server in servers:
            server.process.stop()


def test_status_aggregates_every_host_and_flags_mixed_versions(fleet: Fleet) -> None:
    out = fleet.run("status", "--group", "web", "--group", "db", "--json")
    doc = json.loads(out.stdout)
    hosts = {h["host"]: h for h in doc["hosts"]}
    assert set(hosts) == {"app-01", "app-02", "app-03"}
    for name, host in hosts.items():
        assert host["data"]["host"] == name, "each host answered with its own status"
        assert host["data"]["agent"]["running"] is False
        assert host["exit_code"] == 1  # no agent running there: not well, and says so
        assert {"stdout", "stderr", "duration_seconds", "status"} <= set(host)
    assert out.returncode == 1
    assert doc["mixed_versions"] is False
    # app-03's agent last ran an older version: the fleet view says so
    db = sqlite3.connect(fleet.root / "app-03" / "state.db")
    db.execute("INSERT OR REPLACE INTO meta VALUES ('daemon_version', '0.0.9')")
    db.commit()
    db.close()
    screen = fleet.run("status", "--all", "--parallel", "4")
    assert "MIXED VERSIONS: 0.0.9 on app-03; 0.1.0 on" in screen.stdout, screen.stdout
    assert "app-01" in screen.stdout and "agent is not running" in screen.stdout


def test_exec_prefixes_output_and_json_is_complete(fleet: Fleet) -> None:
    out = fleet.run("exec", "--label", "client=acme", "--host", "app-03", "--", "echo", "hi")
    assert out.returncode == 0, out.stderr
    assert sorted(out.stdout.splitlines()) == ["app-01 | hi", "app-03 | hi"]
    collected = fleet.run("exec", "--group", "web", "--collect", "--", "echo same")
    assert "== app-01, app-02\nsame" in collected.stdout
    as_json = fleet.run("exec", "--all", "--json", "--", "sh -c 'echo out; echo err >&2; exit 3'")
    assert as_json.returncode == 1
    doc = json.loads(as_json.stdout)
    assert len(doc["hosts"]) == 11
    for host in doc["hosts"]:
        assert host["exit_code"] == 3 and host["status"] == "failed"
        assert host["stdout"] == "out\n" and host["stderr"] == "err\n"
        assert host["duration_seconds"] > 0


def test_a_stopped_host_fails_alone_with_a_clear_error(fleet: Fleet, tmp_path: Path) -> None:
    spare = services.start_sshd(tmp_path / "spare")
    inventory = yaml.safe_load(fleet.inventory.read_text())
    inventory["hosts"] = [h for h in inventory["hosts"] if h["name"] in ("app-01", "app-02")]
    inventory["hosts"].append(
        {"name": "gone", "address": "127.0.0.1", "port": spare.port, "config": "/x.yml"}
    )
    spare.process.stop()
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "agents",
            "fleet",
            "exec",
            "--inventory",
            str(path),
            "--all",
            "--json",
            "--",
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    hosts = {h["host"]: h for h in json.loads(out.stdout)["hosts"]}
    assert hosts["app-01"]["status"] == hosts["app-02"]["status"] == "ok"
    assert hosts["gone"]["status"] == "error"
    assert hosts["gone"]["error"].startswith("gone (")
    assert "refused" in hosts["gone"]["error"].lower()
    assert "\n" not in hosts["gone"]["error"] and "Traceback" not in out.stderr


def test_a_changed_host_key_is_refused_with_the_fingerprint(fleet: Fleet, tmp_path: Path) -> None:
    impostor = tmp_path / "impostor"
    _keygen(impostor)
    kind, blob = impostor.with_suffix(".pub").read_text().split()[:2]
    lines = fleet.known_hosts.read_text().splitlines()
    port = fleet.servers[1].port
    lines = [f"[127.0.0.1]:{port} {kind} {blob}" if f":{port} " in line else line for line in lines]
    known = tmp_path / "known_hosts"
    known.write_text("\n".join(lines) + "\n")
    inventory = yaml.safe_load(fleet.inventory.read_text())
    inventory["known_hosts"] = str(known)
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "agents",
            "fleet",
            "exec",
            "--inventory",
            str(path),
            "--group",
            "web",
            "--json",
            "--",
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    hosts = {h["host"]: h for h in json.loads(out.stdout)["hosts"]}
    assert hosts["app-01"]["status"] == "ok"
    real = subprocess.run(
        ["ssh-keygen", "-lf", str(fleet.servers[1].dir / "host_ed25519.pub")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[1]
    error = hosts["app-02"]["error"]
    assert "host key CHANGED" in error and real in error, error
    # an unknown host: not in known_hosts at all
    known.write_text(fleet.servers[0].known_hosts.read_text())
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "agents",
            "fleet",
            "exec",
            "--inventory",
            str(path),
            "--host",
            "app-03",
            "--json",
            "--",
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    error = json.loads(out.stdout)["hosts"][0]["error"]
    assert "not in known_hosts" in error and "SHA256:" in error
    # `fleet trust` shows the real key for a person to add; it writes nothing
    trusted = subprocess.run(
        [sys.executable, "-m", "agents", "fleet", "trust", "app-03", "--inventory", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert trusted.returncode == 0, trusted.stderr
    assert fleet.servers[2].host_key_pub.split()[1] in trusted.stdout
    assert known.read_text() == fleet.servers[0].known_hosts.read_text()


def test_a_hung_command_is_cut_at_its_timeout(fleet: Fleet) -> None:
    started = time.monotonic()
    out = fleet.run("exec", "--host", "app-01", "--timeout", "2", "--json", "--", "sleep 30")
    assert time.monotonic() - started < 15
    host = json.loads(out.stdout)["hosts"][0]
    assert host["status"] == "timeout" and "timed out after 2s" in host["error"]
    assert out.returncode == 1


def test_a_timed_out_command_is_stopped_there(fleet: Fleet, tmp_path: Path) -> None:
    """sshd without a pty leaves a command running when its channel closes: the cut
    must stop it there, not only stop waiting for it."""
    pid = tmp_path / "sleep.pid"
    proc = _exec_in_background(
        fleet,
        "--host",
        "app-01",
        "--timeout",
        "5",
        "--json",
        "--",
        f"echo $$ > {pid}; exec sleep 300",
    )
    pids = _pids(pid)
    try:
        out, err = proc.communicate(timeout=120)
        host = json.loads(out)["hosts"][0]
        assert host["status"] == "timeout", err
        assert host["error"] == "app-01: timed out after 5s", "and seen to end there"
        assert _still_running(pids) == []
    finally:
        _kill(pids)


def test_a_cut_command_s_children_are_stopped_too(fleet: Fleet, tmp_path: Path) -> None:
    parent, child, last = (tmp_path / f"{n}.pid" for n in ("sh", "child", "last"))
    command = (
        f"sh -c 'echo $$ > {parent}; sleep 300 & echo $! > {child};"
        f' sh -c "echo \\$\\$ > {last}; exec sleep 300"\''
    )
    proc = _exec_in_background(fleet, "--host", "app-01", "--timeout", "5", "--json", "--", command)
    pids = _pids(parent, child, last)
    try:
        out, err = proc.communicate(timeout=120)
        assert json.loads(out)["hosts"][0]["status"] == "timeout", err
        assert _still_running(pids) == []
    finally:
        _kill(pids)


def test_a_cut_command_that_ignores_term_is_killed(fleet: Fleet, tmp_path: Path) -> None:
    parent, child = tmp_path / "sh.pid", tmp_path / "child.pid"
    command = f"sh -c 'trap \"\" TERM; echo $$ > {parent}; sleep 300 & echo $! > {child}; wait'"
    proc = _exec_in_background(fleet, "--host", "app-01", "--timeout", "5", "--json", "--", command)
    pids = _pids(parent, child)
    try:
        out, err = proc.communicate(timeout=120)
        host = json.loads(out)["hosts"][0]
        assert host["status"] == "timeout", err
        assert host["error"] == "app-01: timed out after 5s", "and seen to end there"
        assert _still_running(pids) == []
    finally:
        _kill(pids)


def test_what_a_finished_command_left_running_is_left_alone(fleet: Fleet, tmp_path: Path) -> None:
    """Only a cut command is stopped: a command that ended by itself may leave a
    process behind on purpose, as it could before."""
    pid = tmp_path / "kept.pid"
    out = fleet.run(
        "exec",
        "--host",
        "app-01",
        "--json",
        "--",
        f"nohup sleep 300 >/dev/null 2>&1 & echo $! > {pid}; echo done",
    )
    pids = _pids(pid)
    try:
        host = json.loads(out.stdout)["hosts"][0]
        assert host["status"] == "ok" and host["stdout"] == "done\n", out.stderr
        time.sleep(2)  # the guard sees its EOF when the session ends; give it time to act
        assert _still_running(pids, within=0) == pids
    finally:
        _kill(pids)


def test_parallelism_bound_is_respected_on_the_servers(fleet: Fleet) -> None:
    log = fleet.root / "concurrency.log"
    command = (
        f"sh -c 'echo start $(date +%s.%N) >> {log}; sleep 1; echo end $(date +%s.%N) >> {log}'"
    )
    out = fleet.run("exec", "--group", "load", "--parallel", "2", "--json", "--", command)
    assert out.returncode == 0, out.stdout + out.stderr
    events = sorted(
        (float(ts), 1 if kind == "start" else -1)
        for kind, ts in (line.split() for line in log.read_text().splitlines())
    )
    running = peak = 0
    for _ts, delta in events:
        running += delta
        peak = max(peak, running)
    assert len(events) == 12
    assert peak == 2, f"peak concurrency {peak} with --parallel 2"


def test_jump_host_and_encrypted_key(fleet: Fleet) -> None:
    out = fleet.run("exec", "--group", "jump", "--group", "enc", "--json", "--", "echo ok")
    assert out.returncode == 0, out.stdout + out.stderr
    hosts = {h["host"]: h for h in json.loads(out.stdout)["hosts"]}
    assert hosts["behind-jump"]["stdout"] == "ok\n"
    assert hosts["encrypted-key"]["stdout"] == "ok\n"


def test_ctrl_c_cancels_the_remaining_hosts_cleanly(fleet: Fleet) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agents",
            "fleet",
            "exec",
            "--inventory",
            str(fleet.inventory),
            "--group",
            "load",
            "--parallel",
            "1",
            "--json",
            "--",
            "sleep 20",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C reaches a command a person started; a suite started in the background
        # (`make test &`) has SIGINT ignored, which its children would inherit and keep
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(2)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert time.monotonic() - started < 10
    assert proc.returncode == 1, err
    hosts = json.loads(out)["hosts"]
    assert len(hosts) == 6
    assert all(h["status"] == "cancelled" for h in hosts), hosts
    assert "Traceback" not in err


def test_ctrl_c_stops_the_running_commands_there(fleet: Fleet, tmp_path: Path) -> None:
    pid = tmp_path / "sh.pid"
    kids = tmp_path / "kids.pid"
    proc = _exec_in_background(
        fleet,
        "--host",
        "app-01",
        "--json",
        "--",
        f"sh -c 'sleep 300 & echo $! > {kids}; echo $$ > {pid}; exec sleep 301'",
    )
    pids = _pids(pid, kids)
    try:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        host = json.loads(out)["hosts"][0]
        assert host["status"] == "cancelled" and host["error"] == "app-01: cancelled", err
        assert _still_running(pids) == []
    finally:
        _kill(pids)


def test_history_records_every_fleet_command(fleet: Fleet) -> None:
    fleet.run("exec", "--host", "app-01", "--", "true")
    out = fleet.run("history", "--json")
    assert out.returncode == 0, out.stderr
    records = json.loads(out.stdout)
    latest = records[0]
    assert latest["action"] == "fleet exec"
    assert latest["target"] == "app-01"
    assert latest["outcome"] == "ok"
    assert latest["detail"]["command"] == "true"
    assert latest["detail"]["hosts"] == {"app-01": "ok"}
    assert latest["actor"]
    assert any(r["action"] == "fleet status" for r in records)
    assert os.path.exists(fleet.root / "operator" / "state.db")


def _upgrade_inventory(fleet: Fleet, tmp: Path, canary_command: str | None = None) -> Path:
    """app-01..03, each upgraded by starting its own agent (the 'new version') in the
    background; a marker file shows whether a host was touched."""
    inventory = yaml.safe_load(fleet.inventory.read_text())
    hosts = []
    for host in inventory["hosts"]:
        if not host["name"].startswith("app-"):
            continue
        name = host["name"]
        config = tmp / f"{name}.yml"
        config.write_text(
            f"host: {name}\nstate_dir: {tmp / name}\nexporter: {{enabled: false}}\n"
            "monitor: {checks: [{name: ok, kind: command, command: ['true'], interval: 1s}]}\n"
        )
        start = (
            f"echo {{version}} >> {tmp / name}.upgraded && "
            f"(setsid nohup {OPSAGENT} run --config {config} >/dev/null 2>&1 </dev/null &)"
        )
        hosts.append(host | {"config": str(config), "upgrade_command": start})
    if canary_command is not None:
        hosts[0]["upgrade_command"] = canary_command
    inventory["hosts"] = hosts
    path = tmp / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory))
    return path


def _stop_agents(tmp: Path) -> None:
    subprocess.run(["pkill", "-f", f"run --config {tmp}"], check=False)


def test_upgrade_canary_then_batches(fleet: Fleet, tmp_path: Path) -> None:
    inventory = _upgrade_inventory(fleet, tmp_path)
    base = [sys.executable, "-m", "agents", "fleet", "upgrade", "--inventory", str(inventory)]
    plan = subprocess.run(
        [*base, "--all", "--to", "0.1.0", "--batch", "2", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.startswith("canary:\n  app-01: echo 0.1.0 >> ")
    assert "batch 1:\n  app-02: " in plan.stdout and "  app-03: " in plan.stdout
    assert not list(tmp_path.glob("*.upgraded")), "a dry run changes nothing"
    try:
        out = subprocess.run(
            [*base, "--all", "--to", "0.1.0", "--batch", "2", "--wait", "60", "--json"],
            capture_output=True,
            text=True,
            timeout=180,
        )
        doc = json.loads(out.stdout)
        assert out.returncode == 0, out.stdout + out.stderr
        assert doc["upgraded"] == ["app-01", "app-02", "app-03"]
        assert doc["failed"] == {} and doc["untouched"] == []
        for name in ("app-01", "app-02", "app-03"):
            assert (tmp_path / f"{name}.upgraded").read_text() == "0.1.0\n"
    finally:
        _stop_agents(tmp_path)


def test_upgrade_stops_at_a_failed_canary_and_touches_nothing_else(
    fleet: Fleet, tmp_path: Path
) -> None:
    inventory = _upgrade_inventory(fleet, tmp_path, canary_command="echo no space left >&2; exit 1")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "agents",
            "fleet",
            "upgrade",
            "--inventory",
            str(inventory),
            "--all",
            "--to",
            "0.2.0",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1
    doc = json.loads(out.stdout)
    assert doc["stopped_at"] == "canary"
    assert doc["failed"] == {"app-01": "upgrade command exited 1: no space left"}
    assert doc["untouched"] == ["app-02", "app-03"] and doc["upgraded"] == []
    assert not list(tmp_path.glob("*.upgraded"))
    history = json.loads(fleet.run("history", "--json").stdout)
    latest = next(r for r in history if r["action"] == "fleet upgrade")
    assert latest["outcome"] == "stopped at canary"
    assert latest["detail"]["untouched"] == ["app-02", "app-03"]


def test_upgrade_stops_when_the_canary_does_not_come_back(fleet: Fleet, tmp_path: Path) -> None:
    inventory = _upgrade_inventory(fleet, tmp_path, canary_command="true")  # agent never starts
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "agents",
            "fleet",
            "upgrade",
            "--inventory",
            str(inventory),
            "--all",
            "--to",
            "0.1.0",
            "--wait",
            "3",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1
    doc = json.loads(out.stdout)
    assert doc["failed"] == {"app-01": "not healthy after upgrade: agent is not running"}
    assert doc["untouched"] == ["app-02", "app-03"]


def test_checks_backup_and_restore_test_over_the_fleet(fleet: Fleet, tmp_path: Path) -> None:
    """The runbook commands run each host's own opsagent and bring its JSON back."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("fleet backup\n" * 100)
    key = tmp_path / "repo.key"
    key.write_text("fleet\n")
    key.chmod(0o600)
    config = tmp_path / "app-01.yml"
    config.write_text(
        f"host: app-01\nstate_dir: {tmp_path / 'state'}\n"
        "monitor: {checks: [{name: ok, kind: command, command: ['true']}]}\n"
        f"backup: {{repository: {tmp_path / 'repo'}, password_file: {key},"
        f" sources: [{{name: docs, kind: files, paths: ['{data}']}}]}}\n"
        f"restore_test: {{sandbox: {{kind: local, root: {tmp_path / 'sandbox'}}}}}\n"
    )
    init = subprocess.run(
        [OPSAGENT, "backup", "init", "--config", str(config)], capture_output=True, text=True
    )
    assert init.returncode == 0, init.stderr
    inventory = yaml.safe_load(fleet.inventory.read_text())
    inventory["hosts"] = [
        h | {"config": str(config)} for h in inventory["hosts"] if h["name"] == "app-01"
    ]
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory))
    base = [sys.executable, "-m", "agents", "fleet"]
    for args, check in (
        (["checks"], lambda d: d[0]["name"] == "ok" and d[0]["status"] == "ok"),
        (["backup", "run"], lambda d: d["run"]["status"] == "ok"),
        (["restore-test", "run"], lambda d: d["status"] == "ok"),
    ):
        out = subprocess.run(
            [*base, *args, "--inventory", str(path), "--all", "--json"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        host = json.loads(out.stdout)["hosts"][0]
        assert host["host"] == "app-01" and check(host["data"]), host


def _exec_in_background(fleet: Fleet, *args: str) -> subprocess.Popen[str]:
    """`fleet exec` started as a person would: Ctrl-C (SIGINT) at its default."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agents",
            "fleet",
            "exec",
            "--inventory",
            str(fleet.inventory),
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _pids(*files: Path, within: float = 60) -> list[int]:
    """The process ids a remote command wrote to these files, once it has written all."""
    deadline = time.monotonic() + within
    while not all(f.exists() and f.read_text().strip() for f in files):
        assert time.monotonic() < deadline, f"the remote command never wrote {files}"
        time.sleep(0.1)
    return [int(f.read_text()) for f in files]


def _still_running(pids: list[int], within: float = 30) -> list[int]:
    """Those of `pids` still running after polling for up to `within` seconds (the
    sshd runs on this machine, so its processes are ours to see)."""
    deadline = time.monotonic() + within
    while True:
        running = [p for p in pids if _running(p)]
        if not running or time.monotonic() >= deadline:
            return running
        time.sleep(0.2)


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie may wait long for its reaper)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _kill(pids: list[int]) -> None:
    """Leave nothing behind when a test fails."""
    for pid in pids:
        if _running(pid):
            os.kill(pid, signal.SIGKILL)
