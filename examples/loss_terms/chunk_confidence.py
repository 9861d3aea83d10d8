"""A loss term with its own per-record target, in one file: the CE of every aligned chunk weighted
by how sure the teacher was of that chunk (CWCE at the chunk's grain instead of the record's).

Target ``chunk_entropy``: for every chunk aligned between the teacher's answer tokens and the
student's (``dante.train.align``), H_c, the mean entropy of the teacher's top-K distribution
(renormalised) over the chunk's teacher tokens, at each of the chunk's student positions.
Term ``chunk_confidence``: λ · Σ_t w_t · CE_t / D with w_t = exp(−H_c / temperature) at the
positions of chunk c (0 elsewhere), so a chunk the teacher was sure of counts fully and an unsure
one less. Needs the teacher's top-K in the cache (``teacher.store_logprobs``).

Use it from a recipe (a path is read from the recipe's folder; or name an importable module)::

    train:
      loss:
        plugins: [examples/loss_terms/chunk_confidence.py]
        chunk_confidence: {weight: 0.5, temperature: 1.0}
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, Field

from dante.train.objective.losses import weighted_ce_sum
from dante.train.objective.targets import Aligned, Span, Target
from dante.train.objective.terms import Term, TileForm, register_term


def top_k_entropy(top: list[tuple[bytes, float]]) -> float:
    """The entropy (nats) of a top-K distribution renormalised to 1 (0 for none)."""
    probs = [math.exp(min(0.0, lp)) for _, lp in top]
    total = sum(probs)
    if total <= 0:
        return 0.0
    return -sum(p / total * math.log(p / total) for p in probs if p > 0)


class ChunkEntropy(Target):
    """H_c of every aligned chunk with student tokens: ``chunk_entropy`` (rows, width), H_c at each
    of the chunk's positions, and ``chunk_mask`` (rows, width), 1 there."""

    name = "chunk_entropy"

    def build(self, aligned: Aligned) -> list[Span]:
        top, out = aligned.payload.top, []
        for c in aligned.chunks:
            if c.s1 > c.s0 and c.t1 > c.t0 and c.t1 <= len(top):
                h = sum(top_k_entropy(top[t]) for t in range(c.t0, c.t1)) / (c.t1 - c.t0)
                out.append(Span(aligned.first + c.s0, aligned.first + c.s1, h))
        aligned.count("entropy_chunks", len(out))
        return out

    def collate(self, spans, rows, width, starts):
        if not any(spans):
            return {}
        entropy = torch.zeros((rows, width), dtype=torch.float32)
        mask = torch.zeros((rows, width), dtype=torch.float32)
        for found, (row, first) in zip(spans, starts, strict=True):
            for s in found:
                entropy[row, first + s.start : first + s.end] = s.value
                mask[row, first + s.start : first + s.end] = 1.0
        return {"chunk_entropy": entropy, "chunk_mask": mask}


@register_term
class ChunkConfidence(Term):
    """λ · Σ_t exp(−H_c / τ) · CE_t over the positions of aligned chunks (see the module)."""

    name = "chunk_confidence"
    targets = (ChunkEntropy,)

    class Settings(BaseModel):
        weight: float = Field(0.5, ge=0.0, description="λ of the term.")
        temperature: float = Field(1.0, gt=0.0, description="τ: nats of teacher entropy that divide the weight by e.")

    def __init__(self, settings: ChunkConfidence.Settings) -> None:
        self.settings = settings

    def weight(self, step, total_steps):
        return self.settings.weight

    def inputs(self, batch):
        if "chunk_entropy" not in batch:
            return None
        w = batch["chunk_mask"] * torch.exp(-batch["chunk_entropy"] / self.settings.temperature)
        return batch["targets"], w

    def plain(self, logits, targets, inputs):
        weighted, _ = weighted_ce_sum(logits, inputs[0], inputs[1])
        return {self.name: weighted}

    def ids(self, inputs):
        return inputs[0][:, None]

    def tile(self, tile, inputs, scale):
        w = inputs[1].float()
        ce = tile.z_max + tile.sum_exp.log() - tile.z_at.squeeze(1)
        ws = w * scale
        return TileForm({self.name: (w * ce).sum()}, ws, -ws[:, None])
