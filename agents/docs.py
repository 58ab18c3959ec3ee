"""Generate the reference docs from the code: docs/configuration.md from the config models
(every key, its type, default, and its meaning from the field's description) and docs/cli.md
from the click commands.

Run `python -m agents.docs` after changing either; the test suite fails when the
committed files differ from what this writes, or when a key has no description.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import pkgutil
import re
import types
import typing
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from agents import config as config_module

DOCS = Path(__file__).resolve().parent.parent / "docs"

# (section title, model, where it appears in the file)
SECTIONS: list[tuple[str, type[BaseModel], str]] = [
    ("Top level", config_module.Config, ""),
    ("Logging", config_module.LogConfig, "log"),
    ("Exporter", config_module.ExporterConfig, "exporter"),
    ("Monitor", config_module.MonitorConfig, "monitor"),
    ("Every check", config_module.CheckBase, "monitor.checks[]"),
    ("http check", config_module.HttpCheck, "monitor.checks[] (kind: http)"),
    ("tcp check", config_module.TcpCheck, "monitor.checks[] (kind: tcp)"),
    ("process check", config_module.ProcessCheck, "monitor.checks[] (kind: process)"),
    ("postgres check", config_module.PostgresCheck, "monitor.checks[] (kind: postgres)"),
    ("mysql check", config_module.MysqlCheck, "monitor.checks[] (kind: mysql)"),
    ("disk check", config_module.DiskCheck, "monitor.checks[] (kind: disk)"),
    ("file_age check", config_module.FileAgeCheck, "monitor.checks[] (kind: file_age)"),
    ("command check", config_module.CommandCheck, "monitor.checks[] (kind: command)"),
    ("Query bounds", config_module.ValueBounds, "monitor.checks[].expect"),
    ("Backup", config_module.BackupConfig, "backup"),
    ("S3", config_module.S3Config, "backup.s3"),
    ("Object Lock", config_module.ObjectLock, "backup.s3.object_lock"),
    ("Retention", config_module.Retention, "backup.retention"),
    ("Prune", config_module.PruneConfig, "backup.prune"),
    (
        "Schedule",
        config_module.Schedule,
        "backup.schedule, backup.prune.schedule, restore_test.schedule",
    ),
    ("Every source", config_module.SourceBase, "backup.sources[]"),
    ("files source", config_module.FilesSource, "backup.sources[] (kind: files)"),
    ("postgres source", config_module.PostgresSource, "backup.sources[] (kind: postgres)"),
    ("mysql source", config_module.MysqlSource, "backup.sources[] (kind: mysql)"),
    ("sqlite source", config_module.SqliteSource, "backup.sources[] (kind: sqlite)"),
    ("Hooks", config_module.Hooks, "backup.sources[].hooks"),
    ("Restore test", config_module.RestoreTestConfig, "restore_test"),
    ("Random snapshot", config_module.RandomWithin, "restore_test.snapshot"),
    ("Sandbox", config_module.Sandbox, "restore_test.sandbox"),
    ("Verification", config_module.Verify, "restore_test.verify"),
    ("Data verification", config_module.DataVerify, "restore_test.verify.data"),
    ("Command assertion", config_module.CommandAssertion, "restore_test.verify.commands[]"),
    ("Cases", config_module.CasesConfig, "cases"),
    ("Calendar", config_module.Calendar, "cases.calendar"),
    ("Holidays", config_module.Holidays, "cases.calendar.holidays"),
    ("SLA target", config_module.Target, "cases.targets.<severity>"),
    ("Every notifier", config_module.NotifyBase, "cases.notify[]"),
    ("pagerduty notifier", config_module.PagerDutyNotify, "cases.notify[] (kind: pagerduty)"),
    ("webhook notifier", config_module.WebhookNotify, "cases.notify[] (kind: webhook)"),
    ("email notifier", config_module.EmailNotify, "cases.notify[] (kind: email)"),
    ("slack notifier", config_module.SlackNotify, "cases.notify[] (kind: slack)"),
    ("heartbeat notifier", config_module.HeartbeatNotify, "cases.notify[] (kind: heartbeat)"),
    ("Fleet inventory (its own file)", config_module.Inventory, ""),
    ("Fleet defaults", config_module.FleetDefaults, "defaults (inventory)"),
    ("Fleet host", config_module.FleetHost, "hosts[] (inventory)"),
]

_NAMED = {
    "Duration": "duration",
    "Size": "size",
    "SecretRef": "secret ref",
    "TimeZone": "time zone",
    "ClockTime": "HH:MM",
}


def config_models() -> list[type[BaseModel]]:
    """Every model of the agents.config package that holds keys (for the completeness test)."""
    modules = [config_module] + [
        importlib.import_module(info.name)
        for info in pkgutil.walk_packages(config_module.__path__, f"{config_module.__name__}.")
    ]
    return [
        m
        for module in modules
        for m in vars(module).values()
        if inspect.isclass(m)
        and issubclass(m, BaseModel)
        and m.__module__ == module.__name__
        and own_fields(m)
    ]


def description(model: type[BaseModel], name: str) -> str:
    """The meaning of a key: the description on its field."""
    return model.model_fields[name].description or ""


def own_fields(model: type[BaseModel]) -> list[str]:
    """Fields a model declares itself (inherited ones are documented on the base)."""
    annotations = inspect.get_annotations(model)
    return [name for name in model.model_fields if name in annotations]


def _type_name(annotation: Any) -> str:
    for alias, name in _NAMED.items():
        if annotation is getattr(config_module, alias, None):
            return name
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        parts = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(dict.fromkeys(parts))
    if origin is list:
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"map of {_type_name(args[1])}" if args else "map"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return "mapping"
        if issubclass(annotation, enum.Enum):
            return " \\| ".join(f"`{m.value}`" for m in annotation)
        return {
            "str": "string",
            "int": "integer",
            "float": "number",
            "bool": "boolean",
            "PosixPath": "path",
            "Path": "path",
        }.get(annotation.__name__, annotation.__name__)
    return str(annotation)


def _default(model: type[BaseModel], name: str) -> str:
    field = model.model_fields[name]
    if field.is_required():
        return "**required**"
    value = field.default
    if value is PydanticUndefined:
        return "(computed)"
    if value is None:
        return "-"
    if isinstance(value, BaseModel):
        return "(see section)"
    if isinstance(value, timedelta):
        from agents.units import format_duration

        return f"`{format_duration(value)}`"
    if isinstance(value, enum.Enum):
        return f"`{value.value}`"
    if isinstance(value, list):
        return (
            "`[]`"
            if not value
            else "`" + ", ".join(str(getattr(v, "value", v)) for v in value) + "`"
        )
    if isinstance(value, dict):
        return "`{}`" if not value else f"`{value}`"
    return f"`{value}`"


def _cell(text: str) -> str:
    """A table cell: pipes escaped (regex defaults have them), already-escaped kept."""
    return re.sub(r"(?<!\\)\|", r"\\|", text)


def config_reference() -> str:
    """docs/configuration.md."""
    out = [
        "# Configuration reference",
        "",
        "Generated from the config models by `python -m agents.docs`; do not edit by hand.",
        "`deploy/config/example.yml` is the commented example of a whole file, and",
        "`opsagent config check FILE` validates one (one line per problem, with its YAML path).",
        "",
        "Value formats: **duration** `15s`, `5m`, `26h`, `7d` (or seconds); **size** `512KiB`,",
        "`16MiB`, `1GB` (or bytes); **secret ref** `${ENV_VAR}` only (a secret is never",
        "written in the file: use the `*_file` key or the environment); **time zone** an IANA",
        "name such as `America/Toronto`; unknown keys are errors (with a did-you-mean).",
        "",
    ]
    for title, model, where in SECTIONS:
        out += [f"## {title}", ""]
        if where:
            out += [f"Under `{where}`." if "," not in where else f"Under {where}.", ""]
        doc = (model.__doc__ or "").strip().splitlines()
        if doc and not doc[0].startswith(model.__name__ + "("):
            out += [doc[0], ""]
        out += ["| key | type | default | meaning |", "|---|---|---|---|"]
        for name in own_fields(model):
            field = model.model_fields[name]
            key = field.alias or name
            meaning = description(model, name)
            cells = [f"`{key}`", _type_name(field.annotation), _default(model, name), meaning]
            out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        out.append("")
    return "\n".join(out)


def cli_reference() -> str:
    """docs/cli.md: every command with its usage, help and options."""
    from agents.cli import cli

    out = [
        "# Command-line reference",
        "",
        "Generated from the click commands by `python -m agents.docs`; do not edit by hand.",
        "Exit codes: 0 ok, 1 a check or job failed, 2 usage or config error, 3 runtime error.",
        "",
    ]
    for path, command in iter_commands(cli):
        ctx = click.Context(command, info_name=path)
        out += [f"## `{path}`", ""]
        help_text = inspect.cleandoc(command.help or "")
        if help_text:
            out += [help_text, ""]
        usage = command.get_usage(ctx).removeprefix("Usage: ")
        out += ["```", usage, "```", ""]
        rows = []
        for param in command.get_params(ctx):
            if isinstance(param, click.Option):
                names = ", ".join(f"`{n}`" for n in param.opts + param.secondary_opts)
                text = param.help or ""
                if param.show_default and param.default is not None:
                    text += f" (default: {param.default})"
                rows.append(f"| {names} | {text.strip()} |")
        if rows:
            out += ["| option | meaning |", "|---|---|", *rows, ""]
    return "\n".join(out)


def iter_commands(group: click.Command, path: str = "opsagent") -> list[tuple[str, click.Command]]:
    """Every command and group, depth first, by its full path."""
    found = [(path, group)]
    if isinstance(group, click.Group):
        ctx = click.Context(group, info_name=path)
        for name in sorted(group.list_commands(ctx)):
            command = group.get_command(ctx, name)
            if command is not None:
                found += iter_commands(command, f"{path} {name}")
    return found


def render_all() -> dict[Path, str]:
    """Every generated page: the configuration and command references, the JSON schema."""
    from agents.records import json_docs

    return {
        DOCS / "configuration.md": config_reference() + "\n",
        DOCS / "cli.md": cli_reference() + "\n",
        DOCS / "json.md": json_docs(),
    }


def main() -> None:
    for path, text in render_all().items():
        path.write_text(re.sub(r"[ \t]+\n", "\n", text))
        print(path)


if __name__ == "__main__":
    main()
