"""agents.ssh is a shared room: the fleet and the restore test use it, it uses neither."""

from __future__ import annotations

import ast
from pathlib import Path

import agents.ssh


def test_ssh_imports_no_driver_or_command_line() -> None:
    tree = ast.parse(Path(agents.ssh.__file__).read_text())
    imported = {
        node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    upward = {m for m in imported if m.startswith(("agents.fleet", "agents.cli", "agents.daemon"))}
    assert upward == set()


def test_a_plain_target_needs_only_where_and_who() -> None:
    target = agents.ssh.Target("sandbox", "127.0.0.1", 2222, "tester", None)
    assert target.where == "sandbox (tester@127.0.0.1:2222)"
    assert target.known_hosts_name() == "[127.0.0.1]:2222"
    assert target.jump is None and target.keepalive == 0.0 and target.connect_timeout == 30.0
