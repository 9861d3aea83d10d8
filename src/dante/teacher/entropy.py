"""The teacher's uncertainty per generated token: the entropy of its next-token distribution,
known from the top-k logprobs every engine returns. The scalar form (one position's logprobs,
what the HTTP and vLLM engines hand back) and the batched form (the hf engine's raw logits)
compute the same number; ``output_entropy`` is the record's mean, H in the CWCE weight w(H).
"""

# torch is imported only by the functions that take logits tensors: the HTTP teacher and the
# cache's metadata use the float functions without it.

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def topk_entropy(top_logprobs: Sequence[float]) -> float:
    """Entropy (nats) of one next-token distribution known only through its top-k logprobs.

        p_i = exp(l_i)                       for the k returned logprobs l_i
        r   = max(0, 1 - sum_i p_i)          tail mass outside the top k (clamped for rounding)
        H   = -sum_i p_i log p_i - r log r   the tail counted as one extra outcome

    0 <= H <= log(k + 1). Terms with p = 0 (logprob -inf) contribute 0. With k = vocabulary
    size this is the exact entropy; otherwise it is a lower bound of the true entropy
    (docs/teachers.md, "Metadata definitions").
    """
    h = 0.0
    total = 0.0
    for lp in top_logprobs:
        p = math.exp(lp) if lp > -math.inf else 0.0
        total += p
        if p > 0.0:
            h -= p * lp
    r = 1.0 - total
    if r > 0.0:
        h -= r * math.log(r)
    k = len(top_logprobs)
    return min(max(h, 0.0), math.log(k + 1)) if k else 0.0


def output_entropy(per_token: Sequence[float] | Sequence[Sequence[float]] | None) -> float | None:
    """Mean next-token entropy over the generated tokens, in nats.

        H = (1/T) sum_t H_t

    ``per_token`` is either the per-token entropies H_t already computed (floats; what the
    teacher workers return) or the per-token top-k logprob lists, turned into H_t with
    ``topk_entropy``. None (or empty: no logprobs, or no tokens generated) gives None.
    """
    if not per_token:
        return None
    values = [topk_entropy(t) if isinstance(t, Sequence) else float(t) for t in per_token]
    return sum(values) / len(values)


def topk_entropy_from_logits(logits: Any, k: int) -> Any:
    """Batched ``topk_entropy`` of the softmax of ``logits`` [..., V].

    H = -sum_{i<=k} p_i log p_i - r log r, r = max(0, 1 - sum_{i<=k} p_i); float64; in nats.
    """
    import torch

    logp = torch.log_softmax(logits.float(), dim=-1)
    return topk_entropy_from_top(logp.topk(min(k, logp.shape[-1]), dim=-1).values)


def topk_entropy_from_top(top_logprobs: Any) -> Any:
    """``topk_entropy`` of each row of already sorted top-k logprobs [..., k] (a tensor)."""
    import torch

    top = top_logprobs.double()
    p = top.exp()
    h = -torch.where(p > 0, p * top, torch.zeros_like(p)).sum(-1)
    r = (1.0 - p.sum(-1)).clamp(min=0.0)
    h = h - torch.where(r > 0, r * torch.log(r.clamp(min=1e-300)), torch.zeros_like(r))
    return h.clamp(min=0.0, max=math.log(top.shape[-1] + 1))
