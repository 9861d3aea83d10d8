"""Reading a recipe: YAML -> dotted overrides -> the validated ``Recipe`` (dante.config.schema),
with errors naming the file, the line and the key; and writing it back: the resolved recipe
(secrets masked) saved next to every stage's outputs, and the stable hashes of its settings.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import ValidationError

from dante import layout
from dante.config.schema import BACKEND_KEYS, Recipe
from dante.errors import ConfigError
from dante.io import atomic_write_text

SECRET_FIELDS = frozenset({"api_key"})


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'teacher.batch_size=16'`` -> (['teacher', 'batch_size'], 16). Values are YAML scalars."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not key=value", field=text, hint="e.g. teacher.batch_size=16")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key", field=key)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def backend_path(path: list[str]) -> list[str]:
    """``teacher.base_url`` -> ``teacher.openai.base_url``: a backend key written flat on the
    command line sets its section's key, so it overrides a recipe that writes the section."""
    if len(path) == 2 and path[0] == "teacher":
        for section, keys in BACKEND_KEYS.items():
            if path[1] in keys:
                return ["teacher", section, path[1]]
    return path


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys in a nested dict (creating sections); returns the same dict."""
    for text in overrides:
        path, value = parse_override(text)
        path = backend_path(path)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"cannot set {'.'.join(path)}: {part} is not a section", field=".".join(path))
            node = child
        node[path[-1]] = value
    return data


def _yaml_key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map each dotted key path in a YAML document to its 1-based line number."""
    lines: dict[tuple[str, ...], int] = {}
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines

    def walk(node: Any, prefix: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = (*prefix, str(key_node.value))
                lines[key] = key_node.start_mark.line + 1
                walk(value_node, key)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                key = (*prefix, str(i))
                lines[key] = item.start_mark.line + 1
                walk(item, key)

    walk(root, ())
    return lines


def _raise_validation(
    err: ValidationError, file: str | None, key_lines: dict[tuple[str, ...], int], overridden: set[str]
) -> None:
    """Turn pydantic's errors into one ConfigError naming file, line and dotted key of each problem."""
    problems = []
    for e in err.errors():
        loc = _as_written(tuple(str(p) for p in e["loc"]), key_lines, overridden)
        dotted = ".".join(loc)
        if dotted in overridden:
            where = "command-line override: "
        else:  # a missing nested key has no line of its own: point at the nearest parent
            line = next((key_lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in key_lines), None)
            where = f"line {line}: " if line else ""
        if not loc:  # the recipe as a whole (e.g. an old and a new name of one key)
            problems.append(f"{where}{e['msg']}")
        elif e["type"] == "extra_forbidden":
            problems.append(f"{where}{dotted}: unknown key")
        elif loc[-1] in SECRET_FIELDS:  # never echo a secret, even a mistyped one
            problems.append(f"{where}{dotted}: {e['msg']} (value not shown: it is a secret)")
        elif isinstance(e.get("input"), dict):  # a whole section (it may hold a secret): the message says what
            problems.append(f"{where}{dotted}: {e['msg']}")
        else:
            problems.append(f"{where}{dotted}: {e['msg']} (got {e.get('input')!r})")
    raise ConfigError("; ".join(problems), file=file or "<recipe>") from None


def _as_written(loc: tuple[str, ...], key_lines: dict[tuple[str, ...], int], overridden: set[str]) -> tuple[str, ...]:
    """The key as the recipe wrote it: a backend key written flat (``teacher.base_url``) is
    validated as ``teacher.openai.base_url``; its error names the flat key, on its line."""
    if len(loc) >= 3 and loc[0] == "teacher" and loc[2] in BACKEND_KEYS.get(loc[1], ()):
        flat = ("teacher", *loc[2:])
        if flat in key_lines or ".".join(flat) in overridden:
            return flat
    return loc


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None, data: dict | None = None) -> Recipe:
    """Load a recipe from YAML (or a dict), apply dotted overrides, validate.

    Errors name the file, the line and the dotted key: ``recipe.yaml: line 7: teacher.batch_sz: unknown key``.
    """
    overrides = list(overrides or [])
    file = str(path) if path is not None else None
    key_lines: dict[tuple[str, ...], int] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError("recipe file does not exist", file=file)
        text = p.read_text(encoding="utf-8")
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise ConfigError(
                f"not valid YAML: {getattr(exc, 'problem', exc)}", file=file, line=mark.line + 1 if mark else None
            ) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError("a recipe must be a YAML mapping of sections", file=file)
        key_lines = _yaml_key_lines(text)
        data = loaded
    data = dict(data or {})
    apply_overrides(data, overrides)
    overridden = {o.split("=", 1)[0].strip() for o in overrides}
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as err:
        _raise_validation(err, file, key_lines, overridden)
        raise  # unreachable
    recipe.source_file = file
    return recipe


def redact_url(url: str | None) -> str | None:
    """``https://user:key@host/v1`` -> ``https://***@host/v1``: credentials in a URL are never shown."""
    if not url or "@" not in url:
        return url

    parts = urlsplit(url)
    if not parts.username and not parts.password:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"***@{host}"))


def resolved_dict(recipe: Recipe) -> dict[str, Any]:
    """The recipe as plain data, secrets masked (api_key and URL credentials are never written anywhere)."""
    data = recipe.model_dump(mode="json", exclude={"source_file"})
    server = data.get("teacher", {}).get("openai", {})
    if server.get("api_key") is not None:
        server["api_key"] = "**********"
    server["base_url"] = redact_url(server.get("base_url"))
    return data


def stable_hash(data: Any) -> str:
    """Short sha256 of JSON-able data, independent of key order."""
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def recipe_hash(recipe: Recipe, sections: tuple[str, ...] | None = None) -> str:
    """Stable short hash of the resolved recipe (or of some sections of it)."""
    data = resolved_dict(recipe)
    if sections is not None:
        data = {k: data[k] for k in sections}
    return stable_hash(data)


def save_resolved(recipe: Recipe, directory: str | Path, name: str = layout.RESOLVED_RECIPE) -> Path:
    """Write the resolved recipe next to a stage's outputs (atomically)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(resolved_dict(recipe), sort_keys=False, allow_unicode=True)
    return atomic_write_text(directory / name, text)
