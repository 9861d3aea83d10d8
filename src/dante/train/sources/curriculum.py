"""Which cached records each optimizer step sees (stage 4, the records source): the entropy
curriculum as the card writes it, curricula that pace easy → hard over the run, and a seeded
shuffle. (The split of a global batch across ranks and micro-batches: ``sources.base``.)

The records form one stream of positions; step s takes the next global batch from it
(``batch_sequences`` records, or records until ``batch_tokens`` tokens), so at every step the
global batch is the next slice of the order no matter how many ranks there are; each rank takes
a contiguous part of that slice. The only state is the stream position (``cursor``), saved in
every checkpoint: every order is a pure function of (records, seed, position), so a resumed run
sees the same batches.

Epoch orders (each epoch a permutation of the records):
``entropy``           ascending output_entropy, ties by id; every epoch repeats it (the card:
                      easy → hard, easy → hard, ...)
``shuffle``           a seeded permutation, a new one each epoch
``none``              file order

A caller can replace the epoch order (``BatchStream(order=...)``, the loop's ``Hooks.epoch_order``):
the benchmarks' diagnostics of the card's curriculum do (bench/curriculum_diagnosis.py).

Paced orders over the run (``train.pacing``; the last ``full_mix`` share of the run is seeded
epochs over every record, so the run ends on the full mix):
``competence``  Platanios et al. (NAACL 2019): each step's batch is drawn without replacement
                from the easiest c(t) share of the records in entropy order,
                c(t) = min(1, sqrt(t·(1 − c0²)/T + c0²)), t the step's position in the run and
                T = (1 − full_mix) of the run
``buckets``     the entropy order cut into ``buckets`` equal buckets; the run's first
                (1 − full_mix) is cut into as many stages, stage k cycles through bucket k in
                seeded permutations (easy → hard over the run, shuffled inside)
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

from dante.cache.records import iter_cache
from dante.errors import DataError


def check_entropies(examples, source: str = "", mode: str = "entropy") -> None:
    """The entropy-ordered curricula need output_entropy on every record; name the first one without it."""
    for ex in examples:
        if ex.entropy is None:
            raise DataError(
                f"record {ex.id!r} has no output_entropy, which train.curriculum={mode} needs",
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


EPOCH_ORDERS = ("entropy", "shuffle", "none")
PACED_ORDERS = ("competence", "buckets")
NEEDS_ENTROPY = ("entropy", *PACED_ORDERS)


def entropy_order(examples) -> list[int]:
    """Indices of ``examples`` by ascending output_entropy, ties broken by id (stable)."""
    return sorted(range(len(examples)), key=lambda i: (examples[i].entropy, examples[i].id))


EpochOrder = Callable[[Sequence, int, int, int], list[int]]  # (examples, seed, epoch, block) -> indices


def epoch_order(examples, mode: str, seed: int, epoch: int, block: int = 1) -> list[int]:
    """Indices of ``examples`` in the order epoch ``epoch`` visits them (``block``: records per step)."""
    n = len(examples)
    if mode == "entropy":
        return entropy_order(examples)
    if mode == "shuffle":
        order = list(range(n))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        return order
    if mode == "none":
        return list(range(n))
    raise ValueError(f"unknown curriculum {mode!r}")


def competence(t: float, c0: float) -> float:
    """c(t) = min(1, sqrt(t·(1 − c0²) + c0²)) for t in [0, 1] of the paced stretch (Platanios
    et al. 2019, the square-root pacing): c(0) = c0, c(1) = 1."""
    return min(1.0, math.sqrt(max(0.0, t) * (1.0 - c0 * c0) + c0 * c0))


class PacedOrder:
    """``competence`` and ``buckets``: the record at each position of a run of ``run_positions``
    positions, in blocks of ``block`` positions (one step's records). Past the paced stretch,
    and past the run, seeded epochs over every record."""

    def __init__(self, examples, mode: str, seed: int, *, run_positions: int, block: int, pacing) -> None:
        if mode not in PACED_ORDERS:
            raise ValueError(f"unknown paced curriculum {mode!r}")
        self.mode, self.seed, self.block, self.pacing = mode, seed, max(1, block), pacing
        self.n = len(examples)
        self.ranked = entropy_order(examples)
        paced_blocks = math.floor((1.0 - pacing.full_mix) * run_positions / self.block)
        self.paced = paced_blocks * self.block  # positions of the paced stretch
        self._cache: dict[tuple, list[int]] = {}

    def at(self, position: int) -> int:
        if position >= self.paced:  # the full mix: seeded epochs over every record
            epoch, pos = divmod(position - self.paced, self.n)
            return self._memo(("mix", epoch), lambda: epoch_order(range(self.n), "shuffle", self.seed, epoch))[pos]
        if self.mode == "competence":
            b, pos = divmod(position, self.block)
            return self._memo(("block", b), lambda: self._competence_block(b))[pos]
        return self._bucket_at(position)

    def _competence_block(self, b: int) -> list[int]:
        """Block ``b``'s records: a seeded draw without replacement from the easiest c(t) share
        (a pool smaller than the block is cycled in seeded permutations)."""
        t = b * self.block / self.paced if self.paced else 1.0
        pool = self.ranked[: max(1, math.ceil(competence(t, self.pacing.c0) * self.n))]
        rng = random.Random(f"{self.seed}:competence:{b}")
        out: list[int] = []
        while len(out) < self.block:
            out += rng.sample(pool, min(len(pool), self.block - len(out)))
        return out

    def _bucket_at(self, position: int) -> int:
        k_count = min(self.pacing.buckets, self.n)
        stage_len = self.paced / k_count
        k = min(k_count - 1, int(position // stage_len))
        bucket = self.ranked[k * self.n // k_count : (k + 1) * self.n // k_count]
        offset = position - math.ceil(k * stage_len)
        cycle, pos = divmod(offset, len(bucket))
        order = self._memo(
            ("bucket", k, cycle), lambda: random.Random(f"{self.seed}:bucket:{k}:{cycle}").sample(bucket, len(bucket))
        )
        return order[pos]

    def _memo(self, key: tuple, make) -> list[int]:
        if key not in self._cache:
            if len(self._cache) > 64:  # positions are visited in order: old blocks are not needed again
                self._cache.clear()
            self._cache[key] = make()
        return self._cache[key]


class BatchStream:
    """The record stream of the run in curriculum order and the global batch of each step.

    ``run_positions`` (records the run visits: steps × records per step) and ``pacing``
    (``train.pacing``) are needed by the paced orders only."""

    def __init__(
        self,
        examples,
        mode: str,
        seed: int,
        *,
        batch_sequences: int | None,
        batch_tokens: int | None,
        run_positions: int | None = None,
        pacing=None,
        order: EpochOrder | None = None,
    ) -> None:
        if not examples and (batch_sequences or batch_tokens):
            raise DataError("no training records left (empty cache?)", field="train")
        self.examples = examples
        self.mode, self.seed = mode, seed
        self.batch_sequences, self.batch_tokens = batch_sequences, batch_tokens
        self.block = batch_sequences or max(1, round((batch_tokens or 1) / _mean_length(examples or [[0]])))
        self.paced, self.order = None, order
        if mode in PACED_ORDERS and order is None:
            if run_positions is None or pacing is None:
                raise ValueError(f"curriculum {mode!r} needs the run's length and train.pacing")
            self.paced = PacedOrder(examples, mode, seed, run_positions=run_positions, block=self.block, pacing=pacing)
        self._orders: dict[int, list[int]] = {}

    def at(self, position: int) -> int:
        """Example index at stream position ``position``."""
        if self.paced is not None:
            return self.paced.at(position)
        n = len(self.examples)
        epoch = position // n
        if epoch not in self._orders:  # keep one epoch
            make = self.order or (lambda ex, seed, e, block: epoch_order(ex, self.mode, seed, e, block))
            self._orders = {epoch: make(self.examples, self.seed, epoch, self.block)}
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
        return cursor / len(self.examples) if self.examples else 0.0


def _mean_length(examples) -> float:
    return max(1.0, sum(len(ex) for ex in examples) / len(examples))


def run_positions(steps: int, examples, batch_sequences: int | None, batch_tokens: int | None) -> int:
    """Records a run of ``steps`` visits: steps × batch_sequences, or with a token budget the
    estimate steps × batch_tokens / mean record length (the paced orders' time axis)."""
    if batch_sequences is not None:
        return steps * batch_sequences
    return max(1, round(steps * (batch_tokens or 1) / _mean_length(examples)))
