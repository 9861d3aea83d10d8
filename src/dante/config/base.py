"""The base of every recipe section, and the one way an old key loads: ``move_keys`` moves it to
its new place with a one-line notice."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def _notice(line: str) -> None:
    print(f"dante: {line}", file=sys.stderr)


def _as_dict(value: Any) -> dict[str, Any]:
    return value.model_dump(exclude_unset=True) if isinstance(value, BaseModel) else dict(value or {})


def move_keys(
    data: Any,
    renames: Mapping[str, str],
    where: str = "",
    shorthands: Mapping[str, str] | None = None,
    notice: Callable[[str], None] | None = _notice,
) -> Any:
    """``data`` (a section's mapping, at recipe path ``where``) with its old keys in their new places.

    ``shorthands`` first: a section written as one scalar (``token_kd: 0.3``, ``tea: false``) becomes
    ``{its key: the scalar}``. Then ``renames``, old dotted path -> new dotted path, both relative to
    ``where``; a path ending in ``.*`` moves every key under it (``terms.*`` -> ``*``). A key set in
    both places is an error naming both; each move prints one notice naming the old and new keys.
    The mapping itself is not changed."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    prefix = f"{where}." if where else ""
    for key, field in (shorthands or {}).items():
        value = data.get(key)
        if value is not None and not isinstance(value, dict | BaseModel):
            data[key] = {field: value}
            if notice is not None:
                notice(f"recipe key {prefix}{key} (a value) is now {prefix}{key}.{field}; read as such")
    for old, new in renames.items():
        if not old.endswith(".*"):
            data = _move(data, old, new, prefix, notice)
            continue
        head, base = old[:-2], new[:-1].rstrip(".")
        for key, value in _as_dict(data.pop(head, None)).items():
            data = _move(data, f"{head}.{key}", f"{base}.{key}" if base else key, prefix, notice, value=value)
    return data


_MISSING = object()


def _move(data: dict, old: str, new: str, prefix: str, notice, value: Any = _MISSING) -> dict:
    if value is _MISSING:
        *parents, leaf = old.split(".")
        node = data
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            return data
        value = _pop(data, parents, leaf)
    *parents, leaf = new.split(".")
    node = data
    for part in parents:
        child = _as_dict(node.get(part))
        node[part] = child
        node = child
    if leaf in node:
        raise ValueError(f"{prefix}{old} and {prefix}{new} are both set: keep {prefix}{new}")
    node[leaf] = value
    if notice is not None:
        notice(f"recipe key {prefix}{old} is now {prefix}{new}; read as such")
    return data


def _pop(data: dict, parents: list[str], leaf: str) -> Any:
    """Remove ``parents.leaf`` from ``data``, copying each mapping on the way (the caller's stays)."""
    node = data
    for part in parents:
        node[part] = child = dict(node[part])
        node = child
    return node.pop(leaf)
