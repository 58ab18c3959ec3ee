"""deploy/aws: the least-privilege policies are enough for what each host does and no
more, checked against moto's server with IAM enforcement on (real HTTP, signed requests);
the bucket settings documents are accepted by the S3 API."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from tests.support.services import need, port_open, spawn, wait_for

AWS = Path(__file__).resolve().parents[2] / "deploy" / "aws"
BUCKET = "opsagent-repo"
PREFIX = "app-01"
# moto lets this many requests through unauthenticated (our set-up), then enforces IAM
SETUP_ACTIONS = 7


@dataclass
class Enforcing:
    url: str
    keys: dict[str, tuple[str, str]]


@pytest.fixture(scope="module")
def enforcing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Enforcing]:
    work = tmp_path_factory.mktemp("iam")
    binary = Path(sys.executable).with_name("moto_server")
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_ACTIONS)}
    argv = [str(binary) if binary.exists() else need("moto_server"), "-H", "127.0.0.1", "-p", "0"]
    proc = spawn(argv, work / "moto.log", env=env)
    port: list[int] = []

    def ready() -> bool:
        match = re.search(r"Running on http://127\.0\.0\.1:(\d+)", (work / "moto.log").read_text())
        if match:
            port[:] = [int(match.group(1))]
            return port_open(port[0])
        return False

    try:
        wait_for("moto with IAM enforcement", ready, proc=proc.proc)
        url = f"http://127.0.0.1:{port[0]}"
        admin = {"endpoint_url": url, "region_name": "us-east-1"}
        creds = {"aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
        boto3.client("s3", **admin, **creds).create_bucket(Bucket=BUCKET)
        iam = boto3.client("iam", **admin, **creds)
        keys = {}
        for user, policy in (
            ("backup", "iam-backup-policy.json"),
            ("restore-test", "iam-restore-test-policy.json"),
        ):
            document = (AWS / policy).read_text().replace("BUCKET", BUCKET)
            iam.create_user(UserName=user)
            iam.put_user_policy(
                UserName=user,
                PolicyName="opsagent",
                PolicyDocument=document.replace("PREFIX", PREFIX),
            )
            key = iam.create_access_key(UserName=user)["AccessKey"]
            keys[user] = (key["AccessKeyId"], key["SecretAccessKey"])
        yield Enforcing(url, keys)
    finally:
        proc.stop()


def _config(tmp_path: Path, server: Enforcing, user: str, name: str, prefix: str = PREFIX) -> Path:
    key_id, secret = server.keys[user]
    (tmp_path / f"{name}.id").write_text(key_id)
    (tmp_path / f"{name}.secret").write_text(secret)
    password = tmp_path / "repo.key"
    password.write_text("iam-test-password\n")
    for path in (password, tmp_path / f"{name}.id", tmp_path / f"{name}.secret"):
        path.chmod(0o600)
    data = tmp_path / "data"
    if not data.exists():
        data.mkdir()
        for i in range(5):
            (data / f"f{i}.txt").write_text(f"file {i}\n" * 500)
    config = tmp_path / f"{name}.yml"
    config.write_text(
        f"""
host: app-01
state_dir: {tmp_path / name / "state"}
backup:
  repository: s3://{BUCKET}/{prefix}
  s3:
    endpoint_url: {server.url}
    access_key_id_file: {tmp_path / f"{name}.id"}
    secret_access_key_file: {tmp_path / f"{name}.secret"}
    max_attempts: 1
  password_file: {password}
  sources:
    - {{name: files, kind: files, paths: ["{data}"]}}
  retention: {{keep_last: 1}}
restore_test:
  sandbox: {{kind: local, root: {tmp_path / name / "sandbox"}}}
"""
    )
    return config


def _opsagent(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agents", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_backup_policy_covers_backup_forget_prune_and_check(
    tmp_path: Path, enforcing: Enforcing
) -> None:
    config = _config(tmp_path, enforcing, "backup", "backup")
    for args in (
        ("backup", "init"),
        ("backup", "run"),
        ("backup", "run"),
        ("backup", "forget"),
        ("backup", "prune"),
        ("backup", "check", "--read-data"),
    ):
        out = _opsagent(config, *args)
        assert out.returncode == 0, f"{args}: {out.stdout}{out.stderr}"
    snapshots = json.loads(_opsagent(config, "backup", "snapshots", "--json").stdout)
    assert len(snapshots) == 1  # keep_last 1: forget and prune really deleted

    restore = _config(tmp_path, enforcing, "restore-test", "restore")
    tested = _opsagent(restore, "restore-test", "run", "--json")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert json.loads(tested.stdout)["status"] == "ok"

    # the read-only key can neither add nor remove data: one line, no traceback
    for args in (("backup", "run"), ("backup", "prune")):
        out = _opsagent(restore, *args)
        assert out.returncode != 0, args
        assert "Traceback" not in out.stderr
        assert (
            "AccessDenied" in out.stdout + out.stderr
            or "denied" in (out.stdout + out.stderr).lower()
        ), out.stdout + out.stderr
    still = json.loads(_opsagent(config, "backup", "snapshots", "--json").stdout)
    assert [s["id"] for s in still] == [s["id"] for s in snapshots]


def test_backup_policy_is_confined_to_its_prefix(tmp_path: Path, enforcing: Enforcing) -> None:
    config = _config(tmp_path, enforcing, "backup", "other", prefix="app-02")
    out = _opsagent(config, "backup", "init")
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert "AccessDenied" in out.stderr or "denied" in out.stderr.lower(), out.stderr


def test_bucket_settings_documents_are_accepted_by_s3(s3_server, s3_bucket: str) -> None:  # type: ignore[no-untyped-def]
    client = s3_server.client()
    client.put_bucket_versioning(Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
    client.put_bucket_lifecycle_configuration(
        Bucket=s3_bucket, LifecycleConfiguration=json.loads((AWS / "lifecycle.json").read_text())
    )
    rules = client.get_bucket_lifecycle_configuration(Bucket=s3_bucket)["Rules"]
    assert {r["ID"] for r in rules} == {
        "abort-incomplete-multipart-uploads",
        "expire-noncurrent-versions",
    }
    client.put_bucket_encryption(
        Bucket=s3_bucket,
        ServerSideEncryptionConfiguration=json.loads((AWS / "encryption.json").read_text()),
    )
    locked = s3_bucket + "-lock"
    client.create_bucket(Bucket=locked, ObjectLockEnabledForBucket=True)
    client.put_object_lock_configuration(
        Bucket=locked, ObjectLockConfiguration=json.loads((AWS / "object-lock.json").read_text())
    )
    got = client.get_object_lock_configuration(Bucket=locked)["ObjectLockConfiguration"]
    assert got["Rule"]["DefaultRetention"]["Days"] == 30
    replication = json.loads((AWS / "replication.json").read_text().replace("BUCKET", s3_bucket))
    client.put_bucket_replication(Bucket=s3_bucket, ReplicationConfiguration=replication)
    assert client.get_bucket_replication(Bucket=s3_bucket)["ReplicationConfiguration"]["Rules"]
