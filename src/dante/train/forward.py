"""The student's forward pass on one micro-batch (stage 4): packed padding-free rows with the
right attention for each kernel, logits only where there is a target, and the weighted CE
sums of the objective; plus the held-out loss, which runs the same forward without gradients.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from dante.train.attention import NAME as PACKED_SDPA
from dante.train.attention import has_sliding_window, record_bounds, use_packed_sdpa
from dante.train.chunked_ce import ChunkedCEHead
from dante.train.curriculum import micro_batches, rank_slice
from dante.train.data import IGNORE, Example, block_diagonal_causal_mask, collate
from dante.train.losses import LossParts, sparse_kd_sum, weighted_ce_sum


class Forward:
    """Runs the student on one micro-batch and returns logits aligned with its targets.

    Packed rows: an SDPA student runs attention record by record (``dante.train.attention``,
    the record boundaries passed as ``cu_seq_lens_q``); eager gets a block-diagonal causal mask;
    flash-attention and flex use ``position_ids`` (transformers detects the packed records).
    Only positions with a target get logits (``logits_to_keep``), so prompts cost no lm_head.
    ``loss_sums`` gives the loss sums by name (``losses.LossParts``); with chunked_ce (and a plain linear head) the
    lm_head computes them chunk by chunk and the (tokens × vocab) logits are never built.
    """

    def __init__(
        self, model, base_model, accelerator, *, chunked_ce: bool = False, packed_attention: bool = False
    ) -> None:
        self.model, self.device = model, accelerator.device
        if packed_attention:
            use_packed_sdpa(base_model)
        self.attn = getattr(base_model.config, "_attn_implementation", None) or "eager"
        self.sliding = has_sliding_window(base_model.config)
        self.mask_dtype = next(base_model.parameters()).dtype
        self.keep_logits = "logits_to_keep" in inspect.signature(base_model.forward).parameters
        self.head = ChunkedCEHead(base_model) if chunked_ce and ChunkedCEHead.supports(base_model) else None

    def loss_sums(self, batch: dict[str, torch.Tensor], kd_scale: float = 0.0, reverse_kd: bool = False) -> LossParts:
        """The ``LossParts`` of one micro-batch: Σ u·CE, Σ CE and, at the positions with
        token-level distillation targets, Σ v·KL (``losses.sparse_kd_sum``, v = u unless the batch
        has ``kd_weights``; KL(p ‖ q) with ``reverse_kd``; 0 without targets or with kd_scale κ = 0),
        fused into ``objective`` = Σ u·CE + κ·Σ v·KL, the part with gradients."""
        kwargs, targets, weights, kd = self._inputs(batch, kd_scale)
        if self.head is not None:
            self.head.arm(targets, weights, kd, kd_scale, reverse_kd)
            self.model(**kwargs)
            return self.head.take()
        logits = self.model(**kwargs).logits
        weighted, plain = weighted_ce_sum(logits, targets, weights)
        if kd is None:
            zero = torch.zeros((), device=weighted.device)
            return LossParts(weighted, plain, zero, weighted.detach())
        keep = kd[2].reshape(-1) > 0
        kl = sparse_kd_sum(
            logits.reshape(-1, logits.shape[-1])[keep],
            kd[0].reshape(-1, kd[0].shape[-1])[keep],
            kd[1].reshape(-1, kd[1].shape[-1])[keep],
            kd[2].reshape(-1)[keep],
            reverse=reverse_kd,
        )
        return LossParts(weighted + kd_scale * kl, plain, kl.detach(), weighted.detach())

    def __call__(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        kwargs, targets, weights, _ = self._inputs(batch)
        return self.model(**kwargs).logits, targets, weights

    def _inputs(
        self, batch: dict[str, torch.Tensor], kd_scale: float = 0.0
    ) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor, Any]:
        bounds = record_bounds(batch["segment_ids"]) if self.attn == PACKED_SDPA and "segment_ids" in batch else None
        batch = {k: v.to(self.device) for k, v in batch.items()}
        kwargs: dict[str, Any] = {"input_ids": batch["input_ids"], "use_cache": False}
        if "segment_ids" in batch:
            kwargs["position_ids"] = batch["position_ids"]
            if bounds is not None:
                kwargs["cu_seq_lens_q"] = bounds  # stays on the CPU
            elif (
                self.attn in ("sdpa", "eager") and not self.sliding
            ):  # else transformers' mask from position_ids keeps the windows
                kwargs["attention_mask"] = block_diagonal_causal_mask(
                    batch["segment_ids"], as_bool=self.attn == "sdpa", dtype=self.mask_dtype
                )
        else:
            kwargs["attention_mask"] = batch["attention_mask"]
        targets, weights = batch["targets"], batch["weights"]
        kd = None
        if kd_scale > 0 and "kd_ids" in batch:
            ids, probs = batch["kd_ids"], batch["kd_probs"]
            kd = (ids, probs, batch.get("kd_weights", weights) * (ids[..., 0] >= 0))
        if self.keep_logits:
            keep = (targets != IGNORE).any(dim=0).nonzero().flatten()
            if keep.numel() == 0:
                keep = torch.zeros(1, dtype=torch.long, device=self.device)
            kwargs["logits_to_keep"] = keep
            targets, weights = targets[:, keep], weights[:, keep]
            if kd is not None:
                kd = tuple(t[:, keep] for t in kd)
        return kwargs, targets, weights, kd


def empty_example(pad_id: int) -> Example:
    """A one-token example with no target, for a rank whose share of a micro-batch is empty."""
    return Example("<empty>", [pad_id], [IGNORE], 0, None)


@torch.no_grad()
def held_out_loss(
    forward: Forward, examples: list[Example], accelerator, *, micro_batch_size: int, packing: bool, pad_id: int
) -> float | None:
    """Plain mean token CE (no CWCE weights) over the held-out records, summed across ranks."""
    if not examples:
        return None
    order = list(range(len(examples)))
    local = rank_slice(order, accelerator.process_index, accelerator.num_processes)
    ce_sum = torch.zeros((), device=accelerator.device)
    forward.model.eval()
    for mb in micro_batches(local, len(order), accelerator.num_processes, micro_batch_size):
        group = [examples[i] for i in mb] or [empty_example(pad_id)]
        with accelerator.autocast():
            ce_sum += forward.loss_sums(collate(group, [1.0] * len(group), packing=packing, pad_id=pad_id)).ce
    forward.model.train()
    ce_sum = accelerator.reduce(ce_sum, "sum")
    return float(ce_sum) / sum(ex.n_completion for ex in examples)
