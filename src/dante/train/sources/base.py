"""What a batch source is (stage 4): each step it hands the loop a ``Draw``, its micro-batches on
this rank for that step, which the loop runs through the objective without knowing their kind;
and how a global batch is split across ranks and micro-batches.

A source's micro-batch loss is ``(share · λ_lead) · objective / D · world``: ``share`` is the
source's weight in the step's mix (GKD's λ: ``train.on_policy.fraction`` for the student's
samples, 1 − λ for the cached records), λ_lead the lead term's λ(t), D the source's normaliser
over the whole global batch (known before any forward pass) and ``world`` the number of ranks
(DDP averages their gradients, the objective sums them). So accumulation and data parallelism
keep the objective, for every source.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import torch

from dante.train.objective.terms import Parts, Term


class Draw:
    """One step's micro-batches of one source on this rank, and the sums the step logs of them.

    Every rank has the same number of micro-batches (empty ones where it has no records), so the
    collectives of DDP / FSDP stay in step. Subclasses give ``micro_batch(k)`` and ``log``."""

    def __init__(
        self,
        terms: list[Term],
        lams: list[float],
        kappas: list[float],
        share: float,
        denom: float,
        world: int,
        count: int,
    ) -> None:
        self.terms, self.lams, self.kappas, self.share = terms, lams, kappas, share  # λ_k(t), κ_k = λ_k / λ_lead
        self.denom, self.world, self.count = denom, world, count
        self.sums: dict[str, torch.Tensor] = {}  # the parts summed over this rank's micro-batches
        self.tokens = 0  # tokens of the global batch (every rank's), for the log's rates
        self.records = 0  # records of the global batch
        self.seconds = 0.0  # forward and backward of this rank's micro-batches (set by the loop)

    def __len__(self) -> int:
        return self.count

    def micro_batch(self, k: int) -> dict[str, torch.Tensor]:
        """The k-th micro-batch of this rank, collated."""
        raise NotImplementedError

    def loss(self, parts: Parts) -> torch.Tensor:
        """What one micro-batch back-propagates: (share·λ_lead)·objective / D·world; its parts are kept."""
        for name, value in parts.items():
            if name != "objective":
                self.sums[name] = self.sums.get(name, 0.0) + value.detach()
        return (self.share * self.lams[0]) * (parts["objective"] / self.denom) * self.world

    def reduced(self, accelerator, names: Sequence[str], extra: Sequence[float] = ()) -> list[float]:
        """The sums named (0 for a part no micro-batch had) and ``extra`` values, summed over ranks in
        one collective."""
        zero = torch.zeros((), device=accelerator.device)
        local = [torch.as_tensor(self.sums.get(n, zero), device=accelerator.device).float() for n in names]
        local += [torch.tensor(float(x), device=accelerator.device) for x in extra]
        if not local:
            return []
        return accelerator.reduce(torch.stack(local), "sum").tolist()

    def log(self, accelerator) -> dict[str, Any]:
        """The step's metrics of this source (summed over ranks); ``loss`` is its share-free value."""
        raise NotImplementedError


class BatchSource(Protocol):
    """Where a step's micro-batches come from: cached records, the student's own samples, ...

    A source owns its state: ``state_dict`` is what a checkpoint stores of it (under its ``name``)
    and ``load_state_dict`` takes it back on resume, so the loop and ``RunState`` name no source;
    ``manifest`` is what it adds to the student's manifest, ``held_out_loss`` its held-out loss
    (None without held-out data)."""

    name: str
    share: float  # its weight in the step's mix
    # a checkpoint written before the sources kept their own state: its top-level key -> the source's key
    older_keys: dict[str, str]

    def draw(self, step: int) -> Draw:
        """This rank's micro-batches of step ``step`` (1-based), advancing the source's cursor."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Where the source stands (JSON-able): its cursor and running totals."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state_dict``'s output (a resumed run)."""
        ...

    def held_out_loss(self, forward) -> float | None:
        """The plain mean token CE over the source's held-out data (None: it has none)."""
        ...

    def manifest(self, accelerator) -> dict[str, Any]:
        """The entries it adds to ``dante_manifest.json`` (every rank calls it: it may reduce);
        a ``teacher_compute`` dict is merged with the other sources' (numbers added)."""
        ...

    def close(self, seal: bool = True) -> None:
        """Release what the source holds (files, a teacher); ``seal`` after a finished run."""
        ...


def rank_slice(batch: Sequence[Any], rank: int, world: int) -> list[Any]:
    """Contiguous, balanced part of the global batch for one rank (sizes differ by at most 1)."""
    n = len(batch)
    start = rank * n // world
    stop = (rank + 1) * n // world
    return list(batch[start:stop])


def micro_batches(local: Sequence[int], global_size: int, world: int, micro_batch_size: int) -> list[list[int]]:
    """Split a rank's records into micro-batches. Every rank gets the same number of
    micro-batches (some possibly empty), so collective operations (DDP/FSDP) stay in step."""
    per_rank_max = math.ceil(global_size / world)
    n_micro = max(1, math.ceil(per_rank_max / micro_batch_size))
    return [list(local[k * len(local) // n_micro : (k + 1) * len(local) // n_micro]) for k in range(n_micro)]
