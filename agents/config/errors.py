"""Config errors: `ConfigError`, and pydantic's validation errors rendered as one line per
problem, `FILE: YAML.path: what is wrong`, with a did-you-mean for an unknown key."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError


class ConfigError(Exception):
    """Raised with every problem found in a config file, one line each."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def kind_of(value: Any) -> str:
    """What a wrong value is, short, for an error line: `nothing`, `a list`, its repr."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def one_line(exc: BaseException) -> str:
    """An exception's text on one line, for a one-line error."""
    return " ".join(str(exc).split())


def error_lines(name: str, exc: ValidationError, data: Any, root: type[BaseModel]) -> list[str]:
    """One `FILE: YAML.path: what` line per problem of `data`, the YAML read from `name`;
    `root` is the model whose keys an unknown key's did-you-mean is looked up from."""
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        path, parent = _yaml_path(err["loc"], data)
        message = _message(err, parent, root)
        line = f"{name}: {path or '(top level)'}: {message}"
        if line not in lines:
            lines.append(line)
    return lines


def _yaml_path(loc: tuple[Any, ...], data: Any) -> tuple[str, Any]:
    """Turn pydantic's location into a YAML path, dropping the union labels it inserts."""
    path = ""
    node, parent = data, None
    after_index = False
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
            parent, node = node, node[part] if isinstance(node, list) and part < len(node) else None
            after_index = True
            continue
        in_node = isinstance(node, dict) and part in node
        if after_index and isinstance(node, dict) and node.get("kind") == part:
            after_index = False
            continue
        after_index = False
        if not in_node and _is_union_label(part):
            continue
        path += f".{part}" if path else str(part)
        parent, node = node, node.get(part) if isinstance(node, dict) else None
    return path, parent


def _is_union_label(part: str) -> bool:
    return "[" in part or part[:1].isupper() or part in {"str", "int", "float", "bool"}


_SIMPLE = {
    "missing": "required",
    "int_type": "must be an integer, got {input}",
    "int_parsing": "must be an integer, got {input}",
    "int_from_float": "must be an integer, got {input}",
    "float_type": "must be a number, got {input}",
    "float_parsing": "must be a number, got {input}",
    "bool_type": "must be true or false, got {input}",
    "bool_parsing": "must be true or false, got {input}",
    "string_type": "must be a string, got {input}",
    "list_type": "must be a list, got {input}",
    "dict_type": "must be a mapping, got {input}",
    "model_type": "must be a mapping, got {input}",
    "model_attributes_type": "must be a mapping, got {input}",
    "greater_than_equal": "must be >= {ge}, got {input}",
    "greater_than": "must be > {gt}, got {input}",
    "less_than_equal": "must be <= {le}, got {input}",
    "less_than": "must be < {lt}, got {input}",
    "string_too_short": "must not be empty",
    "too_short": "must have at least {min_length} item(s)",
    "string_pattern_mismatch": "must match {pattern}, got {input}",
    "union_tag_not_found": "kind: required",
    "enum": "must be one of {expected}, got {input}",
    "literal_error": "must be one of {expected}, got {input}",
    "union_tag_invalid": "kind: must be one of {expected_tags}, got {tag}",
}


def _message(err: Mapping[str, Any], parent: Any, root: type[BaseModel]) -> str:
    kind = err["type"]
    ctx = dict(err.get("ctx") or {})
    if kind == "extra_forbidden":
        key = str(err["loc"][-1])
        import difflib  # only a config with an unknown key needs it

        close = difflib.get_close_matches(key, _allowed_keys(parent, err, root), n=1)
        return "unknown key" + (f" (did you mean {close[0]}?)" if close else "")
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", err["msg"]))
    if kind == "string_type" and isinstance(err.get("input"), bool):
        return (
            f"must be a string, got {kind_of(err['input'])}; quote it: YAML reads "
            "on/off/yes/no unquoted as booleans"
        )
    if kind == "union_tag_invalid":
        ctx["tag"] = repr(ctx.get("tag"))
    if kind in _SIMPLE:
        return _SIMPLE[kind].format(input=kind_of(err.get("input")), **ctx)
    msg = str(err["msg"])
    return msg[:1].lower() + msg[1:]


def _allowed_keys(parent: Any, err: Mapping[str, Any], root: type[BaseModel]) -> list[str]:
    """Keys allowed where an unknown key was found, for a did-you-mean hint."""
    candidates: list[type[BaseModel]] = [root]
    for part in err["loc"][:-1]:
        if isinstance(part, int):
            continue
        found: list[type[BaseModel]] = []
        for model in candidates:
            if part in model.model_fields:
                found += _models_in(model.model_fields[part].annotation)
            elif part in _kind_tags(model):
                found.append(model)
        candidates = found or candidates
    if len(candidates) != 1:
        return []
    return [f.alias or n for n, f in candidates[0].model_fields.items()]


def _kind_tags(model: type[BaseModel]) -> tuple[Any, ...]:
    field = model.model_fields.get("kind")
    return getattr(field.annotation, "__args__", ()) if field is not None else ()


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    return [c for c in _flatten(annotation) if isinstance(c, type) and issubclass(c, BaseModel)]


def _flatten(annotation: Any) -> list[Any]:
    args = getattr(annotation, "__args__", None)
    if args is None:
        return [annotation]
    out: list[Any] = []
    for arg in args:
        out.extend(_flatten(arg))
    return out
