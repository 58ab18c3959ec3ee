"""Reading a config file: where it is (`config_path`), and YAML text to a validated model
(`load_config`, `parse_config`), every problem raised at once in one `ConfigError`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from agents.config.errors import ConfigError, error_lines, kind_of, one_line
from agents.config.models.agent import Config
from agents.paths import CONFIG_ENV, DEFAULT_CONFIG_PATH, config_path

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_PATH",
    "config_path",
    "load_config",
    "parse",
    "parse_config",
]


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate one config file; raises ConfigError with every problem found."""
    path = Path(path)
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{name}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{name}: cannot read: {one_line(exc)}"]) from None
    return parse_config(text, name)


def parse_config(text: str, name: str = "config.yml") -> Config:
    """Validate YAML text; `name` is what error lines call the file."""
    return parse(text, name, Config)


M = TypeVar("M", bound=BaseModel)


def parse(text: str, name: str, model: type[M]) -> M:
    """YAML text validated as `model` (the config or the inventory), or a ConfigError with
    every problem; an unknown key's did-you-mean is looked up from the config's keys."""
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError([f"{name}: {where}YAML syntax error: {exc.problem}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{name}: YAML syntax error: {one_line(exc)}"]) from None
    except RecursionError:
        raise ConfigError([f"{name}: YAML nesting too deep"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{name}: (top level): must be a mapping, got {kind_of(data)}"])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(error_lines(name, exc, data, Config)) from None
    except RecursionError:
        raise ConfigError([f"{name}: YAML nesting too deep"]) from None
