"""Checked access to decoded IPLD maps, shared by the schema types.

Rules: a map's keys are checked against the schema before any field is read (missing and unknown
keys are both ``SchemaError``), and a field's Python type must match exactly (``True`` is not an
int, ``None`` is not an absent optional).  Error messages name the field's path.
"""

from __future__ import annotations

from typing import Any

from sync.errors import SchemaError
from sync.model.cid import Link

__all__ = ["check_keys", "describe", "get_field", "strings"]

_TYPE_NAMES = {
    str: "a string",
    bytes: "bytes",
    bool: "a bool",
    int: "an integer",
    Link: "a link",
    list: "a list",
    dict: "a map",
}


def describe(value: Any) -> str:
    if value is None:
        return "null"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def check_keys(node: Any, what: str, required: set[str], optional: set[str]) -> dict[str, Any]:
    if not isinstance(node, dict):
        raise SchemaError(f"{what} must be a map, got {describe(node)}")
    missing = required - node.keys()
    if missing:
        raise SchemaError(f"{what} lacks required field(s) {', '.join(sorted(missing))}")
    unknown = node.keys() - required - optional
    if unknown:
        raise SchemaError(f"{what} has unknown field(s) {', '.join(sorted(unknown))}")
    return node


def get_field(node: dict[str, Any], name: str, kind: type, what: str) -> Any:
    value = node[name]
    if type(value) is not kind:
        raise SchemaError(f"{what}.{name} must be {_TYPE_NAMES[kind]}, got {describe(value)}")
    return value


def strings(node: dict[str, Any], name: str, what: str) -> tuple[str, ...]:
    items = get_field(node, name, list, what)
    for i, item in enumerate(items):
        if type(item) is not str:
            raise SchemaError(f"{what}.{name}[{i}] must be a string, got {describe(item)}")
    return tuple(items)
