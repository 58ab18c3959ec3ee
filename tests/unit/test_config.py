"""Config loading: every field type, every error path as one exact line, garbage never crashes."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from agents.config import (
    CommandCheck,
    ConfigError,
    DiskCheck,
    FilesSource,
    RandomWithin,
    config_path,
    load_config,
    parse_config,
    resolve_secret,
)
from agents.records.base import DEFER_BUILD
from agents.results import Severity
from agents.units import format_duration, parse_duration, parse_size
from tests.support.probe import run_probe


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "config.yml")
    return info.value.lines


def one_error(text: str) -> str:
    lines = errors(text)
    assert len(lines) == 1, lines
    return lines[0]


def test_empty_file_runs_on_defaults() -> None:
    config = parse_config("")
    assert config.state_dir == Path("/var/lib/opsagent")
    assert config.exporter.listen == "127.0.0.1:9108"
    assert config.exporter.port == 9108
    assert config.monitor.checks == []
    assert config.backup is None
    assert config.host


def test_every_preset_default_is_what_validating_it_gives() -> None:
    """A section's default is built without validation (`preset`, so that importing the
    config builds no validator); each must equal the same values validated."""
    import agents.config as config_module
    from agents.docs import config_models

    seen = 0
    for model in {*config_models(), config_module.Inventory}:
        for name, field in model.model_fields.items():
            default = field.default
            if isinstance(default, BaseModel):
                data = default.model_dump(mode="json", by_alias=True, exclude_unset=True)
                assert type(default).model_validate(data) == default, f"{model.__name__}.{name}"
                seen += 1
    assert seen >= 10


def test_the_default_holiday_region_is_known_to_the_holidays_package() -> None:
    """The config skips asking `holidays` about the built-in region (loading the package
    costs every command 17 MB): the package must have it."""
    import holidays

    from agents.config.models.cases import DEFAULT_REGION

    country, subdivision = DEFAULT_REGION
    assert subdivision in holidays.country_holidays(country).subdivisions
    assert parse_config("").cases.calendar.holidays.country == country


def test_loading_a_config_leaves_holidays_and_plugins_alone() -> None:
    """`import agents.config` and loading a config at the defaults import neither the
    `holidays` package nor pydantic's plugin search, and build only the config's own
    validator (issue #20: 47 MB and 0.3 s of every command)."""
    probe = (
        "import json, os, sys\n"
        "import agents.config as c\n"
        "c.parse_config('monitor: {checks: [{name: d, kind: disk}]}')\n"
        "built = [n for n in c.__all__ if getattr(getattr(c, n), '__pydantic_complete__', 0)]\n"
        "plugins = os.environ.get('PYDANTIC_DISABLE_PLUGINS')\n"
        "print(json.dumps([sorted(sys.modules), built, plugins]))\n"
    )
    modules, built, plugins = run_probe(probe)
    assert [m for m in modules if m.split(".")[0] == "holidays"] == []
    assert built == (["Config"] if DEFER_BUILD else built)
    assert plugins == "__all__"


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [
        ("127.0.0.1:9108", "127.0.0.1", 9108),
        ("[::1]:9108", "::1", 9108),
        ("[::]:9100", "::", 9100),
        ("agent.example:0", "agent.example", 0),
        (":9108", "0.0.0.0", 9108),
    ],
)
def test_listen_addresses(listen: str, host: str, port: int) -> None:
    exporter = parse_config(f"exporter: {{listen: '{listen}'}}").exporter
    assert (exporter.host, exporter.port) == (host, port)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("15s", 15),
        ("5m", 300),
        ("26h", 93600),
        ("7d", 604800),
        ("2w", 1209600),
        ("1h30m", 5400),
        ("250ms", 0.25),
        (90, 90),
        (1.5, 1.5),
    ],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)
    config = parse_config(f"monitor: {{checks: [{{name: d, kind: disk, interval: {text}}}]}}")
    assert config.monitor.checks[0].interval == timedelta(seconds=seconds)


def test_duration_round_trips_through_format() -> None:
    for text in ("15s", "5m", "26h", "7d", "1d2h3m4s", "250ms"):
        assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("16MiB", 16 * 2**20),
        ("20GiB", 20 * 2**30),
        ("10MB", 10**7),
        ("512", 512),
        (512, 512),
        ("1.5KiB", 1536),
    ],
)
def test_sizes(text: str | int, size: int) -> None:
    assert parse_size(text) == size


def test_full_example_and_local_configs_are_valid(repo_root: Path) -> None:
    example = load_config(repo_root / "deploy/config/example.yml")
    assert example.backup is not None
    assert example.backup.pack_size == 16 * 2**20
    assert example.backup.s3.object_lock is not None
    assert example.backup.s3.object_lock.days == 35
    assert example.cases.calendar.holidays.subdivision == "ON"
    assert example.cases.targets[Severity.CRITICAL].response == timedelta(hours=4)
    assert {c.kind for c in example.monitor.checks} == {
        "http",
        "disk",
        "tcp",
        "process",
        "postgres",
        "mysql",
        "file_age",
        "command",
    }
    assert {s.kind for s in example.backup.sources} == {"postgres", "mysql", "sqlite", "files"}
    local = load_config(repo_root / "deploy/config/local.yml")
    assert local.backup is not None and local.backup.repository == "./var/repository"


def test_typed_objects_and_frozen() -> None:
    config = parse_config(
        """
monitor:
  checks:
    - {name: root, kind: disk, min_free_percent: 10}
    - {name: c, kind: command, command: ["true", "-x"]}
backup:
  repository: s3://bucket/prefix
  sources: [{name: docs, kind: files, paths: [/srv]}]
  schedule: {weekly_on: sunday, at: "04:00", timezone: America/Toronto}
restore_test: {snapshot: {random_within: 7d}}
"""
    )
    disk, command = config.monitor.checks
    assert isinstance(disk, DiskCheck) and disk.min_free_percent == 10
    assert isinstance(command, CommandCheck) and command.command == ["true", "-x"]
    assert config.backup is not None
    assert isinstance(config.backup.sources[0], FilesSource)
    assert config.backup.schedule is not None
    assert config.backup.schedule.period == timedelta(days=7)
    assert config.restore_test is not None
    assert isinstance(config.restore_test.snapshot, RandomWithin)
    with pytest.raises(Exception, match="frozen"):
        config.host = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            "backup: {repository: /r, retention: {keep_daily: -1}}",
            "config.yml: backup.retention.keep_daily: must be >= 0, got -1",
        ),
        (
            "backup: {repository: /r, retention: {}}",
            "config.yml: backup.retention: an empty retention policy would remove every snapshot;"
            " give a rule",
        ),
        (
            "backup: {repository: /r, retention: {keep_dayly: 3}}",
            "config.yml: backup.retention.keep_dayly: unknown key (did you mean keep_daily?)",
        ),
        ("backup: {}", "config.yml: backup.repository: required"),
        (
            "backup: {repository: 'ftp://x/y'}",
            "config.yml: backup.repository: expected a path, file:///path or s3://bucket/prefix,"
            " got 'ftp://x/y'",
        ),
        (
            "backup: {repository: 's3://ab'}",
            "config.yml: backup.repository: expected s3://BUCKET[/PREFIX], got 's3://ab'",
        ),
        (
            "backup: {repository: /r, pack_size: lots}",
            "config.yml: backup.pack_size: expected a size like 16MiB or 20GiB, got 'lots'",
        ),
        (
            "backup: {repository: /r, password: hunter2}",
            "config.yml: backup.password: secrets are given by reference only: use the matching"
            " *_file key or an environment reference like ${MY_SECRET}",
        ),
        (
            "backup: {repository: /r, sources: [{name: db, kind: postgres,"
            " dsn: 'postgresql://u:pw@h/db'}]}",
            "config.yml: backup.sources[0].dsn: contains a password; use password_file or"
            " ${ENV_VAR} instead",
        ),
        (
            "backup: {repository: /r, sources: [{name: a, kind: files, paths: [/a]},"
            " {name: a, kind: files, paths: [/b]}]}",
            "config.yml: backup.sources: two sources are named 'a'; names must be unique",
        ),
        (
            "backup: {repository: /r, schedule: {daily_at: '25:00'}}",
            "config.yml: backup.schedule.daily_at: expected a time of day HH:MM, got '25:00'",
        ),
        (
            "backup: {repository: /r, schedule: {daily_at: '02:00', every: 1h}}",
            "config.yml: backup.schedule: give exactly one of daily_at, weekly_on (with at) or"
            " every",
        ),
        (
            "backup: {repository: /r, schedule: {daily_at: '02:00', timezone: Mars/Base}}",
            "config.yml: backup.schedule.timezone: unknown time zone 'Mars/Base'",
        ),
        (
            "monitor: {checks: [{name: w, kind: http}]}",
            "config.yml: monitor.checks[0].url: required",
        ),
        (
            "monitor: {checks: [{name: w, kind: htp}]}",
            "config.yml: monitor.checks[0]: kind: must be one of 'http', 'tcp', 'process',"
            " 'postgres', 'mysql', 'disk', 'file_age', 'command', got 'htp'",
        ),
        ("monitor: {checks: [{name: w}]}", "config.yml: monitor.checks[0]: kind: required"),
        (
            "monitor: {checks: [{name: w, kind: disk, timeout: 5x}]}",
            "config.yml: monitor.checks[0].timeout: expected a duration like 15s, 5m, 26h or 7d,"
            " got '5x'",
        ),
        (
            "monitor: {checks: [{name: w, kind: command, command: [x], timeout: 5x}]}",
            "config.yml: monitor.checks[0].timeout: expected a duration like 15s, 5m, 26h or 7d,"
            " got '5x'",
        ),
        (
            "monitor: {checks: [{name: w, kind: disk, failures_before_alert: 0}]}",
            "config.yml: monitor.checks[0].failures_before_alert: must be >= 1, got 0",
        ),
        (
            "monitor: {checks: [{name: w, kind: disk, severity: urgent}]}",
            "config.yml: monitor.checks[0].severity: must be one of 'critical', 'major',"
            " 'moderate' or 'minor', got 'urgent'",
        ),
        (
            "monitor: {checks: [{name: w, kind: tcp, host: h, port: 70000}]}",
            "config.yml: monitor.checks[0].port: must be <= 65535, got 70000",
        ),
        (
            "monitor: {checks: [{name: w, kind: tcp, host: h, port: abc}]}",
            "config.yml: monitor.checks[0].port: must be an integer, got 'abc'",
        ),
        (
            "monitor: {checks: [{name: w, kind: command, command: 'ls -l'}]}",
            "config.yml: monitor.checks[0]: command is a string: give a list of arguments, or"
            " set shell: true",
        ),
        (
            "monitor: {checks: [{name: 'bad name', kind: disk}]}",
            "config.yml: monitor.checks[0].name: must match ^[A-Za-z0-9_.:-]+$, got 'bad name'",
        ),
        (
            "monitor: {checks: {name: w}}",
            "config.yml: monitor.checks: must be a list, got a mapping",
        ),
        (
            "exporter: {listen: nowhere}",
            "config.yml: exporter.listen: expected HOST:PORT, got 'nowhere'",
        ),
        (
            "exporter: {listen: '::1:9108'}",
            "config.yml: exporter.listen: an IPv6 address goes in brackets, [::1]:PORT;"
            " got '::1:9108'",
        ),
        (
            "exporter: {listen: '[localhost]:9108'}",
            "config.yml: exporter.listen: expected [IPV6]:PORT, got '[localhost]:9108'",
        ),
        (
            "monitor: {checks: [{name: t, kind: tcp, host: h, port: 1, expect: '(PONG'}]}",
            "config.yml: monitor.checks[0].expect: '(PONG' is not a regular expression:"
            " missing ), unterminated subpattern at position 0",
        ),
        (
            "exporter: {enabled: maybe}",
            "config.yml: exporter.enabled: must be true or false, got 'maybe'",
        ),
        (
            "cases: {calendar: {holidays: {country: CA, subdivision: ON}}}",
            "config.yml: cases.calendar.holidays.subdivision: must be a string, got true (a"
            " boolean); quote it: YAML reads on/off/yes/no unquoted as booleans",
        ),
        (
            "cases: {calendar: {hours: '18:00-08:00'}}",
            "config.yml: cases.calendar.hours: expected HH:MM-HH:MM with start before end, got"
            " '18:00-08:00'",
        ),
        (
            "cases: {store: 'mysql://x'}",
            "config.yml: cases.store: expected sqlite:///PATH or postgresql://..., got 'mysql://x'",
        ),
        (
            "cases: {notify: [{kind: email, smtp: 'h:25', from: a@b}]}",
            "config.yml: cases.notify[0].to: required",
        ),
        ("hots: x", "config.yml: hots: unknown key (did you mean host?)"),
        ("- a\n- b", "config.yml: (top level): must be a mapping, got a list"),
        (
            "a: [1, 2",
            "config.yml: line 1, column 9: YAML syntax error: expected ',' or ']',"
            " but got '<stream end>'",
        ),
    ],
)
def test_error_lines(text: str, line: str) -> None:
    assert one_error(text) == line


def test_all_errors_at_once() -> None:
    lines = errors(
        "exporter: {listen: x}\n"
        "backup: {repository: /r, retention: {keep_daily: -1, keep_weekly: -2}}\n"
        "monitor: {checks: [{name: a, kind: disk, interval: never}]}\n"
    )
    assert lines == [
        "config.yml: exporter.listen: expected HOST:PORT, got 'x'",
        "config.yml: monitor.checks[0].interval: expected a duration like 15s, 5m, 26h or 7d,"
        " got 'never'",
        "config.yml: backup.retention.keep_daily: must be >= 0, got -1",
        "config.yml: backup.retention.keep_weekly: must be >= 0, got -2",
    ]


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yml")
    assert info.value.lines == [f"{tmp_path / 'nope.yml'}: no such file"]


def test_config_path_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("OPSAGENT_CONFIG", raising=False)
    assert config_path(None) == Path("/etc/opsagent/config.yml")
    monkeypatch.setenv("OPSAGENT_CONFIG", str(tmp_path / "env.yml"))
    assert config_path(None) == tmp_path / "env.yml"
    assert config_path(tmp_path / "flag.yml") == tmp_path / "flag.yml"


def test_secrets_resolve_by_reference_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSAGENT_T_SECRET", "s3cr3t-env")
    key = tmp_path / "key"
    key.write_text("s3cr3t-file\n")
    config = parse_config(
        f"backup: {{repository: /r, password: '${{OPSAGENT_T_SECRET}}', password_file: {key}}}"
    )
    assert config.backup is not None
    assert resolve_secret(config.backup.password) == "s3cr3t-env"
    assert resolve_secret(file=config.backup.password_file) == "s3cr3t-file"
    monkeypatch.delenv("OPSAGENT_T_SECRET")
    with pytest.raises(ConfigError, match="environment variable OPSAGENT_T_SECRET is not set"):
        resolve_secret(config.backup.password)


def test_redacted_config_shows_no_secret(tmp_path: Path) -> None:
    config = parse_config(
        "cases:\n  notify:\n    - {kind: webhook, url: 'https://h.example/x?token=abc123',"
        " secret: '${HOOK_SECRET}'}\n"
    )
    text = yaml.safe_dump(config.redacted())
    assert "abc123" not in text
    assert "${HOOK_SECRET}" in text


_KEYS = st.sampled_from(
    [
        "host",
        "state_dir",
        "exporter",
        "listen",
        "monitor",
        "checks",
        "name",
        "kind",
        "disk",
        "http",
        "interval",
        "backup",
        "repository",
        "sources",
        "retention",
        "keep_daily",
        "schedule",
        "daily_at",
        "cases",
        "notify",
        "calendar",
        "restore_test",
        "snapshot",
        "sandbox",
        "paths",
        "timeout",
        "severity",
        "s3",
        "object_lock",
        "targets",
        "critical",
    ]
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.sampled_from(["15s", "5m", "-1", "disk", "http", "s3://b/p", "02:00"]),
)
_TREES = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(_KEYS, children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_TREES)
def test_generated_structures_never_crash(tree: object) -> None:
    text = yaml.safe_dump(tree)
    try:
        parse_config(text)
    except ConfigError as exc:
        assert exc.lines
        assert all("\n" not in line and line.startswith("config.yml: ") for line in exc.lines)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_garbage_text_never_crashes(text: str) -> None:
    try:
        parse_config(text)
    except ConfigError as exc:
        assert all("\n" not in line for line in exc.lines)


def test_cli_config_check_exit_codes(tmp_path: Path) -> None:

    bad = tmp_path / "bad.yml"
    bad.write_text("backup: {repository: /r, retention: {keep_daily: -1}}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "agents", "config", "check", str(bad)],
        capture_output=True,
        text=True,
        env={**os.environ, "OPSAGENT_CONFIG": ""},
    )
    assert proc.returncode == 2
    assert proc.stderr == f"{bad}: backup.retention.keep_daily: must be >= 0, got -1\n"
    assert "Traceback" not in proc.stderr + proc.stdout
    good = tmp_path / "good.yml"
    good.write_text("host: h1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "agents", "config", "check", "--json", "--config", str(good)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert '"host": "h1"' in proc.stdout


def test_the_example_inventory_loads_and_bad_ones_say_where(tmp_path: Path) -> None:
    from agents.config import load_inventory

    repo = Path(__file__).resolve().parents[2]
    inventory = load_inventory(repo / "deploy/config/inventory.example.yml")
    assert [h.name for h in inventory.hosts] == ["bastion", "app-01", "app-02", "db-01"]
    bad = tmp_path / "inventory.yml"
    bad.write_text(
        "hosts:\n"
        "  - {name: a, address: 10.0.0.1, jump: nowhere}\n"
        "  - {name: a, address: 10.0.0.2, prot: 22}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_inventory(bad)
    lines = caught.value.lines
    assert f"{bad}: known_hosts: required" in lines
    assert any(line.startswith(f"{bad}: hosts[1].prot: unknown key") for line in lines)
    bad.write_text("known_hosts: /k\nhosts:\n  - {name: a, address: 10.0.0.1, jump: nowhere}\n")
    with pytest.raises(ConfigError, match="jump host 'nowhere' is not in the inventory"):
        load_inventory(bad)
