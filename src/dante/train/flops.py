"""Training compute estimate (used by `dante plan` and the manifest): tokens, FLOPs and
device-hours of a recipe's student run, from the model shape and the mean record length.

    FLOPs per token = 6·N + 12·L·H·Q·T        (PaLM, appendix B; H·Q = hidden size)
    FLOPs           = tokens · (6·N + 12·L·hidden·T)

N: parameters taking part in the matmuls (we take the full count; for tied models this counts
the embedding once, as the lm_head). The attention term counts the QKᵀ and AV matmuls
forward and backward for a context of T tokens; with padding-free packing a token attends only
within its own record, so T is the mean record length, not the row length (a slight
over-estimate: a causal token sees on average T/2 keys, PaLM's convention counts T).
Device-hours = FLOPs / (MFU · peak) / 3600; the default peak is the A100 bf16 dense peak
(312 TFLOP/s; H100 SXM: 989).
"""

from __future__ import annotations

from typing import Any


def estimate_training(
    recipe,
    num_parameters: float,
    n_layers: int | None,
    hidden: int | None,
    mean_tokens_per_record: float,
    mfu: float = 0.4,
    peak_tflops: float = 312.0,
) -> dict[str, Any]:
    """Tokens, FLOPs and device-hours of ``recipe.train`` for a model of this shape."""
    tr = recipe.train
    mean_tokens = min(float(mean_tokens_per_record), float(tr.max_length))
    if tr.batch_tokens is not None:
        tokens = float(tr.steps * tr.batch_tokens)
        records = tokens / max(mean_tokens, 1.0)
    else:
        records = float(tr.steps * tr.batch_sequences)
        tokens = records * mean_tokens
    dense = 6.0 * float(num_parameters)
    attention = 12.0 * n_layers * hidden * mean_tokens if n_layers and hidden else 0.0
    flops = tokens * (dense + attention)
    seconds = flops / (mfu * peak_tflops * 1e12)
    out: dict[str, Any] = {
        "num_parameters": float(num_parameters),
        "records": records,
        "tokens": tokens,
        "flops_per_token": dense + attention,
        "flops_dense": tokens * dense,
        "flops_attention": tokens * attention,
        "flops": flops,
        "mfu": mfu,
        "peak_tflops": peak_tflops,
        "device_hours": seconds / 3600.0,
    }
    if not attention:
        out["note"] = "attention term left out (n_layers/hidden unknown)"
    return out
