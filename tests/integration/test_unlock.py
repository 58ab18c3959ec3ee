"""The background unlock (`backup.unlock`) opens exactly what the synchronous path
opens, and hands its failures to `Repository.open`, which reports them as before."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.backup import unlock
from agents.backup.errors import BackupError, WrongKey
from agents.backup.runner import init_repository, open_repository
from agents.config import BackupConfig, ConfigError, parse_config


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
