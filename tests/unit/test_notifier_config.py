"""Notifier config: shape and required keys at load; secret files checked on the host."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.config import (
    ConfigError,
    parse_config,
    resolve_secret,
    secret_file_problem,
    secret_file_problems,
)


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return info.value.lines


@pytest.mark.parametrize(
    ("notifier", "line"),
    [
        ("{kind: pagerduty}", "[0].routing_key_file: required (or routing_key: ${ENV_VAR})"),
        ("{kind: slack}", "[0].webhook_url_file: required (or webhook_url: ${ENV_VAR})"),
        ("{kind: webhook}", "[0].url: required"),
        (
            "{kind: webhook, url: not a url}",
            "[0].url: must be an http:// or https:// URL with a host and no spaces,"
            " got 'not a url'",
        ),
        (
            "{kind: webhook, url: 'file:///etc/passwd'}",
            "[0].url: must be an http:// or https:// URL with a host, got 'file:///etc/passwd'",
        ),
        (
            "{kind: webhook, url: 'https:///path'}",
            "[0].url: must be an http:// or https:// URL with a host, got 'https:///path'",
        ),
        (
            "{kind: webhook, url: 'http://h:port/x'}",
            "[0].url: must be an http:// or https:// URL with a host and a numeric port,"
            " got 'http://h:port/x'",
        ),
        (
            "{kind: pagerduty, routing_key_file: /k, url: 'events.pagerduty.com/v2/enqueue'}",
            "[0].url: must be an http:// or https:// URL with a host,"
            " got 'events.pagerduty.com/v2/enqueue'",
        ),
        (
            "{kind: heartbeat, url: 'hc-ping.com/{job}'}",
            "[0].url: must be an http:// or https:// URL with a host, got 'hc-ping.com/{job}'",
        ),
        (
            "{kind: pagerduty, routing_key: '${PD_KEY}', routing_key_file: /k}",
            "[0].routing_key_file: give routing_key_file or routing_key, not both",
        ),
        (
            "{kind: webhook, url: 'https://h/x', secret: '${S}', secret_file: /s}",
            "[0].secret_file: give secret_file or secret, not both",
        ),
        (
            "{kind: email, smtp: 'mail:smtp', from: a@b.c, to: [d@e.f]}",
            "[0].smtp: expected HOST[:PORT] of an SMTP server, got 'mail:smtp'",
        ),
        (
            "{kind: email, smtp: mail, from: ops, to: [d@e.f]}",
            "[0].from: expected a mail address like ops@example.com, got 'ops'",
        ),
        (
            '{kind: email, smtp: mail, from: a@b.c, to: [d@e.f, "x@y\\nBcc: z@w"]}',
            "[0].to[1]: expected a mail address like ops@example.com, got 'x@y\\nBcc: z@w'",
        ),
        (
            "{kind: email, smtp: mail, from: a@b.c, to: [d@e.f], username: ops}",
            "[0].password_file: required (or password: ${ENV_VAR})",
        ),
    ],
)
def test_a_bad_notifier_is_one_line_naming_its_yaml_path(notifier: str, line: str) -> None:
    assert errors(f"cases: {{notify: [{notifier}]}}") == [f"config.yml: cases.notify{line}"]


def test_a_bad_reference_is_reported_once() -> None:
    assert errors("cases: {notify: [{kind: pagerduty, routing_key: abc}]}") == [
        "config.yml: cases.notify[0].routing_key: secrets are given by reference only: use the"
        " matching *_file key or an environment reference like ${MY_SECRET}"
    ]


def test_every_bad_notifier_at_once() -> None:
    lines = errors(
        "cases:\n  notify:\n"
        "    - {kind: webhook, url: 'https://ok.example/x'}\n"
        "    - {kind: pagerduty}\n"
        "    - {kind: slack}\n"
        "    - {kind: webhook, url: not a url}\n"
    )
    assert [line.split(": ")[1] for line in lines] == [
        "cases.notify[1].routing_key_file",
        "cases.notify[2].webhook_url_file",
        "cases.notify[3].url",
    ]


def test_good_notifiers_load() -> None:
    config = parse_config(
        "cases:\n  notify:\n"
        "    - {kind: pagerduty, routing_key: '${PD_KEY}'}\n"
        "    - {kind: slack, webhook_url_file: /etc/opsagent/slack.url}\n"
        "    - {kind: webhook, url: 'http://[::1]:8080/hook'}\n"
        "    - {kind: email, smtp: '[::1]:2525', from: 'Ops <ops@example.com>', to: [a@b.c],"
        " username: ops, password_file: /etc/opsagent/smtp.pass}\n"
        "    - {kind: email, smtp: mail.example.com, from: ops@example.com, to: [a@b.c]}\n"
        "    - {kind: heartbeat, url: 'https://hc-ping.com/KEY/opsagent-{job}'}\n"
    )
    email, plain = config.cases.notify[3], config.cases.notify[4]
    assert email.kind == "email" and email.endpoint == ("::1", 2525)
    assert plain.kind == "email" and plain.endpoint == ("mail.example.com", 25)


def secret(tmp_path: Path, name: str, text: str = "s3cret\n", mode: int = 0o600) -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return path


def test_secret_file_problems_name_the_file_and_the_fix(tmp_path: Path) -> None:
    good = secret(tmp_path, "good")
    world = secret(tmp_path, "world", mode=0o644)
    group = secret(tmp_path, "group", mode=0o640)
    writable = secret(tmp_path, "writable", mode=0o620)
    empty = secret(tmp_path, "empty", "\n")
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00")
    missing = tmp_path / "missing"
    assert secret_file_problem(good) is None
    assert secret_file_problem(world) == (
        f"{world}: secret file is readable by every user (mode 0644); run: chmod 600 {world}"
    )
    assert secret_file_problem(group) == (
        f"{group}: secret file is open to its group or other users (mode 0640, must be 0600"
        f" or stricter); run: chmod 600 {group}"
    )
    assert "(mode 0620" in (secret_file_problem(writable) or "")
    assert secret_file_problem(empty) == f"{empty}: secret file is empty"
    assert secret_file_problem(binary) == f"{binary}: secret file is not UTF-8 text"
    assert secret_file_problem(missing) == f"{missing}: secret file does not exist"
    assert secret_file_problem(tmp_path) == f"{tmp_path}: secret file is not a regular file"


def test_a_url_file_must_hold_a_url_and_never_shows_it(tmp_path: Path) -> None:
    url = secret(tmp_path, "slack.url", "https://hooks.slack.com/services/T0/B0/XYZ\n")
    bad = secret(tmp_path, "bad.url", "not a url with a T0ken\n")
    assert secret_file_problem(url, holds_url=True) is None
    problem = secret_file_problem(bad, holds_url=True)
    assert problem == f"{bad}: does not hold an http:// or https:// URL with a host"
    assert "T0ken" not in problem


def test_every_secret_file_of_the_config_is_checked_by_its_yaml_path(tmp_path: Path) -> None:
    good = secret(tmp_path, "good")
    world = secret(tmp_path, "world", mode=0o644)
    missing = tmp_path / "missing"
    config = parse_config(
        f"""
monitor:
  checks:
    - {{name: db, kind: postgres, dsn: "postgresql://u@h/d", password_file: {missing}}}
backup: {{repository: /r, password_file: {good}}}
cases:
  notify:
    - {{kind: webhook, url: "https://h.example/x", secret_file: {good}}}
    - {{kind: pagerduty, routing_key_file: {world}}}
    - {{kind: slack, webhook_url_file: {missing}}}
"""
    )
    assert secret_file_problems(config) == [
        f"monitor.checks[0].password_file: {missing}: secret file does not exist",
        f"cases.notify[1].routing_key_file: {world}: secret file is readable by every user"
        f" (mode 0644); run: chmod 600 {world}",
        f"cases.notify[2].webhook_url_file: {missing}: secret file does not exist",
    ]


def test_resolve_secret_refuses_a_group_readable_file_too(tmp_path: Path) -> None:
    group = secret(tmp_path, "group", mode=0o640)
    with pytest.raises(ConfigError, match="open to its group or other users"):
        resolve_secret(file=group)
    assert resolve_secret(file=secret(tmp_path, "ok")) == "s3cret"
