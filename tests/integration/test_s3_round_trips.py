"""An S3 backup makes the requests it needs and no more (each is a round trip), and the
figures it no longer lists for at the end are still right; locks between two agents on
one bucket behave as before."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from agents.backup.errors import NotFound
from agents.backup.locks import LockError, RepositoryLock
from agents.backup.runner import init_repository, open_repository, run_backup
from agents.backup.storage import open_storage
from agents.config import Config, parse_config
from tests.support import services
from tests.support.faultproxy import FaultProxy, Recorded
from tests.support.trees import make_tree


@pytest.fixture(autouse=True)
def _s3_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSAGENT_T_AK", "testing")
    monkeypatch.setenv("OPSAGENT_T_SK", "testing")


def _config(
    tmp_path: Path,
    endpoint: str,
    bucket: str,
    source: Path,
    state: str = "state",
    cache: bool = True,
) -> Config:
    key = tmp_path / "repo.key"
    key.write_text("correct horse battery staple\n")
    key.chmod(0o600)
    text = f"""
host: test-host
state_dir: {tmp_path / state}
backup:
  repository: "s3://{bucket}/repo"
  password_file: {key}
  s3: {{endpoint_url: '{endpoint}', path_style: true, access_key_id: '${{OPSAGENT_T_AK}}',
        secret_access_key: '${{OPSAGENT_T_SK}}'}}
  pack_size: 1MiB
  lock_wait: 0s
  local_cache: {"true" if cache else "false"}
  sources: [{{name: files, kind: files, paths: ["{source}"]}}]
"""
    return parse_config(text, "c.yml")


def _kind(request: Recorded) -> str:
    """`METHOD what`: LIST data/, PUT snapshots/, POST delete, HEAD locks/ ..."""
    parts = urlsplit(request.path)
    query = parse_qs(parts.query, keep_blank_values=True)
    key = unquote(parts.path).lstrip("/").partition("/")[2].removeprefix("repo/")
    if request.method == "POST" and "delete" in query:
        return "POST delete"
    if not key and "list-type" in query:
        prefix = query["prefix"][0].removeprefix("repo/")
        return f"LIST {prefix.split('/')[0]}/"
    return f"{request.method} {key.split('/')[0]}" + ("/" if "/" in key else "")


def test_an_s3_backup_lists_and_checks_only_what_it_needs(
    s3_server: services.S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    source = tmp_path / "src"
    make_tree(source, small_files=40, large_mib=3, seed=5)
    proxy = FaultProxy(s3_server.port).start()
    try:
        config = _config(tmp_path, proxy.endpoint_url, s3_bucket, source)
        assert config.backup is not None
        init_repository(config.backup, config.host)
        assert run_backup(config).ok
        (source / "new.bin").write_bytes(b"x" * 300_000)  # new packs in the second run
        proxy.requests.clear()
        result = run_backup(config)
        assert result.ok, result.summary
        kinds = [_kind(r) for r in proxy.requests]
    finally:
        proxy.stop()
    # data/ and snapshots/ listed once, under the lock; nothing listed at the end
    assert kinds.count("LIST data/") == 1 and kinds.count("LIST snapshots/") == 1
    assert kinds.count("HEAD locks/") == 1  # the check before the commit, not after the delete
    assert kinds[-2:] == ["PUT snapshots/", "POST delete"]
    # the closing figures, taken from those listings plus the run's writes, are exact
    storage = open_storage(config.backup.repository, config.backup.s3)
    assert result.details["snapshots"] == len(list(storage.list("snapshots/"))) == 2
    assert result.details["repository_bytes"] == sum(i.size for i in storage.list("data/"))
    assert list(storage.list("locks/")) == []  # the unverified delete did delete


def test_two_agents_on_one_bucket_still_exclude_each_other(
    s3_server: services.S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    """A prune's exclusive lock stops a backup; another agent's shared lock does not,
    but stops an exclusive one; a lock is gone once its holder is done."""
    source = tmp_path / "src"
    make_tree(source, small_files=10, large_mib=1, seed=6)
    config = _config(tmp_path, s3_server.endpoint_url, s3_bucket, source)
    assert config.backup is not None
    init_repository(config.backup, config.host)
    storage = open_storage(config.backup.repository, config.backup.s3)
    pruning = RepositoryLock(storage, exclusive=True, host="pruning-host")
    with pruning, pytest.raises(LockError, match="locked exclusively by pruning-host"):
        run_backup(config)
    with RepositoryLock(storage, exclusive=False, host="other-host") as shared:
        assert run_backup(config).ok
        with pytest.raises(LockError, match="by a shared lock"), pruning:
            pass
        storage.stat(shared.key)  # the other agent's lock untouched
    with pytest.raises(NotFound):
        storage.stat(shared.key)
    assert list(storage.list("locks/")) == []
    assert len(open_repository(config.backup).snapshot_ids()) == 1
