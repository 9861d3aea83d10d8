"""The cache record as a table row (Parquet: `dante cache export`, and reading an exported folder
back as a cache). Columns are the record's fields; ``sampling`` is JSON text (its keys vary by
backend), the token-logprob payload (``teacher.store_logprobs``) a struct of lists: ``tokens``
(bytes), ``logprobs``, ``top_tokens`` and ``top_logprobs`` per generated token.
"""

from __future__ import annotations

import json
from typing import Any

from dante.cache.payload import decode, encode
from dante.tokens import TokenLogprobs

COLUMNS = (
    "id",
    "prompt",
    "system",
    "messages",
    "teacher_text",
    "output_entropy",
    "self_consistency",
    "difficulty_score",
    "teacher",
    "sampling",
    "prompt_tokens",
    "completion_tokens",
    "finish_reason",
    "consistency_samples",
    "source",
    "token_logprobs",
    "teacher_reasoning",
    "reasoning_tokens",
    "reasoning_status",
    "answer_entropy",
)


def schema():
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    payload = pa.struct(
        [
            ("tokens", pa.list_(pa.binary())),
            ("logprobs", pa.list_(pa.float32())),
            ("top_tokens", pa.list_(pa.list_(pa.binary()))),
            ("top_logprobs", pa.list_(pa.list_(pa.float32()))),
        ]
    )
    return pa.schema(
        [
            ("id", pa.string()),
            ("prompt", pa.string()),
            ("system", pa.string()),
            ("messages", pa.list_(message)),
            ("teacher_text", pa.string()),
            ("output_entropy", pa.float64()),
            ("self_consistency", pa.float64()),
            ("difficulty_score", pa.float64()),
            ("teacher", pa.string()),
            ("sampling", pa.string()),
            ("prompt_tokens", pa.int64()),
            ("completion_tokens", pa.int64()),
            ("finish_reason", pa.string()),
            ("consistency_samples", pa.int64()),
            ("source", pa.string()),
            ("token_logprobs", payload),
            ("teacher_reasoning", pa.string()),
            ("reasoning_tokens", pa.int64()),
            ("reasoning_status", pa.string()),
            ("answer_entropy", pa.float64()),
        ]
    )


def to_row(rec: Any) -> dict[str, Any]:
    """One record as a Parquet row (``COLUMNS``)."""
    row = {k: getattr(rec, k) for k in COLUMNS}
    row["sampling"] = json.dumps(rec.sampling, sort_keys=True) if rec.sampling is not None else None
    if rec.token_logprobs is not None:
        p = decode(rec.token_logprobs)
        row["token_logprobs"] = {
            "tokens": p.tokens,
            "logprobs": p.logprobs,
            "top_tokens": [[t for t, _ in r] for r in p.top],
            "top_logprobs": [[lp for _, lp in r] for r in p.top],
        }
    return row


def from_row(row: dict[str, Any]) -> dict[str, Any]:
    """A Parquet row (an export, or any table with the record's columns) as a record's JSON object."""
    obj = dict(row)
    for key in ("teacher_reasoning", "reasoning_tokens", "reasoning_status", "answer_entropy"):
        if obj.get(key) is None:  # a table of a teacher that does not think, or an older export
            obj.pop(key, None)
    if isinstance(obj.get("sampling"), str):
        obj["sampling"] = json.loads(obj["sampling"])
    payload = obj.get("token_logprobs")
    if isinstance(payload, dict):
        top = [
            list(zip(t, lp, strict=True)) for t, lp in zip(payload["top_tokens"], payload["top_logprobs"], strict=True)
        ]
        k = max((len(r) for r in top), default=0)
        obj["token_logprobs"] = encode(TokenLogprobs(list(payload["tokens"]), list(payload["logprobs"]), top), k)
    return obj
