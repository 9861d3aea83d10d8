"""The cache record: the only thing that crosses from teacher to student.

One JSON object per line. The card's five fields (``prompt``, ``teacher_text``,
``output_entropy``, ``self_consistency``, ``difficulty_score``) plus what a user needs to
trust and resume a cache (``id``, ``teacher``, ``sampling``, token counts, ``finish_reason``,
``consistency_samples``). ``read_cache`` is the reader every later stage uses; it also
reads a plain JSONL file someone else produced with only the card's five fields.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dante.cache.payload import decode_arrays
from dante.cache.payload import problems as payload_problems
from dante.cache.table import from_row
from dante.errors import DataError
from dante.layout import CACHE_MANIFEST, expand_folders, is_pattern
from dante.prompts import record_id

CARD_FIELDS = ("prompt", "teacher_text", "output_entropy", "self_consistency", "difficulty_score")


REASONING_FIELDS = ("teacher_reasoning", "reasoning_tokens", "reasoning_status", "answer_entropy")


class CacheRecord(BaseModel):
    """One teacher completion and its metadata."""

    model_config = ConfigDict(extra="allow", strict=False)

    prompt: str = Field(..., description="The user prompt as given (not chat-template rendered).")
    teacher_text: str = Field(..., description="The teacher's greedy completion.")
    output_entropy: float | None = Field(None, description="Mean next-token entropy (nats) over generated tokens.")
    self_consistency: float | None = Field(None, description="Agreement among k sampled completions, in [0, 1].")
    difficulty_score: float | None = Field(None, description="f(entropy, consistency), in [0, 1].")
    id: str | None = Field(None, description="Stable id; default record_id(prompt).")
    system: str | None = Field(None, description="System prompt, if any.")
    messages: list[dict[str, Any]] | None = Field(
        None, description="Chat messages before the completion, if the prompt was a conversation."
    )
    teacher: str | None = None
    sampling: dict[str, Any] | None = None
    prompt_tokens: int | None = Field(None, ge=0)
    completion_tokens: int | None = Field(None, ge=0)
    finish_reason: str | None = None
    consistency_samples: int | None = Field(None, ge=0)
    source: str | None = None
    token_logprobs: dict[str, Any] | None = Field(
        None,
        description="Per generated token: bytes, logprob and top-K alternatives (teacher.store_logprobs; "
        "dante.cache.payload). With reasoning: every output token, the thinking's first.",
    )
    teacher_reasoning: str | None = Field(
        None, description="A thinking teacher's reasoning before its answer (teacher_text is the answer alone)."
    )
    reasoning_tokens: int | None = Field(
        None, ge=0, description="How many of the output's tokens (payload, entropy) are the reasoning's."
    )
    reasoning_status: Literal["complete", "cut", "no_answer"] | None = Field(
        None, description="complete; cut (the thinking hit the length limit); no_answer (nothing after it)."
    )
    answer_entropy: float | None = Field(None, description="output_entropy over the answer's tokens alone.")

    @field_validator("token_logprobs")
    @classmethod
    def _payload(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            decode_arrays(v)  # ValueError names what is malformed
        return v

    @field_validator("prompt", "teacher_text", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        if not isinstance(v, str):
            raise ValueError(f"must be a string, got {type(v).__name__}")
        return v

    @field_validator("prompt")
    @classmethod
    def _non_empty_prompt(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("is empty")
        return v

    @field_validator("output_entropy", "self_consistency", "difficulty_score", "answer_entropy", mode="before")
    @classmethod
    def _number(cls, v: Any) -> Any:
        if v is None:
            return v
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"must be a number or null, got {type(v).__name__} {v!r}")
        if not math.isfinite(v):
            raise ValueError(f"must be finite, got {v!r}")
        return float(v)

    @field_validator("output_entropy", "answer_entropy")
    @classmethod
    def _entropy_range(cls, v: float | None) -> float | None:
        if v is not None and v < 0:
            raise ValueError(f"must be >= 0 nats, got {v!r}")
        return v

    @field_validator("self_consistency", "difficulty_score")
    @classmethod
    def _unit_range(cls, v: float | None) -> float | None:
        if v is not None and not 0.0 <= v <= 1.0:
            raise ValueError(f"must be in [0, 1], got {v!r}")
        return v

    def model_post_init(self, _context: Any) -> None:
        if self.id is None:
            self.id = record_id(self.prompt, self.source or "", self.system)

    def to_json(self) -> str:
        data = self.model_dump(mode="json", exclude_none=False)
        for key in REASONING_FIELDS:  # a teacher that does not think writes records as before
            if data.get(key) is None:
                data.pop(key, None)
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class Problem:
    """A bad line: ``file:line: field: problem``."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.message}"


CachePaths = str | Path | list[str] | list[Path] | tuple[str | Path, ...]


def cache_files(path: CachePaths) -> list[Path]:
    """The files of a cache: a folder's completed shards in order, or one file; for several
    folders (or a glob), each folder's files in turn.

    A dante cache folder (one with ``manifest.json``) is read through its ``shard-*.jsonl``
    files only; any other folder through all of its ``*.jsonl`` files (someone else's export),
    or, with none, its Parquet files (``dante cache export``: ``data/*.parquet``).
    """
    if not isinstance(path, str | Path):
        return [f for folder in expand_folders(path) for f in cache_files(folder)]
    if is_pattern(path):
        return cache_files(expand_folders(path))
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        pattern = "shard-*.jsonl" if (path / CACHE_MANIFEST).is_file() else "*.jsonl"
        found = sorted(p for p in path.glob(pattern) if not p.name.startswith("."))
        if not found and not (path / CACHE_MANIFEST).is_file():
            found = sorted(
                p for p in [*path.glob("*.parquet"), *path.glob("data/*.parquet")] if not p.name.startswith(".")
            )
        return found
    raise DataError("cache path does not exist", file=path)


def parse_line(raw: bytes, file: str, lineno: int, *, strict: bool = False) -> tuple[CacheRecord | None, list[Problem]]:
    """Parse one JSONL line into a record, or the problems that stop it.

    strict=True also requires every one of the card's five keys to be present (null allowed
    for the three metadata fields), as ``dante cache validate`` does.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, [Problem(file, lineno, "<line>", f"invalid UTF-8 at byte {exc.start}")]
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, [
            Problem(file, lineno, "<line>", f"not valid JSON ({exc.msg} at column {exc.colno}); truncated line?")
        ]
    if not isinstance(obj, dict):
        return None, [Problem(file, lineno, "<line>", f"must be a JSON object, got {type(obj).__name__}")]
    return _validate(obj, file, lineno, strict)


def _validate(obj: dict[str, Any], file: str, lineno: int, strict: bool) -> tuple[CacheRecord | None, list[Problem]]:
    problems = []
    if strict:
        problems += [Problem(file, lineno, k, "missing field") for k in CARD_FIELDS if k not in obj]
    try:
        rec = CacheRecord.model_validate(obj)
    except ValidationError as err:
        for e in err.errors():
            fld = ".".join(str(p) for p in e["loc"]) or "<line>"
            if strict and e["type"] == "missing" and fld in CARD_FIELDS:
                continue  # already reported above
            msg = "missing field" if e["type"] == "missing" else e["msg"].removeprefix("Value error, ")
            problems.append(Problem(file, lineno, fld, msg))
        return None, problems
    problems += [Problem(file, lineno, fld, msg) for fld, msg in reasoning_problems(rec)]
    return (None if problems else rec), problems


def reasoning_problems(rec: CacheRecord) -> list[tuple[str, str]]:
    """(field, message) for a thinking teacher's fields that contradict each other: a status,
    token count or answer entropy without reasoning, a status the text does not bear out (an answer
    after a ``cut`` or ``no_answer`` thought, none after a ``complete`` one), more thinking tokens
    than completion tokens."""
    found = []
    if rec.teacher_reasoning is None:
        for name in ("reasoning_status", "reasoning_tokens", "answer_entropy"):
            if getattr(rec, name) is not None:
                found.append((name, "set, but the record has no teacher_reasoning"))
        return found
    answered = rec.teacher_text.strip() != ""
    if rec.reasoning_status == "complete" and not answered:
        found.append(("reasoning_status", "complete, but teacher_text is empty (no_answer, or cut)"))
    if rec.reasoning_status in ("cut", "no_answer") and answered:
        found.append(("reasoning_status", f"{rec.reasoning_status}, but teacher_text holds an answer"))
    tokens, total = rec.reasoning_tokens, rec.completion_tokens
    if tokens is not None and total is not None and tokens > total:
        found.append(("reasoning_tokens", f"{tokens} thinking tokens, more than the {total} completion tokens"))
    return found


def iter_cache(
    path: CachePaths, *, strict: bool = False
) -> Iterator[tuple[str, int, CacheRecord | None, list[Problem]]]:
    """Yield (file, line, record-or-None, problems) for every non-blank line of a cache."""
    for f in cache_files(path):
        if f.suffix == ".parquet":
            yield from _iter_parquet(f, strict)
            continue
        with open(f, "rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                rec, problems = parse_line(raw.rstrip(b"\r\n"), str(f), lineno, strict=strict)
                yield str(f), lineno, rec, problems


def _iter_parquet(path: Path, strict: bool) -> Iterator[tuple[str, int, CacheRecord | None, list[Problem]]]:
    """Rows of an exported (or any record-shaped) Parquet file as records; line = row + 1."""
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        yield str(path), 1, None, [Problem(str(path), 1, "<file>", f"cannot read Parquet: {exc}")]
        return
    for i, row in enumerate(rows):
        try:
            obj = from_row(row)
        except (ValueError, KeyError, TypeError) as exc:
            yield str(path), i + 1, None, [Problem(str(path), i + 1, "<row>", f"not a cache record ({exc})")]
            continue
        rec, problems = _validate(obj, str(path), i + 1, strict)
        yield str(path), i + 1, rec, problems


def read_cache(path: CachePaths, *, strict: bool = False, allow_duplicates: bool = False) -> list[CacheRecord]:
    """Read every record of a cache folder or JSONL file, or the union of several folders;
    the first bad line is a DataError.

    Duplicate ids are an error (a cache holds each prompt once) unless allow_duplicates. Across
    folders, the same id twice is read once when both records are identical (the same prompt
    cached twice by the same teacher settings), and an error naming both files otherwise.
    """
    records: list[CacheRecord] = []
    seen: dict[str, tuple[str, int, int]] = {}  # id -> (file, line, index in records)
    for file, lineno, rec, problems in iter_cache(path, strict=strict):
        if problems:
            p = problems[0]
            raise DataError(
                p.message, file=p.file, line=p.line, field=p.field, hint="run `dante cache validate` for every problem"
            )
        assert rec is not None and rec.id is not None
        if rec.id in seen and not allow_duplicates:
            f0, l0, k = seen[rec.id]
            other = Path(f0).parent != Path(file).parent
            if other and records[k].model_dump() == rec.model_dump():
                continue  # the same record in two folders: read once
            raise DataError(
                f"duplicate id {rec.id!r} (first at {f0}:{l0})" + (", and the two records differ" if other else ""),
                file=file,
                line=lineno,
                field="id",
                hint="a prompt may be cached once; remove one of the two records, or train on one of the folders",
            )
        seen[rec.id] = (file, lineno, len(records))
        records.append(rec)
    return records


def validate_cache(path: CachePaths) -> tuple[int, list[Problem]]:
    """Check every line against the schema, and every token-logprob payload (as many entries
    as completion tokens, logprobs ≤ 0 and finite, tokens joining to teacher_text); returns
    (records checked, problems)."""
    checked = 0
    problems: list[Problem] = []
    seen: dict[str, tuple[str, int, str]] = {}  # id -> (file, line, digest of the record)
    for file, lineno, rec, line_problems in iter_cache(path, strict=True):
        checked += 1
        problems += line_problems
        if rec is not None and rec.token_logprobs is not None:
            found = payload_problems(
                rec.token_logprobs, rec.teacher_text, rec.completion_tokens, rec.reasoning_tokens, rec.teacher_reasoning
            )
            problems += [Problem(file, lineno, fld, msg) for fld, msg in found]
        if rec is not None and rec.id is not None:
            digest = hashlib.sha1(json.dumps(rec.model_dump(), sort_keys=True).encode()).hexdigest()
            if rec.id in seen:
                f0, l0, d0 = seen[rec.id]
                if Path(f0).parent != Path(file).parent and d0 == digest:
                    continue  # the same record in two folders: read once, as read_cache does
                problems.append(Problem(file, lineno, "id", f"duplicate id {rec.id!r} (first at {f0}:{l0})"))
            else:
                seen[rec.id] = (file, lineno, digest)
    return checked, problems
