"""The details a fresh backup and restore test write are their records' (built through the
models in agents/records/details.py), with the JSON they always had: every key given,
a null sandbox too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agents.backup.runner import init_repository, run_backup
from agents.config import load_config
from agents.records import DETAILS_BY_KIND
from agents.restore_test.runner import run_restore_test
from agents.results import CheckResult
from agents.state import StateDB


def _config(tmp_path: Path) -> Path:
    key = tmp_path / "repo.key"
    key.write_text("fresh-details\n")
    key.chmod(0o600)
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("hello\n")
    config = tmp_path / "config.yml"
    config.write_text(
        f"""
host: fresh-host
state_dir: {tmp_path / "state"}
backup:
  repository: {tmp_path / "repo"}
  password_file: {key}
  sources:
    - {{name: docs, kind: files, paths: ["{data}"]}}
restore_test:
  sandbox: {{kind: local, root: {tmp_path / "sandbox"}}}
"""
    )
    return config


def _round_trip(result: CheckResult) -> dict[str, Any]:
    """The details validated strictly by their kind's model, dumped back as given."""
    model = DETAILS_BY_KIND[result.kind]
    return model.model_validate(result.details).model_dump(exclude_unset=True)


def test_fresh_backup_and_restore_test_details_are_their_models(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path))
    assert config.backup is not None
    init_repository(config.backup, config.host)
    emitted: list[CheckResult] = []
    backup = run_backup(config, emit=emitted.append)
    assert backup.ok, backup.summary
    assert {r.kind for r in emitted} == {"backup_source", "backup_repository"}
    for result in [*emitted, backup]:
        assert _round_trip(result) == result.details
    assert list(backup.details) == [
        "sources",
        "bytes_added",
        "bytes",
        "snapshots",
        "repository_bytes",
        "logical_bytes",
        "repository",
        "damaged",
    ]
    assert backup.details["sources"] == {"docs": "ok"}
    tested = run_restore_test(config, StateDB(config.state_db))
    assert tested.ok, tested.summary
    assert _round_trip(tested) == tested.details
    assert tested.details["sandbox"] is None and tested.details["kept_until"] is None
    assert list(tested.details)[:8] == [
        "run_id",
        "snapshots",
        "sources",
        "steps",
        "rto_seconds",
        "rpo_seconds",
        "sandbox",
        "kept_until",
    ]


def test_a_restore_test_that_never_started_keeps_its_shape(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path))  # no repository initialised
    tested = run_restore_test(config, StateDB(config.state_db))
    assert not tested.ok and tested.summary.startswith("step start failed:")
    assert _round_trip(tested) == tested.details
    assert tested.details == {
        "snapshots": {},
        "sources": {},
        "steps": [
            {
                "name": "start",
                "ok": False,
                "summary": tested.details["steps"][0]["summary"],
                "seconds": 0.0,
            }
        ],
        "rto_seconds": 0.0,
        "rpo_seconds": 0.0,
        "sandbox": None,
        "kept_until": None,
    }
