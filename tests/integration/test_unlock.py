"""The background unlock (`backup.unlock`) opens exactly what the synchronous path
opens, and hands its failures to `Repository.open`, which reports them as before."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.backup import unlock
from agents.backup.errors import BackupError, WrongKey
from agents.backup.runner import init_repository, open_repository
from agents.config import BackupConfig, ConfigError, load_config, parse_config


def _config(tmp: Path, password: str, repository: Path | None = None) -> BackupConfig:
    key = tmp / f"key-{len(password)}"
    key.write_text(password + "\n")
    key.chmod(0o600)
    text = (
        f"host: h\nstate_dir: {tmp / 'state'}\nbackup:\n"
        f"  repository: {repository or tmp / 'repo'}\n  password_file: {key}\n"
        f"  sources: [{{name: s, kind: files, paths: [{tmp}]}}]\n"
    )
    config = parse_config(text, str(tmp / "c.yml"))
    assert config.backup is not None
    return config.backup


def test_the_background_unlock_opens_the_same_key(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "right password")
    made = init_repository(cfg, "h")
    unlock.begin(cfg)
    started = unlock.take(cfg, "right password")
    assert started is not None  # begun, and taken once only
    assert unlock.take(cfg, "right password") is None
    unlock.begin(cfg)
    repo = open_repository(cfg)
    assert repo.key_id == made.key_id
    assert repo.crypto.master == made.crypto.master
    assert unlock.take(cfg, "right password") is None  # open_repository took it


def test_a_wrong_password_is_still_one_wrong_key_error(tmp_path: Path) -> None:
    init_repository(_config(tmp_path, "right password"), "h")
    wrong = _config(tmp_path, "wrong")
    unlock.begin(wrong)
    with pytest.raises(WrongKey, match="wrong password: no repository key opens with it"):
        open_repository(wrong)


def test_no_repository_is_reported_before_any_key_question(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "pw", repository=tmp_path / "nothing-here")
    unlock.begin(cfg)  # lists no keys in the background: not the error people see
    with pytest.raises(BackupError, match=r"no repository at .*opsagent backup init"):
        open_repository(cfg)


def test_a_config_that_cannot_start_an_unlock_is_left_to_open(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "pw")
    Path(str(cfg.password_file)).unlink()  # unreadable secret: begin starts nothing
    unlock.begin(cfg)
    assert unlock.take(cfg, "pw") is None
    with pytest.raises(ConfigError, match="secret file does not exist"):
        open_repository(cfg)  # the error it always gave


def _config_file(tmp: Path, password: str, mode: int = 0o600) -> Path:
    key = tmp / "early.key"
    key.write_text(password + "\n")
    key.chmod(mode)
    path = tmp / "early.yml"
    path.write_text(
        f"host: h\nstate_dir: {tmp / 'state'}\nbackup:\n"
        f"  repository: {tmp / 'repo'}\n  password_file: {key}\n"
        f"  sources: [{{name: s, kind: files, paths: [{tmp}]}}]\n"
    )
    return path


def test_an_early_unlock_is_used_when_the_validated_config_agrees(tmp_path: Path) -> None:
    """Started from the raw YAML before validation; handed out for the same repository
    and password, and it opens the same key as the synchronous path."""
    path = _config_file(tmp_path, "early password")
    config = load_config(path)
    assert config.backup is not None
    made = init_repository(config.backup, "h")
    unlock.begin_early(path)
    assert ("early", str(tmp_path / "repo"), "early password") in unlock._started
    unlock.begin(config.backup)  # already started early: not started twice
    assert not any(k[0] == "validated" for k in unlock._started)
    repo = open_repository(config.backup)
    assert repo.key_id == made.key_id and repo.crypto.master == made.crypto.master
    assert not any(k[0] == "early" for k in unlock._started)  # taken


def test_an_early_unlock_for_another_password_is_not_used(tmp_path: Path) -> None:
    path = _config_file(tmp_path, "first")
    config = load_config(path)
    assert config.backup is not None
    init_repository(config.backup, "h")
    unlock.begin_early(path)
    Path(str(config.backup.password_file)).write_text("second\n")  # changed since
    with pytest.raises(WrongKey):
        open_repository(config.backup)  # asked with "second", never given the early key
    unlock._started.clear()


@pytest.mark.parametrize(
    "case", ["group-readable secret", "s3 repository", "env secret", "no backup", "bad yaml"]
)
def test_an_early_unlock_starts_only_from_a_plain_local_config(tmp_path: Path, case: str) -> None:
    path = _config_file(tmp_path, "pw", mode=0o640 if case == "group-readable secret" else 0o600)
    text = path.read_text()
    if case == "s3 repository":
        text = text.replace(f"repository: {tmp_path / 'repo'}", "repository: s3://bucket/p")
    elif case == "env secret":
        text = text.replace("password_file:", "password: ${PW}\n  x_password_file:")
    elif case == "no backup":
        text = "host: h\n"
    elif case == "bad yaml":
        text = "backup: [unclosed\n"
    path.write_text(text)
    unlock.begin_early(path)
    assert unlock._started == {}


def test_an_unlock_is_keyed_by_what_it_opens_not_by_object_identity(tmp_path: Path) -> None:
    """A command that failed before opening leaves its unlock behind; in one process
    (the crash tests run the CLI in-process) a later config object may reuse the freed
    one's identity. So an unlock is found by repository, S3 settings and password: an
    equal config gets it, another repository with the same password never does."""
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = _config(tmp_path / "one", "pw")
    two = _config(tmp_path / "two", "pw")
    init_repository(one, "h")
    init_repository(two, "h")
    unlock.begin(one)  # left untaken
    assert unlock.take(two, "pw") is None
    same_as_one = _config(tmp_path / "one", "pw")  # another object, the same config
    assert same_as_one is not one
    assert unlock.take(same_as_one, "pw") is not None
    unlock._started.clear()
