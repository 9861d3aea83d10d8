"""Collation (stage 4): examples -> one micro-batch of tensors, packed (one row, padding-free,
positions restarting per record) or padded, with each example's weights and the targets its terms
read (``objective.targets.collate_targets``). The loop only asks for ``collate(examples, ...)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dante.train.objective.losses import IGNORE
from dante.train.objective.targets import collate_targets
from dante.train.sources.examples import Example


def collate(
    examples: list[Example],
    weights: Sequence[float | Sequence[float]],
    *,
    packing: bool,
    pad_id: int,
    kd_weights: Sequence[float] | None = None,
) -> dict[str, torch.Tensor]:
    """A micro-batch as tensors. ``weights[i]`` is u_t for every target of example i, or a list
    of u_t per position of example i (the on-policy advantages). ``kd_weights[i]``, when given,
    is v_t of example i's token-level targets (``kd_weights`` in the batch); without it v_t = u_t.

    packing=True: one row, padding-free; ``position_ids`` restart at 0 for each record and
    ``segment_ids`` number the records (for the block-diagonal mask). packing=False: one row per
    record, right-padded, with an ``attention_mask``.
    """
    per_position = [_position_weights(ex, w) for ex, w in zip(examples, weights, strict=True)]
    kd_per_position = (
        None if kd_weights is None else [_position_weights(ex, v) for ex, v in zip(examples, kd_weights, strict=True)]
    )
    if packing:
        ids, pos, tgt, seg = [], [], [], []
        for k, ex in enumerate(examples):
            ids += ex.input_ids
            pos += range(len(ex))
            tgt += ex.targets
            seg += [k] * len(ex)
        batch = {
            "input_ids": torch.tensor([ids]),
            "position_ids": torch.tensor([pos]),
            "targets": torch.tensor([tgt]),
            "weights": torch.tensor([[w for ws in per_position for w in ws]], dtype=torch.float32),
            "segment_ids": torch.tensor([seg]),
        }
        if kd_per_position is not None:
            batch["kd_weights"] = torch.tensor([[v for vs in kd_per_position for v in vs]], dtype=torch.float32)
        firsts = [0]
        for ex in examples[:-1]:
            firsts.append(firsts[-1] + len(ex))
        batch.update(collate_targets([ex.term_targets for ex in examples], 1, len(ids), [(0, f) for f in firsts]))
        return batch
    width = max(len(ex) for ex in examples)
    n = len(examples)
    batch = {
        "input_ids": torch.full((n, width), pad_id),
        "attention_mask": torch.zeros((n, width), dtype=torch.long),
        "targets": torch.full((n, width), IGNORE),
        "weights": torch.zeros((n, width), dtype=torch.float32),
    }
    if kd_per_position is not None:
        batch["kd_weights"] = torch.zeros((n, width), dtype=torch.float32)
    for r, ex in enumerate(examples):
        L = len(ex)
        batch["input_ids"][r, :L] = torch.tensor(ex.input_ids)
        batch["attention_mask"][r, :L] = 1
        batch["targets"][r, :L] = torch.tensor(ex.targets)
        batch["weights"][r, :L] = torch.tensor(per_position[r], dtype=torch.float32)
        if kd_per_position is not None:
            batch["kd_weights"][r, :L] = torch.tensor(kd_per_position[r], dtype=torch.float32)
    batch.update(collate_targets([ex.term_targets for ex in examples], n, width, [(r, 0) for r in range(n)]))
    return batch


def _position_weights(ex: Example, w: float | Sequence[float]) -> list[float]:
    """u_t at each position of ``ex``: the record's weight, or the given per-position list; 0
    where there is no target."""
    if isinstance(w, int | float):
        return [float(w) if t != IGNORE else 0.0 for t in ex.targets]
    if len(w) != len(ex):
        raise ValueError(f"{len(w)} weights for an example of {len(ex)} positions")
    return [float(x) if t != IGNORE else 0.0 for x, t in zip(w, ex.targets, strict=True)]
