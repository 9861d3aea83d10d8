"""Which records each optimizer step sees (stage 4): the entropy curriculum, its ablations,
epoch cycling, and the split of a global batch across ranks and micro-batches.

The records form one stream: epoch 0 in curriculum order, then epoch 1, and so on. Step s
takes the next global batch from the stream (``batch_sequences`` records, or records until
``batch_tokens`` tokens), so at every step the global batch is the next slice of the sorted
order no matter how many ranks there are; each rank takes a contiguous part of that slice.
The only state is the stream position (``cursor``), saved in every checkpoint.

Orders: ``entropy`` ascending output_entropy, ties broken by id (stable, the card's
curriculum; every epoch repeats it: easy → hard, easy → hard, ...); ``shuffle`` a seeded
permutation, a new one each epoch (the ablation); ``none`` file order.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from dante.cache.records import iter_cache
from dante.errors import DataError


def check_entropies(examples, source: str = "") -> None:
    """The entropy curriculum needs output_entropy on every record; name the first one without it."""
    for ex in examples:
        if ex.entropy is None:
            raise DataError(
                f"record {ex.id!r} has no output_entropy, which train.curriculum=entropy needs",
                file=_locate(source, ex.id) or source or None,
                field="output_entropy",
                hint="regenerate the cache with teacher.top_logprobs > 0, or set train.curriculum=shuffle / none",
            )


def _locate(source: str, rec_id: str) -> str | None:
    """'file:line' of a record id in a cache (only on the error path)."""
    if not source:
        return None
    try:
        for file, line, rec, _ in iter_cache(source):
            if rec is not None and rec.id == rec_id:
                return f"{file}:{line}"
    except Exception:  # noqa: BLE001 - best effort; the id alone still names the record
        return None
    return None


def epoch_order(examples, mode: str, seed: int, epoch: int) -> list[int]:
    """Indices of ``examples`` in the order epoch ``epoch`` visits them."""
    n = len(examples)
    if mode == "entropy":
        return sorted(range(n), key=lambda i: (examples[i].entropy, examples[i].id))
    if mode == "shuffle":
        order = list(range(n))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        return order
    if mode == "none":
        return list(range(n))
    raise ValueError(f"unknown curriculum {mode!r}")


class BatchStream:
    """The epoch-cycled record stream and the global batch of each step."""

    def __init__(
        self, examples, mode: str, seed: int, *, batch_sequences: int | None, batch_tokens: int | None
    ) -> None:
        if not examples:
            raise DataError("no training records left (empty cache?)", field="train")
        self.examples = examples
        self.mode, self.seed = mode, seed
        self.batch_sequences, self.batch_tokens = batch_sequences, batch_tokens
        self._orders: dict[int, list[int]] = {}

    def at(self, position: int) -> int:
        """Example index at stream position ``position``."""
        n = len(self.examples)
        epoch = position // n
        if epoch not in self._orders:
            self._orders = {epoch: epoch_order(self.examples, self.mode, self.seed, epoch)}  # keep one epoch
        return self._orders[epoch][position % n]

    def next_batch(self, cursor: int) -> tuple[list[int], int]:
        """(example indices of the global batch starting at ``cursor``, the cursor after it)."""
        if self.batch_tokens is None:
            assert self.batch_sequences is not None
            return [self.at(cursor + k) for k in range(self.batch_sequences)], cursor + self.batch_sequences
        batch, tokens = [], 0
        while tokens < self.batch_tokens:  # at least one record, then until the token budget is reached
            i = self.at(cursor)
            if batch and tokens + len(self.examples[i]) > self.batch_tokens:
                break
            batch.append(i)
            tokens += len(self.examples[i])
            cursor += 1
        return batch, cursor

    def epoch_of(self, cursor: int) -> float:
        return cursor / len(self.examples)


def rank_slice(batch: Sequence[int], rank: int, world: int) -> list[int]:
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
