"""The background unlock (`backup.unlock`) opens exactly what the synchronous path
opens, and hands its failures to `Repository.open`, which reports them as before."""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.backup import unlock
from agents.backup.errors import BackupError, StorageError, WrongKey
from agents.backup.runner import init_repository, open_repository
from agents.backup.storage import s3 as s3_backend
from agents.config import (
    BackupConfig,
    ConfigError,
    S3Config,
    load_config,
    parse_config,
)
from tests.support.services import S3Server


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
    assert ("early", str(tmp_path / "repo"), None, "early password") in unlock._started
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
    "case", ["group-readable secret", "env repository", "env secret", "no backup", "bad yaml"]
)
def test_an_early_unlock_starts_only_from_a_plain_config(tmp_path: Path, case: str) -> None:
    path = _config_file(tmp_path, "pw", mode=0o640 if case == "group-readable secret" else 0o600)
    text = path.read_text()
    if case == "env repository":
        text = text.replace(f"repository: {tmp_path / 'repo'}", "repository: ${REPO}")
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


# --- S3: started from the raw YAML too, handed out only to the same endpoint ----------


@pytest.fixture(autouse=True)
def _no_unlock_left() -> Iterator[None]:
    """Each test starts and ends with no pending unlock (they are process-wide)."""
    unlock._started.clear()
    yield
    unlock._started.clear()


def _s3_file(
    tmp: Path,
    server: S3Server,
    bucket: str,
    password: str = "s3 password",
    mode: int = 0o600,
    s3_extra: str = "",
    prefix: str = "repo",
    endpoint: str | None = None,
) -> Path:
    """A config file naming an S3 repository, credentials from `${ENV}` references."""
    key = tmp / "s3.key"
    key.write_text(password + "\n")
    key.chmod(mode)
    path = tmp / "s3.yml"
    path.write_text(
        f"host: h\nstate_dir: {tmp / 'state'}\nbackup:\n"
        f"  repository: s3://{bucket}/{prefix}\n  password_file: {key}\n"
        f"  s3: {{endpoint_url: '{endpoint or server.endpoint_url}', path_style: true,"
        f" access_key_id: '${{T_AK}}', secret_access_key: '${{T_SK}}'{s3_extra}}}\n"
        f"  sources: [{{name: s, kind: files, paths: [{tmp}]}}]\n"
    )
    return path


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch, s3_server: S3Server) -> None:
    monkeypatch.setenv("T_AK", s3_server.access_key)
    monkeypatch.setenv("T_SK", s3_server.secret_key)


def _early_entries() -> list[tuple[object, ...]]:
    return [k for k in unlock._started if k[0] == "early"]


@pytest.mark.usefixtures("s3_env")
def test_an_early_s3_unlock_is_used_when_the_validated_config_agrees(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    """Started before validation (client, key listing, key GET and scrypt on the thread),
    taken by the validated config, and it opens the key the synchronous path opens; the
    repository's storage shares the unlock's client."""
    path = _s3_file(tmp_path, s3_server, s3_bucket, s3_extra=", storage_class: STANDARD_IA")
    config = load_config(path)
    assert config.backup is not None
    made = init_repository(config.backup, "h")
    unlock.begin_early(path)
    (entry,) = _early_entries()
    storage, pending = unlock._started[entry]
    assert storage is None  # the thread makes it, not the command's thread
    found = pending.result(timeout=120)  # the early search itself succeeded
    assert found is not None and found[0] == made.key_id
    clients = len(s3_backend._CLIENTS)
    unlock.begin(config.backup)  # already started early: not started twice
    assert not any(k[0] == "validated" for k in unlock._started)
    repo = open_repository(config.backup)
    assert repo.key_id == made.key_id and repo.crypto.master == made.crypto.master
    assert _early_entries() == []  # taken
    assert len(s3_backend._CLIENTS) == clients  # the early client, shared
    # the storage is the validated config's: its write settings apply
    assert repo.storage.inner.config.storage_class == "STANDARD_IA"  # type: ignore[attr-defined]


@pytest.mark.usefixtures("s3_env")
@pytest.mark.parametrize("change", ["bucket", "prefix", "endpoint", "region", "credentials"])
def test_an_early_s3_unlock_is_not_used_for_another_place(
    tmp_path: Path,
    s3_server: S3Server,
    s3_bucket: str,
    change: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The file changed between the early read and the validated load (or a reference
    resolves otherwise): the early key is never handed out, the validated config's own
    repository is opened with its own key."""
    other_bucket = f"{s3_bucket}-b"
    s3_server.client().create_bucket(Bucket=other_bucket)
    early = _s3_file(tmp_path, s3_server, s3_bucket)
    early_cfg = load_config(early).backup
    assert early_cfg is not None
    first = init_repository(early_cfg, "h")
    host = s3_server.endpoint_url.replace("127.0.0.1", "localhost")
    changed = {
        "bucket": {"bucket": other_bucket},
        "prefix": {"prefix": "elsewhere"},
        "endpoint": {"endpoint": host},
        "region": {"s3_extra": ", region: eu-west-1"},
        "credentials": {},
    }[change]
    unlock.begin_early(early)
    assert len(_early_entries()) == 1
    if change == "credentials":
        monkeypatch.setenv("T_AK", "another-key-id")
    place = {"bucket": s3_bucket, **changed}
    cfg = load_config(_s3_file(tmp_path, s3_server, **place)).backup  # type: ignore[arg-type]
    assert cfg is not None
    if change in ("bucket", "prefix"):
        second = init_repository(cfg, "h")  # same password, another master key
        assert second.crypto.master != first.crypto.master
    assert unlock.take(cfg, "s3 password") is None  # never the early one
    assert len(_early_entries()) == 1
    if change in ("bucket", "prefix"):
        repo = open_repository(cfg)
        assert repo.crypto.master == second.crypto.master


@pytest.mark.usefixtures("s3_env")
@pytest.mark.parametrize(
    "case",
    ["group-readable secret", "env password", "unset credential", "timeouts set", "both secrets"],
)
def test_an_early_s3_unlock_starts_only_from_a_plain_config(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    mode = 0o640 if case == "group-readable secret" else 0o600
    extra = {
        "timeouts set": ", connect_timeout: 30s",
        "both secrets": f", access_key_id_file: {tmp_path / 's3.key'}",
    }.get(case, "")
    path = _s3_file(tmp_path, s3_server, s3_bucket, mode=mode, s3_extra=extra)
    if case == "env password":
        path.write_text(path.read_text().replace("password_file:", "password: ${PW}\n  x_file:"))
        monkeypatch.setenv("PW", "s3 password")
    elif case == "unset credential":
        monkeypatch.delenv("T_SK")
    unlock.begin_early(path)
    assert unlock._started == {}


@pytest.mark.usefixtures("s3_env")
def test_an_early_s3_unlock_with_credential_files_is_used(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    for name, value in (("ak", s3_server.access_key), ("sk", s3_server.secret_key)):
        (tmp_path / name).write_text(value + "\n")
        (tmp_path / name).chmod(0o600)
    path = _s3_file(tmp_path, s3_server, s3_bucket)
    path.write_text(
        path.read_text()
        .replace("access_key_id: '${T_AK}'", f"access_key_id_file: {tmp_path / 'ak'}")
        .replace("secret_access_key: '${T_SK}'", f"secret_access_key_file: {tmp_path / 'sk'}")
    )
    config = load_config(path)
    assert config.backup is not None
    made = init_repository(config.backup, "h")
    unlock.begin_early(path)
    assert len(_early_entries()) == 1
    started = unlock.take(config.backup, "s3 password")
    assert started is not None
    found = started[1].result(timeout=120)
    assert found is not None and found[1] == made.crypto.master


@pytest.mark.usefixtures("s3_env")
def test_an_early_s3_unlock_that_failed_is_done_again(tmp_path: Path, s3_server: S3Server) -> None:
    """The early search met no bucket (created since): its failure is not what people
    see; the validated config's storage searches again and opens the key."""
    bucket = f"late-{tmp_path.name[-8:].lower().replace('_', '-')}"
    path = _s3_file(tmp_path, s3_server, bucket)
    unlock.begin_early(path)
    (entry,) = _early_entries()
    with pytest.raises(StorageError, match="bucket does not exist"):
        unlock._started[entry][1].result(timeout=120)
    s3_server.client().create_bucket(Bucket=bucket)
    config = load_config(path)
    assert config.backup is not None
    made = init_repository(config.backup, "h")
    repo = open_repository(config.backup)
    assert repo.crypto.master == made.crypto.master
    assert _early_entries() == []


def test_the_early_s3_defaults_are_the_configs() -> None:
    """An early unlock reads with S3Config's defaults; they must not drift apart."""
    default = S3Config()
    assert default.max_attempts == unlock.EARLY_S3_ATTEMPTS
    assert s3_backend.ClientLimits() == s3_backend.ClientLimits.of(default)
    assert unlock._early_endpoint(None) == s3_backend.S3Endpoint.of(default)
    assert set(S3Config.model_fields) > unlock._EARLY_S3_KEYS


def _derivations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The threads each scrypt derivation runs on, from now on."""
    from agents.backup import crypto

    names: list[str] = []
    real = crypto._derive

    def counted(*args: Any) -> bytes:
        names.append(threading.current_thread().name)
        return real(*args)

    monkeypatch.setattr(crypto, "_derive", counted)
    return names


@pytest.mark.usefixtures("s3_env")
@pytest.mark.parametrize("hint", ["kept by the last unlock", "planted with another salt"])
def test_an_early_s3_unlock_starts_deriving_from_the_last_unlocks_salt(
    tmp_path: Path,
    s3_server: S3Server,
    s3_bucket: str,
    hint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first early unlock keeps the key file's salt and scrypt parameters (no key)
    in the state directory; the next derives from them before the key objects are
    listed. A hint with other inputs is never used for the key: it costs a derivation."""
    path = _s3_file(tmp_path, s3_server, s3_bucket)
    config = load_config(path)
    assert config.backup is not None
    made = init_repository(config.backup, "h")
    unlock.begin_early(path)  # no state directory: nothing kept, none made
    assert open_repository(config.backup).crypto.master == made.crypto.master
    assert not (tmp_path / "state").exists()
    (tmp_path / "state").mkdir()
    unlock.begin_early(path)  # no hint yet: derives after reading the key object
    assert open_repository(config.backup).crypto.master == made.crypto.master
    (kept,) = (tmp_path / "state" / "cache").glob("unlock-*.json")
    assert kept.stat().st_mode & 0o777 == 0o600
    body = json.loads(kept.read_text())
    assert set(body) == {"kdf", "n", "r", "p", "salt"}  # never the wrapped key
    if hint == "planted with another salt":
        body["salt"] = base64.b64encode(b"\0" * 16).decode()
        kept.write_text(json.dumps(body))
    threads = _derivations(monkeypatch)
    unlock.begin_early(path)
    repo = open_repository(config.backup)
    assert repo.crypto.master == made.crypto.master and repo.key_id == made.key_id
    if hint == "kept by the last unlock":
        assert threads == ["unlock-derive"]  # one derivation, begun from the hint
    else:
        assert sorted(threads) == ["unlock", "unlock-derive"]  # wasted, then the real one
        assert json.loads(kept.read_text())["salt"] != body["salt"]  # corrected


@pytest.mark.usefixtures("s3_env")
@pytest.mark.timeout(120)  # a FIFO read without O_NONBLOCK would block for ever
@pytest.mark.parametrize("planted", ["cache is a link", "hint is a FIFO", "hint is a link"])
def test_a_hint_is_never_written_or_read_through_what_is_planted(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str, planted: str
) -> None:
    """Below the state directory nothing is followed (an attack on the S3 cache found the
    hint written through a linked `cache`): the unlock still opens the key, nothing is
    written where a link leads, and a FIFO never blocks the command."""
    path = _s3_file(tmp_path, s3_server, s3_bucket)
    config = load_config(path)
    assert config.backup is not None
    made = init_repository(config.backup, "h")
    state, outside = tmp_path / "state", tmp_path / "outside"
    state.mkdir()
    outside.mkdir()
    secret = outside / "secret"
    secret.write_text("not the agent's\n")
    if planted == "cache is a link":
        (state / "cache").symlink_to(outside)
    else:
        unlock.begin_early(path)  # keeps a hint, whose name is then taken
        assert open_repository(config.backup).crypto.master == made.crypto.master
        (kept,) = (state / "cache").glob("unlock-*.json")
        kept.unlink()
        if planted == "hint is a FIFO":
            os.mkfifo(kept)
        else:
            kept.symlink_to(secret)
    unlock.begin_early(path)
    assert open_repository(config.backup).crypto.master == made.crypto.master
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert secret.read_text() == "not the agent's\n"
