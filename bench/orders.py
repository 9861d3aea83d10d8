"""Diagnostic orders of the cached records, for the benchmarks that take the card's curriculum
apart (BENCHMARKS 6d, bench/curriculum_diagnosis.py): not settings a user trains with, so they
live here and reach the trainer through its hook (``dante.train.loop.Hooks.epoch_order``).

``entropy_reversed``  descending output_entropy every epoch (hard → easy)
``entropy_batches``   the entropy order cut into batch-sized blocks, the blocks in a seeded order
                      each epoch (batches as alike as the card's, no trend across the epoch)

Each is an ``EpochOrder``: (examples, seed, epoch, block) -> indices, a pure function, so a
resumed run sees the same batches.
"""

from __future__ import annotations

import random

from dante.train.sources.curriculum import EpochOrder, entropy_order


def entropy_reversed(examples, seed: int, epoch: int, block: int = 1) -> list[int]:
    return entropy_order(examples)[::-1]


def entropy_batches(examples, seed: int, epoch: int, block: int = 1) -> list[int]:
    ranked = entropy_order(examples)
    blocks = [ranked[k : k + block] for k in range(0, len(examples), max(1, block))]
    random.Random(seed * 1_000_003 + epoch).shuffle(blocks)
    return [i for b in blocks for i in b]


ORDERS: dict[str, EpochOrder] = {"entropy_reversed": entropy_reversed, "entropy_batches": entropy_batches}
