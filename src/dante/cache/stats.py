"""`dante cache stats DIR`: counts, token totals and the entropy distribution of a cache.

``cache_stats`` returns plain data (JSON-able, used by reports); ``render_stats`` a rich view.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from dante.cache.payload import payload_bytes
from dante.cache.records import CacheRecord, cache_files, read_cache


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    pos = (len(sorted_values) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def histogram(values: list[float], bins: int = 10) -> list[dict[str, float]]:
    """Equal-width bins over [min, max]: [{"lo", "hi", "count"}]; the last bin includes max."""
    if not values:
        return []
    lo, hi = min(values), max(values)
    width = (hi - lo) / bins or 1.0
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - lo) / width))] += 1
    return [{"lo": lo + i * width, "hi": lo + (i + 1) * width, "count": c} for i, c in enumerate(counts)]


def _summary(values: list[float]) -> dict[str, Any] | None:
    if not values:
        return None
    s = sorted(values)
    return {
        "min": s[0],
        "mean": sum(s) / len(s),
        "median": _quantile(s, 0.5),
        "p90": _quantile(s, 0.9),
        "max": s[-1],
        "count": len(s),
    }


def cache_stats(path: str | Path | list[Path], records: list[CacheRecord] | None = None) -> dict[str, Any]:
    """Statistics of a cache folder (sealed shards), one JSONL file or several folders;
    ``records``: the records of ``path`` when the caller has already read them."""
    records = read_cache(path) if records is None else records
    n = len(records)
    entropies = [r.output_entropy for r in records if r.output_entropy is not None]
    consistency = [r.self_consistency for r in records if r.self_consistency is not None]
    difficulty = [r.difficulty_score for r in records if r.difficulty_score is not None]

    def share_null(values: list[float]) -> float:
        return (n - len(values)) / n if n else 0.0

    thinking = [r for r in records if r.teacher_reasoning is not None]
    with_payload = [r for r in records if r.token_logprobs is not None]
    payload_chars = sum(payload_bytes(r.token_logprobs) for r in with_payload)
    payload_tokens = sum(int(r.token_logprobs.get("n", 0)) for r in with_payload)

    return {
        "path": str(path) if isinstance(path, str | Path) else ", ".join(map(str, path)),
        "records": n,
        "shards": len(cache_files(path)),
        "prompt_tokens": sum(r.prompt_tokens or 0 for r in records),
        "completion_tokens": sum(r.completion_tokens or 0 for r in records),
        "finish_reasons": dict(Counter(r.finish_reason or "unknown" for r in records).most_common()),
        "teachers": dict(Counter(r.teacher or "unknown" for r in records).most_common()),
        "output_entropy": _summary(entropies),
        "entropy_histogram": histogram(entropies),
        "self_consistency": _summary(consistency),
        "difficulty_score": _summary(difficulty),
        "token_logprobs": {
            "records": len(with_payload),
            "k": max((int(r.token_logprobs.get("k", 0)) for r in with_payload), default=0),
            "tokens": payload_tokens,
            "bytes": payload_chars,
            "bytes_per_token": payload_chars / payload_tokens if payload_tokens else None,
        },
        "reasoning": {
            "records": len(thinking),
            "status": dict(Counter(r.reasoning_status or "unknown" for r in thinking).most_common()),
            "reasoning_tokens": sum(r.reasoning_tokens or 0 for r in thinking),
            "reasoning_chars": _summary([float(len(r.teacher_reasoning)) for r in thinking]),
            "answer_entropy": _summary([r.answer_entropy for r in thinking if r.answer_entropy is not None]),
        },
        "null_share": {
            "output_entropy": share_null(entropies),
            "self_consistency": share_null(consistency),
            "difficulty_score": share_null(difficulty),
        },
    }


def render_stats(stats: dict[str, Any]) -> Group:
    """A rich view of ``cache_stats``: totals, metadata distributions and an entropy histogram."""
    top = Table(title=f"cache {stats['path']}", show_header=False, title_justify="left")
    top.add_row("records", str(stats["records"]))
    top.add_row("shards", str(stats["shards"]))
    top.add_row("prompt tokens", str(stats["prompt_tokens"]))
    top.add_row("completion tokens", str(stats["completion_tokens"]))
    top.add_row("finish reasons", ", ".join(f"{k}: {v}" for k, v in stats["finish_reasons"].items()) or "-")
    top.add_row("teachers", ", ".join(f"{k}: {v}" for k, v in stats["teachers"].items()) or "-")
    tl = stats.get("token_logprobs") or {}
    if tl.get("records"):
        top.add_row(
            "token logprobs",
            f"{tl['records']} records, top-{tl['k']}, {tl['tokens']} tokens, {tl['bytes'] / 2**20:.2f} MiB "
            f"({tl['bytes_per_token']:.0f} bytes per token)",
        )
    rs = stats.get("reasoning") or {}
    if rs.get("records"):
        chars = rs["reasoning_chars"]
        top.add_row(
            "reasoning",
            f"{rs['records']} records ({', '.join(f'{k}: {v}' for k, v in rs['status'].items())}), "
            f"{rs['reasoning_tokens']} thinking tokens, {chars['mean']:.0f} characters on average",
        )

    dist = Table(title="metadata", title_justify="left")
    for col in ("field", "min", "mean", "median", "p90", "max", "null share"):
        dist.add_column(col, justify="right" if col != "field" else "left")
    for name in ("output_entropy", "self_consistency", "difficulty_score"):
        s = stats[name]
        cells = ["-"] * 5 if s is None else [f"{s[k]:.4f}" for k in ("min", "mean", "median", "p90", "max")]
        dist.add_row(name, *cells, f"{stats['null_share'][name]:.1%}")

    hist = Text("output_entropy histogram (nats)\n", style="bold")
    bins = stats["entropy_histogram"]
    peak = max((b["count"] for b in bins), default=0)
    for b in bins:
        bar = "#" * (round(40 * b["count"] / peak) if peak else 0)
        hist.append(f"{b['lo']:7.3f} - {b['hi']:7.3f} | {bar} {b['count']}\n", style="")
    if not bins:
        hist.append("(no entropy values)\n")
    return Group(top, dist, hist)
