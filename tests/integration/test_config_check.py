"""`opsagent config check` as a person runs it: every bad notifier is one line naming its
YAML path, exit 2, no traceback; as the service user too; and the agent names a bad
secret file at start and runs on."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.support import services


def check(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "agents", "config", "check", "--quiet", *args, str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "OPSAGENT_CONFIG": ""},
    )
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc


def write(tmp_path: Path, notifiers: str) -> Path:
    config = tmp_path / "config.yml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\ncases:\n  notify:\n{notifiers}")
    return config


def secret(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.mark.parametrize(
    ("notifier", "problem"),
    [
        ("{kind: pagerduty}", "cases.notify[0].routing_key_file: required (or routing_key:"),
        ("{kind: slack}", "cases.notify[0].webhook_url_file: required (or webhook_url:"),
        (
            "{kind: webhook, url: not a url}",
            "cases.notify[0].url: must be an http:// or https:// URL with a host and no"
            " spaces, got 'not a url'",
        ),
    ],
)
def test_a_bad_notifier_fails_the_check(tmp_path: Path, notifier: str, problem: str) -> None:
    config = write(tmp_path, f"    - {notifier}\n")
    proc = check(config)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith(f"{config}: {problem}")


def test_secret_files_are_checked_and_each_problem_is_one_line(tmp_path: Path) -> None:
    world = secret(tmp_path / "world.key", "KEY\n", 0o644)
    group = secret(tmp_path / "group.key", "KEY\n", 0o640)
    missing = tmp_path / "missing.key"
    slack = secret(tmp_path / "slack.url", "no url but a s3cret\n")
    good = secret(tmp_path / "good.key", "KEY\n")
    config = write(
        tmp_path,
        f"    - {{kind: pagerduty, routing_key_file: {good}}}\n"
        f"    - {{kind: pagerduty, routing_key_file: {world}}}\n"
        f"    - {{kind: pagerduty, routing_key_file: {missing}}}\n"
        f"    - {{kind: webhook, url: 'https://h.example/x', secret_file: {group}}}\n"
        f"    - {{kind: slack, webhook_url_file: {slack}}}\n",
    )
    proc = check(config)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"{config}: cases.notify[1].routing_key_file: {world}: secret file is readable by"
        f" every user (mode 0644); run: chmod 600 {world}",
        f"{config}: cases.notify[2].routing_key_file: {missing}: secret file does not exist",
        f"{config}: cases.notify[3].secret_file: {group}: secret file is open to its group or"
        f" other users (mode 0640, must be 0600 or stricter); run: chmod 600 {group}",
        f"{config}: cases.notify[4].webhook_url_file: {slack}: does not hold an http:// or"
        " https:// URL with a host",
    ]
    assert "s3cret" not in proc.stderr
    # checked on another machine: the files are the host's business
    assert check(config, "--skip-secret-files").returncode == 0
    for path in (world, group):
        path.chmod(0o600)
    missing.write_text("KEY\n")
    slack.write_text("https://hooks.slack.com/services/T0/B0/X\n")
    assert check(config).returncode == 0


def test_the_service_user_is_told_it_cannot_read_a_key_root_can() -> None:
    from tests.support import unprivileged

    runner = unprivileged.runner_or_skip()
    base = Path(tempfile.mkdtemp(prefix="opsagent-unpriv-", dir="/tmp"))
    try:
        base.chmod(0o755)
        key = secret(base / "pd.key", "KEY\n")  # root's, 0600
        config = base / "config.yml"
        config.write_text(
            f"state_dir: {base / 'state'}\n"
            f"cases: {{notify: [{{kind: pagerduty, routing_key_file: {key}}}]}}\n"
        )
        config.chmod(0o644)
        assert check(config).returncode == 0
        proc = unprivileged.run(runner, ["-m", "agents", "config", "check", "--quiet", str(config)])
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert proc.stderr == (
            f"{config}: cases.notify[0].routing_key_file: {key}: cannot read secret:"
            " Permission denied\n"
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_the_agent_names_a_bad_secret_file_at_start_and_runs_on(tmp_path: Path) -> None:
    missing = tmp_path / "pd.key"
    config = tmp_path / "config.yml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        f"exporter: {{listen: '127.0.0.1:{services.free_port()}'}}\n"
        "monitor: {host_metrics: false}\n"
        f"cases: {{notify: [{{kind: pagerduty, routing_key_file: {missing}}}]}}\n"
    )
    agent = subprocess.Popen(
        [sys.executable, "-m", "agents", "--log-format", "text", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert agent.stdout is not None
        deadline = time.monotonic() + 60
        line = ""
        while "routing_key_file" not in line and time.monotonic() < deadline:
            line = agent.stdout.readline()
            assert line or agent.poll() is None, "the agent stopped"
        assert (
            f"cases.notify[0].routing_key_file: {missing}: secret file does not exist;"
            " what uses it fails until this is fixed" in line
        )
        time.sleep(1)
        assert agent.poll() is None  # still running
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=60)
