"""Training compute estimate (used by `dante plan` and the manifest): tokens, FLOPs and
device-hours of a recipe's student run, from the model shape and the mean record length.

    FLOPs per token = 6·N + 12·L·H·Q·T        (PaLM, appendix B; H·Q = hidden size)
                      (LoRA: 4·N + 2·N_trainable: no weight gradients for frozen weights)
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
    trainable_parameters: float | None = None,
    frozen_bytes: int = 4,
) -> dict[str, Any]:
    """Tokens, FLOPs and device-hours of ``recipe.train`` for a model of this shape; with
    ``trainable_parameters`` (LoRA), the weight gradients of the frozen ones are left out and the
    optimizer memory counts only the trainable ones."""
    tr = recipe.train
    mean_tokens = min(float(mean_tokens_per_record), float(tr.max_length))
    if tr.batch_tokens is not None:
        tokens = float(tr.steps * tr.batch_tokens)
        records = tokens / max(mean_tokens, 1.0)
    else:
        records = float(tr.steps * tr.batch_sequences)
        tokens = records * mean_tokens
    n = float(num_parameters)
    trainable = n if trainable_parameters is None else float(trainable_parameters)
    dense = 4.0 * n + 2.0 * trainable  # forward 2N, input gradients 2N, weight gradients 2T (T = N: 6N)
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
    if trainable_parameters is not None:
        out["trainable_parameters"] = trainable
        out["optimizer_state_bytes"] = 8.0 * trainable  # AdamW's two fp32 moments
        # the frozen weights (fp32, or bf16 for a LoRA base), fp32 weights, gradients and moments of the
        # trainable ones; activations apart
        out["weights_grads_and_optimizer_bytes"] = frozen_bytes * (n - trainable) + 16.0 * trainable
    if not attention:
        out["note"] = "attention term left out (n_layers/hidden unknown)"
    return out
