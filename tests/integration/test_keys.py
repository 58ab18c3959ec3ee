"""Repository keys over real S3: several passwords open one master key; rotation, removal
of a departed person's key, paper escrow and recovery; world-readable secrets refused;
every key change audited."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.services import S3Server


def _config(tmp: Path, name: str, server: S3Server, bucket: str, password: str) -> Path:
    key = tmp / f"{name}.key"
    key.write_text(password + "\n")
    key.chmod(0o600)
    for secret, value in (("id", server.access_key), ("secret", server.secret_key)):
        path = tmp / f"s3.{secret}"
        path.write_text(value)
        path.chmod(0o600)
    data = tmp / "data"
    if not data.exists():
        data.mkdir()
        (data / "a.txt").write_text("alpha\n" * 1000)
    config = tmp / f"{name}.yml"
    config.write_text(
        f"""
host: keys-host
state_dir: {tmp / "state"}
backup:
  repository: s3://{bucket}/repo
  s3: {{endpoint_url: "{server.endpoint_url}", access_key_id_file: {tmp / "s3.id"},
        secret_access_key_file: {tmp / "s3.secret"}}}
  password_file: {key}
  sources: [{{name: docs, kind: files, paths: ["{data}"]}}]
"""
    )
    return config


def _run(
    config: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "agents", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def _keys(config: Path) -> list[dict]:  # type: ignore[type-arg]
    out = _run(config, "backup", "key", "list", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_rotate_remove_escrow_and_recover(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    alice = _config(tmp_path, "alice", s3_server, s3_bucket, "alice-password")
    assert _run(alice, "backup", "init").returncode == 0
    assert _run(alice, "backup", "run").returncode == 0

    bob_password = tmp_path / "bob.new"
    bob_password.write_text("bob-password\n")
    bob_password.chmod(0o600)
    added = _run(
        alice, "backup", "key", "add", "--new-password-file", str(bob_password), "--label", "bob"
    )
    assert added.returncode == 0, added.stderr
    keys = _keys(alice)
    assert len(keys) == 2 and [k["label"] for k in keys] == ["", "bob"]
    assert [k["current"] for k in keys] == [True, False]

    bob = _config(tmp_path, "bob", s3_server, s3_bucket, "bob-password")
    restored = _run(bob, "restore", "latest", "--to", str(tmp_path / "r1"))
    assert restored.returncode == 0, restored.stderr
    assert (tmp_path / "r1").rglob("a.txt")

    # alice leaves: bob removes her key; her password opens nothing any more
    alice_id = keys[0]["id"]
    removed = _run(bob, "backup", "key", "remove", alice_id[:8])
    assert removed.returncode == 0, removed.stderr
    refused = _run(alice, "backup", "snapshots")
    assert refused.returncode == 3
    assert "wrong password" in refused.stderr and len(refused.stderr.splitlines()) == 1

    # the key in use and the last key can never be removed
    bob_id = _keys(bob)[0]["id"]
    in_use = _run(bob, "backup", "key", "remove", bob_id)
    assert in_use.returncode == 3 and "last key" in in_use.stderr

    # bob changes his password: the old one stops working, the new one works
    carol = tmp_path / "carol.new"
    carol.write_text("bob-new-password\n")
    carol.chmod(0o600)
    changed = _run(bob, "backup", "key", "passwd", "--new-password-file", str(carol))
    assert changed.returncode == 0, changed.stderr
    assert _run(bob, "backup", "snapshots").returncode == 3
    bob2 = _config(tmp_path, "bob2", s3_server, s3_bucket, "bob-new-password")
    assert len(_keys(bob2)) == 1

    # paper escrow, then every password lost: recover from the paper
    paper = _run(bob2, "backup", "key", "export", "--paper")
    assert paper.returncode == 0, paper.stderr
    assert "checksum" in paper.stdout and "bob-new-password" not in paper.stdout
    typed = tmp_path / "paper.txt"
    typed.write_text(paper.stdout.lower())  # typed back in lower case: still fine
    recovered = _run(
        bob2,
        "backup",
        "key",
        "recover",
        "--paper-file",
        str(typed),
        env={"OPSAGENT_NEW_PASSWORD": "from-the-safe"},
    )
    assert recovered.returncode == 0, recovered.stderr
    safe = _config(tmp_path, "safe", s3_server, s3_bucket, "from-the-safe")
    assert _run(safe, "restore", "latest", "--to", str(tmp_path / "r2")).returncode == 0

    lines = paper.stdout.splitlines()
    first = next(i for i, line in enumerate(lines) if line.count(" ") == 7)
    mistyped = lines[first].replace(lines[first][0], "Z" if lines[first][0] != "Z" else "Y", 1)
    typed.write_text("\n".join([*lines[:first], mistyped, *lines[first + 1 :]]))
    bad = _run(
        bob2,
        "backup",
        "key",
        "recover",
        "--paper-file",
        str(typed),
        env={"OPSAGENT_NEW_PASSWORD": "x"},
    )
    assert bad.returncode == 3 and "typing mistakes" in bad.stderr

    audit = json.loads(_run(safe, "audit", "--json", "--action", "key").stdout)
    assert [r["action"] for r in reversed(audit)] == [
        "key add",
        "key remove",
        "key remove",
        "key passwd",
        "key export",
        "key recover",
        "key recover",
    ]
    outcomes = [r["outcome"] for r in reversed(audit)]
    assert outcomes[:2] == ["ok", "ok"] and outcomes[3:6] == ["ok", "ok", "ok"]
    assert "last key" in outcomes[2] and outcomes[2].startswith("refused: ")
    assert outcomes[6].startswith("refused: ") and "typing mistakes" in outcomes[6]


def test_a_world_readable_secret_file_is_refused(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    config = _config(tmp_path, "loose", s3_server, s3_bucket, "pw")
    key = tmp_path / "loose.key"
    key.chmod(0o644)
    out = _run(config, "backup", "init")
    assert out.returncode == 2
    assert out.stderr.strip() == (
        f"{key}: secret file is readable by every user (mode 0644); run: chmod 600 {key}"
    )
    assert not list(s3_server.client().list_objects_v2(Bucket=s3_bucket).get("Contents", []))
