"""Token-level distillation targets (stage 3, ``train.loss.token_kd``): from a record's cached
teacher payload (``dante.cache.payload``) and the student's tokenization of the same
completion, the teacher's top-K distribution at every student position that is one token on
both sides (``dante.train.align``, on the bytes of both sides' tokens), in student token ids.

A teacher alternative is kept when its bytes are one token of the student's vocabulary; the
rest of the teacher's mass becomes the tail of ``losses.sparse_kd_sum``. Records the payload
cannot be used for (no payload, a chat template that changes the text, tokens of either side that
do not spell it, a student token running across the answer's start or end) train on text alone
and are counted by reason in the training manifest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from dante.cache.payload import decode
from dante.tokens import TokenBytes, TokenLogprobs
from dante.train.align import TEACHER_NOT_JOINING, NotAligned, align, window
from dante.train.objective.losses import teacher_chunk_logprob


class StudentVocab:
    """bytes -> token id of the student's vocabulary (special tokens left out)."""

    def __init__(self, tokenizer: Any) -> None:
        self.token_bytes = token_bytes = TokenBytes(tokenizer)
        self.ids: dict[bytes, int] = {}
        for i in range(len(tokenizer)):
            b = token_bytes(i)
            if b and b not in self.ids:
                self.ids[b] = i

    def get(self, b: bytes) -> int | None:
        return self.ids.get(b)


@dataclass
class KDStats:
    """What the payloads gave token-level distillation; stored in the training manifest."""

    records: int = 0
    with_payload: int = 0
    aligned: int = 0
    not_joining: int = 0  # teacher tokens that do not join to teacher_text: skipped
    template_changed: int = 0  # the student's chat template does not keep teacher_text verbatim: skipped
    unaligned: dict[str, int] = field(default_factory=dict)  # skipped, by dante.train.align's reason
    completion_tokens: int = 0  # student completion tokens of aligned records
    positions: int = 0  # of them, one to one with a teacher token: where the KL applies
    chunks: int = 0  # aligned chunks of the answers: where the chunk term applies (every chunk)
    chunk_positions: int = 0  # student tokens in those chunks
    mapped_mass: float = 0.0  # mean teacher probability on alternatives the student's vocabulary has

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["unaligned"] = dict(self.unaligned)
        out["one_to_one_share"] = self.positions / self.completion_tokens if self.completion_tokens else None
        out["mapped_mass"] = self.mapped_mass / self.positions if self.positions else None
        out["chunk_share"] = self.chunk_positions / self.completion_tokens if self.completion_tokens else None
        return out


@dataclass
class KDBuild:
    """What ``build_examples`` builds for distillation: the student's vocabulary, the stats it
    counts into, and which targets a term reads (``token``: the one-to-one top-K, for
    ``train.loss.token_kd``; ``chunk``: every chunk's likelihood, for ``train.loss.chunk_kd``).
    Both are counted in the stats either way; only the ones asked for travel with the example
    (and are collated into tensors)."""

    vocab: StudentVocab
    stats: KDStats
    token: bool = True
    chunk: bool = True


@dataclass
class KDTargets:
    """Per student completion position j (0-based in the completion): mapped ids and probs; and
    every aligned chunk as (first student position, end position, the teacher's log-likelihood of
    the chunk: the sum of its cached token logprobs)."""

    positions: list[int]
    ids: list[list[int]]
    probs: list[list[float]]
    chunks: list[tuple[int, int, float]] = field(default_factory=list)


def kd_targets(rec: Any, student: list[bytes], vocab: StudentVocab, stats: KDStats) -> KDTargets | None:
    """The distillation targets of one record, or None (counted in ``stats``). ``student``: the
    bytes of each student completion token (its reasoning first, if any; special tokens b"").
    The teacher's text (its answer) is found as the last place the completion spells it.
    Positions are indices into ``student``."""
    stats.records += 1
    if rec.token_logprobs is None:
        return None
    stats.with_payload += 1
    text = rec.teacher_text.encode("utf-8")
    answer_at = b"".join(student).rfind(text)
    if answer_at < 0:
        stats.template_changed += 1
        return None
    payload = answer_payload(decode(rec.token_logprobs), getattr(rec, "reasoning_tokens", None))
    try:
        j0, j1 = window(student, answer_at, len(text))
        chunks = align(payload.tokens, student[j0:j1], text)
    except NotAligned as exc:
        stats.unaligned[exc.reason] = stats.unaligned.get(exc.reason, 0) + 1
        stats.not_joining += exc.reason == TEACHER_NOT_JOINING
        return None
    stats.aligned += 1
    stats.completion_tokens += len(student)
    found = one_to_one_targets(payload.top, chunks, vocab)
    stats.positions += len(found.positions)
    stats.mapped_mass += sum(min(1.0, sum(p)) for p in found.probs)
    likelihoods = chunk_likelihoods(payload, chunks)
    stats.chunks += len(likelihoods)
    stats.chunk_positions += sum(s1 - s0 for s0, s1, _ in likelihoods)
    return KDTargets(
        [j0 + j for j in found.positions],
        found.ids,
        found.probs,
        [(j0 + s0, j0 + s1, lt) for s0, s1, lt in likelihoods],
    )


def chunk_likelihoods(payload: TokenLogprobs, chunks) -> list[tuple[int, int, float]]:
    """(s0, s1, l_T) of every chunk with student tokens: l_T the sum of the cached logprobs of the
    chunk's non-empty teacher tokens (``losses.teacher_chunk_logprob``, as on-policy sums them)."""
    out = []
    for c in chunks:
        if c.s1 > c.s0 and c.t1 <= len(payload.logprobs):
            lt = teacher_chunk_logprob(c, payload.tokens, payload.logprobs)
            out.append((c.s0, c.s1, min(0.0, float(lt))))
    return out


def answer_payload(payload: TokenLogprobs, reasoning_tokens: int | None) -> TokenLogprobs:
    """The answer's part of a thinking teacher's payload (its tokens after the reasoning's, less
    the whitespace before the answer: whitespace-only tokens, and the leading whitespace of a token
    that holds some of it and then the answer's start); the whole payload without reasoning."""
    if not reasoning_tokens:
        return payload
    start = reasoning_tokens
    while start < len(payload.tokens) and not payload.tokens[start].strip():
        start += 1
    tokens = payload.tokens[start:]
    if tokens and tokens[0][:1].isspace():
        tokens = [tokens[0].lstrip(b" \t\r\n"), *tokens[1:]]
    return TokenLogprobs(tokens, payload.logprobs[start:], payload.top[start:])


def one_to_one_targets(top: list[list[tuple[bytes, float]]], chunks, vocab: StudentVocab) -> KDTargets:
    """The teacher's top-K at every chunk that is one token on both sides, as student ids and
    probabilities (alternatives the student's vocabulary does not have as one token are left to
    the tail); positions are the student token indices of those chunks."""
    out = KDTargets([], [], [])
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
        if not ids:
            continue
        out.positions.append(c.s0)
        out.ids.append(ids)
        out.probs.append(probs)
    return out
