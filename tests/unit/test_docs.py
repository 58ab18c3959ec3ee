"""The reference docs are generated from the code and stay in step with it: a config key
or a command without documentation fails here."""

from __future__ import annotations

import re
from pathlib import Path

import click

from agents import docs

REPO = Path(__file__).resolve().parents[2]


def test_every_config_key_has_a_description() -> None:
    """Each key's description is on its field: the reference reads it from there."""
    keys = {(m, f) for m in docs.config_models() for f in docs.own_fields(m)}
    assert len(keys) > 200
    undocumented = sorted(
        f"{m.__name__}.{f}" for m, f in keys if not docs.description(m, f).strip()
    )
    assert undocumented == [], "config keys with no description"


def test_every_config_model_has_a_section() -> None:
    documented = {model for _title, model, _where in docs.SECTIONS}
    assert set(docs.config_models()) - documented == set()


def test_generated_references_are_committed() -> None:
    for path, text in docs.render_all().items():
        committed = path.read_text()
        assert committed == re.sub(r"[ \t]+\n", "\n", text), (
            f"{path.name} is stale: run python -m agents.docs"
        )


def test_every_command_and_option_is_documented() -> None:
    from agents.cli import cli

    reference = (REPO / "docs/cli.md").read_text()
    commands = docs.iter_commands(cli)
    assert len(commands) > 30
    for path, command in commands:
        assert f"## `{path}`" in reference, f"{path} undocumented"
        assert command.help, f"{path} has no help text"
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{path} {param.opts[0]} has no help text"


def test_docs_index_links_every_page_and_the_readme_links_the_docs() -> None:
    pages = {p.name for p in (REPO / "docs").glob("*.md")} - {"README.md"}
    index = (REPO / "docs/README.md").read_text()
    for page in pages:
        assert f"({page})" in index, f"docs/{page} is not linked from docs/README.md"
    readme = (REPO / "README.md").read_text()
    assert "(docs/README.md)" in readme
    for name in ("concepts", "configuration", "cli", "metrics", "security", "operations"):
        assert (REPO / "docs" / f"{name}.md").is_file()
