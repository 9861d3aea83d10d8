"""Which cached records are trained on (stage 4): ``train.filter`` (finished, answered,
consistent records; counted) and the held-out split (a seeded hash of the record id).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dante.answers import extract_answer
from dante.config import FilterConfig
from dante.errors import DataError


def split_heldout(records: list, fraction: float, seed: int) -> tuple[list, list]:
    """(train, held-out): a fixed share of records chosen by a seeded hash of their id, so the
    split does not depend on file order and stays put when records are added."""
    if fraction <= 0 or len(records) < 2:
        return list(records), []
    n_eval = min(len(records) - 1, max(1, round(fraction * len(records))))
    key = {id(r): hashlib.sha256(f"{seed}:{r.id}".encode()).hexdigest() for r in records}
    chosen = {id(r) for r in sorted(records, key=lambda r: key[id(r)])[:n_eval]}
    return [r for r in records if id(r) not in chosen], [r for r in records if id(r) in chosen]


@dataclass
class FilterCounts:
    """What ``train.filter`` kept of the cache, and why it dropped the rest (first reason that applies)."""

    read: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(
        default_factory=lambda: {"truncated": 0, "no_answer": 0, "low_consistency": 0, "incomplete_reasoning": 0}
    )

    def as_dict(self) -> dict[str, Any]:
        return {"read": self.read, "kept": self.kept, "dropped": dict(self.dropped)}


def filter_records(records: list, cfg: FilterConfig, source: str | Path = "") -> tuple[list, FilterCounts]:
    """The records ``cfg`` keeps, in order: finished (finish_reason not ``length``), with a final
    answer (``dante.answers.extract_answer``), at or above the self-consistency threshold."""
    counts = FilterCounts(read=len(records))
    if cfg.min_self_consistency is not None:
        missing = next((r for r in records if r.self_consistency is None), None)
        if missing is not None:
            raise DataError(
                f"record {missing.id} has no self_consistency, so train.filter.min_self_consistency cannot apply",
                file=source,
                field="self_consistency",
                hint="write the cache with teacher.consistency_samples > 0, or unset train.filter.min_self_consistency",
            )
    kept = []
    for rec in records:
        if cfg.complete_reasoning and getattr(rec, "reasoning_status", None) in ("cut", "no_answer"):
            counts.dropped["incomplete_reasoning"] += 1
        elif cfg.drop_truncated and rec.finish_reason == "length":
            counts.dropped["truncated"] += 1
        elif cfg.require_answer and extract_answer(rec.teacher_text) is None:
            counts.dropped["no_answer"] += 1
        elif cfg.min_self_consistency is not None and rec.self_consistency < cfg.min_self_consistency:
            counts.dropped["low_consistency"] += 1
        else:
            kept.append(rec)
    counts.kept = len(kept)
    if records and not kept:
        raise DataError(
            f"train.filter dropped every record ({counts.dropped})",
            file=source,
            field="train.filter",
            hint="loosen train.filter, or raise teacher.max_new_tokens so completions finish",
        )
    return kept, counts
