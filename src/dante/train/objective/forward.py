"""The student's forward pass on one micro-batch (stage 4): packed padding-free rows with the
right attention for each kernel, logits only where there is a target, and the sums of the
objective's terms (``terms``), in the fused lm_head where it can run (``chunked_ce``).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from dante.train.model.attention import NAME as PACKED_SDPA
from dante.train.model.attention import block_diagonal_causal_mask, has_sliding_window, record_bounds, use_packed_sdpa
from dante.train.objective.chunked_ce import ChunkedCEHead
from dante.train.objective.losses import IGNORE
from dante.train.objective.terms import CrossEntropy, Parts, Term, plain_parts

_CE: list[Term] = [CrossEntropy()]


class Forward:
    """Runs the student on one micro-batch and returns the sums of the objective's terms.

    Packed rows: an SDPA student runs attention record by record (``dante.train.model.attention``,
    the record boundaries passed as ``cu_seq_lens_q``); eager gets a block-diagonal causal mask;
    flash-attention and flex use ``position_ids`` (transformers detects the packed records).
    Only positions with a target get logits (``logits_to_keep``), so prompts cost no lm_head.
    With chunked_ce (and a plain linear head) the lm_head computes the terms tile by tile
    (each term's tile form) and the (tokens × vocab) logits are never built.
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

    def loss_sums(
        self, batch: dict[str, torch.Tensor], terms: list[Term] | None = None, kappas: list[float] | None = None
    ) -> Parts:
        """The parts of one micro-batch keyed by name: each term's sums (its value under its name,
        e.g. ``cwce`` = Σ u·CE, and what it logs besides, e.g. ``ce`` = Σ CE) and ``objective`` =
        Σ_k κ_k·S_k, the part with gradients. A term with κ = 0 or no inputs in the batch is left
        out. Default: the CE term alone (κ = 1)."""
        terms, kappas = terms or _CE, kappas or [1.0] * len(terms or _CE)
        kwargs, on_device, targets, keep = self._inputs(batch)
        inputs = []
        for term, kappa in zip(terms, kappas, strict=True):
            given = term.inputs(on_device) if kappa != 0.0 else None
            inputs.append(None if given is None else tuple(t[:, keep] for t in given))
        if self.head is not None:
            active = [(t, k, i) for t, k, i in zip(terms, kappas, inputs, strict=True) if i is not None]
            self.head.arm(targets, [a[0] for a in active], [a[1] for a in active], [a[2] for a in active])
            self.model(**kwargs)
            return self.head.take()
        logits = self.model(**kwargs).logits
        return plain_parts(terms, kappas, logits, targets, inputs)

    def __call__(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        kwargs, on_device, targets, keep = self._inputs(batch)
        return self.model(**kwargs).logits, targets, on_device["weights"][:, keep]

    def _inputs(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, Any], dict[str, torch.Tensor], Any, Any]:
        """The model's keyword arguments, the batch on the device, the targets of the positions that
        get logits, and those positions (an index into every (rows, positions, ...) tensor of the
        batch; all of them without ``logits_to_keep``)."""
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
        targets = batch["targets"]
        keep = slice(None)
        if self.keep_logits:
            keep = (targets != IGNORE).any(dim=0).nonzero().flatten()
            if keep.numel() == 0:
                keep = torch.zeros(1, dtype=torch.long, device=self.device)
            kwargs["logits_to_keep"] = keep
            targets = targets[:, keep]
        return kwargs, batch, targets, keep
