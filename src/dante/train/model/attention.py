"""Packed rows without cross-record attention work (stage 4): SDPA run record by record.

A packed micro-batch is one row of several records. With a block-diagonal mask SDPA still
computes every (query, key) pair of the row, T² work for a row of T tokens, and masks most of
it away. ``packed_sdpa`` is the same attention, exactly, run on each record's slice with
``is_causal=True``: Σ L_i²/2 work, what flash-attention's varlen kernel does on GPU. It is a
transformers attention implementation ("dante_packed_sdpa"); the trainer switches an "sdpa"
student to it and passes the record boundaries as ``cu_seq_lens_q``. Every other call (no
boundaries: padded rows, evaluation, generation) is plain SDPA with its mask.
"""

# transformers' attention registry is imported where the packed kernel is registered.

from __future__ import annotations

import torch

NAME = "dante_packed_sdpa"


def packed_sdpa(
    module,
    query,
    key,
    value,
    attention_mask,
    dropout: float = 0.0,
    scaling: float | None = None,
    cu_seq_lens_q: torch.Tensor | None = None,
    **kwargs,
):
    """transformers attention function: (B, H, T, D) inputs, returns ((B, T, H, D), None)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    kwargs = {
        k: v for k, v in kwargs.items() if k not in ("cu_seq_lens_k", "max_length_q", "max_length_k", "is_causal")
    }
    if cu_seq_lens_q is None or query.shape[0] != 1 or kwargs.get("sliding_window"):
        # the mask transformers built from position_ids keeps records (and windows) apart
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    bounds = cu_seq_lens_q.tolist()  # kept on the CPU by the trainer: no device sync per layer
    outputs = [
        sdpa_attention_forward(
            module,
            query[:, :, s:e],
            key[:, :, s:e],
            value[:, :, s:e],
            None,
            dropout=dropout,
            scaling=scaling,
            is_causal=True,
            **kwargs,
        )[0]
        for s, e in zip(bounds[:-1], bounds[1:])
    ]
    return torch.cat(outputs, dim=1), None


def use_packed_sdpa(model) -> bool:
    """Switch an "sdpa" model to ``packed_sdpa`` (registered with transformers on first use);
    returns whether it did. Not saved with the model: a reloaded checkpoint is plain "sdpa"."""
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, packed_sdpa)
    AttentionMaskInterface.register(NAME, sdpa_mask)  # padded rows and fallbacks keep SDPA's masks
    model.set_attn_implementation(NAME)
    return True


def has_sliding_window(config) -> bool:
    """Whether some layers attend within a sliding window (Mistral, Qwen2 with use_sliding_window,
    Gemma 2/3): a plain block-diagonal mask would drop the window."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    if "sliding_attention" in (getattr(config, "layer_types", None) or []):
        return True
    return bool(getattr(config, "sliding_window", None)) and getattr(config, "use_sliding_window", True) is not False


def record_bounds(segment_ids: torch.Tensor) -> torch.Tensor:
    """Cumulative record boundaries [0, L_0, L_0+L_1, ..., T] (int32, CPU) of a packed row's segment ids."""
    seg = segment_ids.reshape(-1).cpu()
    starts = torch.nonzero(torch.diff(seg, prepend=seg[:1] - 1)).flatten()
    return torch.cat([starts, torch.tensor([seg.numel()])]).to(torch.int32)


def block_diagonal_causal_mask(
    segment_ids: torch.Tensor, *, as_bool: bool, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(B, 1, T, T) mask letting position q attend to k only when k ≤ q within the same record.

    SDPA takes the boolean form (True = attend); eager attention adds the float form
    (0 = attend, dtype min = blocked). Needed on CPU, where there is no varlen kernel.
    """
    T = segment_ids.shape[-1]
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    causal = torch.ones(T, T, dtype=torch.bool, device=segment_ids.device).tril()
    allowed = (same & causal)[:, None]
    if as_bool:
        return allowed
    blocked = torch.zeros(allowed.shape, dtype=dtype, device=segment_ids.device)
    return blocked.masked_fill(~allowed, torch.finfo(dtype).min)
