"""Weighted prompt mixtures (stage 1, curation): how many prompts each source gives, and which.

A source with weight w_i gives n_i ≈ N · w_i / Σw prompts (largest-remainder rounding, so the
n_i add up to N exactly). Without a requested size N is the largest set that keeps the
weights. Each source's prompts are taken as a prefix of one seeded shuffle, so a larger N keeps
the prompts of a smaller one.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from dante.errors import DataError


def allocate(weights: Sequence[float], available: Sequence[int], size: int | None = None) -> list[int]:
    """Prompts to take from each source.

    shares s_i = w_i / Σw; N = ``size``, or max N with N·s_i ≤ available_i for every source;
    n_i = ⌊N·s_i⌋, plus one for the sources with the largest remainders N·s_i − ⌊N·s_i⌋ until
    Σn_i = N (ties: the earlier source). A source that cannot give its share is a DataError.
    """
    if len(weights) != len(available):
        raise ValueError("one weight per source")
    total = float(sum(weights))
    if total <= 0 or any(w < 0 for w in weights):
        raise DataError("mixture weights must be ≥ 0 and not all zero", field="prompts.sources")
    shares = [w / total for w in weights]
    # the most prompts each source allows at its share; the smallest is the largest set that keeps the weights
    limits = {i: math.floor(a / s + 1e-9) for i, (a, s) in enumerate(zip(available, shares, strict=True)) if s > 0}
    largest = min(limits.values())
    if size is None:
        size = largest
        if size == 0:
            i = min(limits, key=limits.get)
            raise DataError(
                f"source {i} has {available[i]} prompts left after de-duplication and decontamination: "
                "no set keeps the weights",
                field=f"prompts.sources[{i}].weight",
                hint="give the source more rows (limit) or weight 0",
            )
    quotas = [size * s for s in shares]
    counts = [math.floor(q + 1e-9) for q in quotas]
    order = sorted(range(len(quotas)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in order[: size - sum(counts)]:
        counts[i] += 1
    for i, (n, a) in enumerate(zip(counts, available, strict=True)):
        if n > a:
            raise DataError(
                f"source {i} has {a} prompts left after de-duplication and decontamination, "
                f"but its weight asks for {n} of {size}",
                field=f"prompts.sources[{i}].weight",
                hint=f"lower prompts.size (at most {largest} keeps the weights), raise the source's limit, "
                "or lower its weight",
            )
    return counts


def pick(available: int, count: int, seed: int, source_index: int) -> list[int]:
    """``count`` of ``available`` positions, in order: the first ``count`` of a shuffle seeded by
    (seed, source_index), so the pick for a larger count contains the pick for a smaller one."""
    if count >= available:
        return list(range(available))
    order = list(range(available))
    random.Random(f"dante-mixture/{seed}/{source_index}").shuffle(order)
    return sorted(order[:count])
