"""pydantic's validation errors, rewritten for operators: YAML path, line, and a message that
says what was expected (and, for a misspelt key, which key was probably meant)."""

from __future__ import annotations

import difflib
import types
import typing
from typing import Annotated, Any

from pydantic import BaseModel
from pydantic.alias_generators import to_camel
from pydantic_core import ErrorDetails

from noderescue.config_errors import ConfigIssue
from noderescue.config_values import describe
from noderescue.config_yaml import LineMap, YamlPath, format_path


def issue_from_pydantic(error: ErrorDetails, lines: LineMap, root: type[BaseModel]) -> ConfigIssue:
    """One pydantic error as the operator reads it: YAML path, line, plain message."""
    # pydantic marks dict-key errors with a "[key]" element after the key itself.
    path: YamlPath = tuple(part for part in error["loc"] if part != "[key]")
    return ConfigIssue(format_path(path), lines.line_for(path), _message(error, path, root))


def _message(error: ErrorDetails, path: YamlPath, root: type[BaseModel]) -> str:
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    if "message" in ctx and len(ctx) == 1:  # our own PydanticCustomError
        return str(ctx["message"])
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return _unknown_key_message(path, root)
    if kind == "literal_error":
        return f"invalid value {describe(value)}: expected {ctx.get('expected')}"
    if kind in ("too_short", "string_too_short"):
        return "must not be empty"
    if kind == "greater_than_equal":
        return f"must be at least {ctx.get('ge')}, got {describe(value)}"
    expected = {
        "string_type": "text",
        "int_type": "a whole number",
        "int_from_float": "a whole number",
        "int_parsing": "a whole number",
        "bool_type": "true or false",
        "bool_parsing": "true or false",
        "tuple_type": "a list",
        "list_type": "a list",
        "dict_type": "a mapping (key: value)",
        "model_type": "a mapping (key: value)",
        "model_attributes_type": "a mapping (key: value)",
    }.get(kind)
    if expected is not None:
        return f"expected {expected}, got {describe(value)}"
    return str(error["msg"])


def _unknown_key_message(path: YamlPath, root: type[BaseModel]) -> str:
    key = str(path[-1]) if path else ""
    allowed = _allowed_keys(root, path[:-1])
    if not allowed:
        return f"unknown key '{key}'"
    camel = to_camel(key)
    if camel != key and camel in allowed:
        return f"unknown key '{key}' (keys are camelCase: did you mean '{camel}'?)"
    close = difflib.get_close_matches(key, allowed, n=1)
    if close:
        return f"unknown key '{key}' (did you mean '{close[0]}'?)"
    return f"unknown key '{key}' (allowed: {', '.join(allowed)})"


def _allowed_keys(root: type[BaseModel], path: YamlPath) -> list[str]:
    """The keys of the settings model found at ``path`` (for "did you mean" hints)."""
    current: Any = root
    for part in path:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel) and isinstance(part, str):
            fields = {info.alias or name: info for name, info in current.model_fields.items()}
            if part not in fields:
                return []
            current = fields[part].annotation
        elif typing.get_origin(current) in (tuple, list) and isinstance(part, int):
            current = typing.get_args(current)[0]
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [info.alias or name for name, info in current.model_fields.items()]
    return []


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated[...] and Optional[...] down to the type that holds the keys."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation
