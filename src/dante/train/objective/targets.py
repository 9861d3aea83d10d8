"""Per-record targets a term reads (stage 4): how a target is built from a record whose teacher
answer is aligned with the student's tokens of it, and how a micro-batch collates it.

A term lists the targets it reads (``Term.targets``); a batch source builds those, and only those,
for each record, then ``collate`` turns them into the tensors the term's ``inputs`` takes from the
batch. A target is a ``Target`` subclass with a ``name`` (it registers itself by defining one):

- ``build(aligned)``: from one ``Aligned`` record (its teacher payload's answer part, the chunks of
  ``dante.train.align``, the student's vocabulary) the target as ``Span``s over the student's
  completion tokens; the source moves them to sequence positions and leaves out spans cut by
  ``train.max_length``;
- ``collate(spans, rows, width, starts)``: the spans of a micro-batch's examples as tensors
  (``starts[i]``: the row and first position of example i).

So a term with a new kind of per-record target is one file: its ``Target`` and its ``Term``
(docs/training.md, "Adding a loss term"). The built-in targets: ``TopK`` (the teacher's top-K at
the positions one token on both sides, for token KD and the dense on-policy term) and
``ChunkLikelihoods`` (the teacher's log-likelihood of every aligned chunk, for the chunk term).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from dante.tokens import TokenLogprobs
from dante.train.objective.losses import teacher_chunk_logprob


@dataclass(frozen=True)
class Span:
    """A target's value over student positions [start, end) (completion indices when built,
    sequence positions once placed)."""

    start: int
    end: int
    value: Any

    def shifted(self, by: int) -> Span:
        return Span(self.start + by, self.end + by, self.value)


@dataclass
class Aligned:
    """A record's teacher answer aligned with the student's tokens that spell it: ``chunks``
    (``dante.train.align.Chunk``, student indices from ``first``, the student completion index of
    the answer's first token), ``payload`` (the teacher's answer tokens, logprobs and top-K),
    ``vocab`` (the student's ``bytes -> id``, ``get``) and ``counts``, where a target adds what it
    found (written to the training manifest)."""

    payload: TokenLogprobs
    chunks: list[Any]
    first: int
    vocab: Any
    counts: dict[str, float] = field(default_factory=dict)

    def count(self, key: str, n: float) -> None:
        self.counts[key] = self.counts.get(key, 0) + n


TARGETS: dict[str, type[Target]] = {}  # every target by name (a subclass with a name registers itself)


class Target:
    """One kind of per-record target. Subclasses set ``name`` and implement ``build`` and ``collate``."""

    name: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            TARGETS[cls.name] = cls

    def build(self, aligned: Aligned) -> list[Span]:
        """The record's target as spans of student completion indices (an empty list: none here)."""
        raise NotImplementedError

    def collate(self, spans: list[list[Span]], rows: int, width: int, starts: list[tuple[int, int]]) -> dict:
        """The micro-batch's tensors (each (rows, width, ...)); ``spans[i]`` are example i's, in
        sequence positions, ``starts[i]`` = (its row, its first position in the row)."""
        raise NotImplementedError


def targets_of(terms) -> list[Target]:
    """One instance of every target the terms read, in the order they first name them."""
    out: dict[str, Target] = {}
    for term in terms:
        for cls in term.targets:
            out.setdefault(cls.name, cls())
    return list(out.values())


def collate_targets(per_example: list[dict[str, list[Span]]], rows: int, width: int, starts) -> dict:
    """Every target any of the examples carries, collated by its kind (``TARGETS``)."""
    names: dict[str, None] = {}
    for found in per_example:
        names.update(dict.fromkeys(found))
    out: dict[str, torch.Tensor] = {}
    for name in names:
        out.update(TARGETS[name]().collate([found.get(name, []) for found in per_example], rows, width, starts))
    return out


class TopK(Target):
    """The teacher's top-K at every chunk that is one token on both sides, as student ids and
    probabilities (alternatives the student's vocabulary does not have as one token are left to the
    tail of ``losses.sparse_kd_sum``): ``kd_ids`` (rows, width, K) with −1 pads and ``kd_probs``."""

    name = "top_k"

    def build(self, aligned: Aligned) -> list[Span]:
        spans = top_k_spans(aligned.payload.top, aligned.chunks, aligned.vocab)
        aligned.count("positions", len(spans))
        aligned.count("mapped_mass", sum(min(1.0, sum(s.value[1])) for s in spans))
        return [s.shifted(aligned.first) for s in spans]

    def collate(self, spans, rows, width, starts):
        k = max((len(s.value[0]) for found in spans for s in found), default=0)
        if not k:
            return {}
        ids = torch.full((rows, width, k), -1, dtype=torch.long)
        probs = torch.zeros((rows, width, k), dtype=torch.float32)
        for found, (row, first) in zip(spans, starts, strict=True):
            for s in found:
                i, p = s.value
                ids[row, first + s.start, : len(i)] = torch.tensor(i, dtype=torch.long)
                probs[row, first + s.start, : len(p)] = torch.tensor(p, dtype=torch.float32)
        return {"kd_ids": ids, "kd_probs": probs}


def top_k_spans(top: list[list[tuple[bytes, float]]], chunks, vocab) -> list[Span]:
    """``TopK``'s spans from a payload's top-K and the chunks (student indices as in the chunks):
    one position each, its value (student ids, probabilities)."""
    out = []
    for c in chunks:
        if not c.one_to_one or c.t0 >= len(top):
            continue
        ids, probs = [], []
        for alt, lp in top[c.t0]:
            sid = vocab.get(alt)
            if sid is not None and sid not in ids:
                ids.append(sid)
                probs.append(math.exp(min(0.0, lp)))
        total = sum(probs)
        if total > 1.0:  # float16 rounding: renormalise so the tail is ≥ 0
            probs = [p / total for p in probs]
        if ids:
            out.append(Span(c.s0, c.s0 + 1, (ids, probs)))
    return out


class ChunkLikelihoods(Target):
    """Every aligned chunk with student tokens and the teacher's log-likelihood of it, l_T (the sum
    of the cached logprobs of its teacher tokens, ``losses.teacher_chunk_logprob``, as on-policy sums
    them): ``chunk_ids`` (rows, width), the chunk each position belongs to (numbered from 0 across the
    micro-batch, −1 for none), and ``chunk_lt``, l_T of that chunk at each of its positions."""

    name = "chunk_likelihood"

    def build(self, aligned: Aligned) -> list[Span]:
        payload, out = aligned.payload, []
        for c in aligned.chunks:
            if c.s1 > c.s0 and c.t1 <= len(payload.logprobs):
                lt = teacher_chunk_logprob(c, payload.tokens, payload.logprobs)
                out.append(Span(aligned.first + c.s0, aligned.first + c.s1, min(0.0, float(lt))))
        aligned.count("chunks", len(out))
        aligned.count("chunk_positions", sum(s.end - s.start for s in out))
        return out

    def collate(self, spans, rows, width, starts):
        if not any(spans):
            return {}
        chunk_ids = torch.full((rows, width), -1, dtype=torch.long)
        chunk_lt = torch.zeros((rows, width), dtype=torch.float32)
        n = 0
        for found, (row, first) in zip(spans, starts, strict=True):
            for s in found:
                chunk_ids[row, first + s.start : first + s.end] = n
                chunk_lt[row, first + s.start : first + s.end] = s.value
                n += 1
        return {"chunk_ids": chunk_ids, "chunk_lt": chunk_lt}
