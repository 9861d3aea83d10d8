"""A record's teacher payload aligned with the student's tokens, for the targets the terms read
(stage 4, ``objective.targets``): the record's cached teacher payload (``dante.cache.payload``)
and the student's tokenization of the same completion, aligned chunk by chunk
(``dante.train.align``, on the bytes of both sides' tokens); each target (the teacher's top-K at
the positions one token on both sides, every chunk's likelihood, a plugin's own) is built from that
one alignment. Records the payload cannot be used for (no payload, a chat template that changes
the text, tokens of either side that do not spell it, a student token running across the
answer's start or end) train on text alone and are counted by reason in the training manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dante.cache.payload import decode
from dante.tokens import TokenBytes, TokenLogprobs
from dante.train.align import TEACHER_NOT_JOINING, NotAligned, align, window
from dante.train.objective.targets import Aligned, Span, Target


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
    """What the payloads gave the terms' targets; stored in the training manifest (``token_kd``).
    ``counts``: what each target found (``Aligned.count``: positions and mapped_mass for the top-K,
    chunks and chunk_positions for the chunk likelihoods, ...)."""

    records: int = 0
    with_payload: int = 0
    aligned: int = 0
    not_joining: int = 0  # teacher tokens that do not join to teacher_text: skipped
    template_changed: int = 0  # the student's chat template does not keep teacher_text verbatim: skipped
    unaligned: dict[str, int] = field(default_factory=dict)  # skipped, by dante.train.align's reason
    completion_tokens: int = 0  # student completion tokens of aligned records
    counts: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "counts"}
        out["unaligned"] = dict(self.unaligned)
        out.update(self.counts)
        n = self.completion_tokens
        if "positions" in self.counts:  # the top-K's: where the KL applies, and the mass the student can hold
            positions = self.counts["positions"]
            out["one_to_one_share"] = positions / n if n else None
            out["mapped_mass"] = self.counts.get("mapped_mass", 0.0) / positions if positions else None
        if "chunk_positions" in self.counts:  # the chunk likelihoods': every chunk of the answers
            out["chunk_share"] = self.counts["chunk_positions"] / n if n else None
        return out


@dataclass
class TargetBuild:
    """What ``build_examples`` builds for the terms: the student's vocabulary, the stats it counts
    into, and the targets the terms read (``objective.targets.targets_of``)."""

    vocab: StudentVocab
    stats: KDStats
    targets: list[Target]


def align_record(rec: Any, student: list[bytes], vocab: Any, stats: KDStats) -> Aligned | None:
    """The record's teacher answer aligned with the student's tokens, or None (counted in
    ``stats``). ``student``: the bytes of each student completion token (its reasoning first, if
    any; special tokens b""). The teacher's text (its answer) is found as the last place the
    completion spells it."""
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
    return Aligned(payload, chunks, j0, vocab, stats.counts)


def build_targets(rec: Any, student: list[bytes], build: TargetBuild) -> dict[str, list[Span]] | None:
    """Each of ``build.targets`` of one record, by name, as spans of student completion indices;
    None when the record cannot be aligned (counted)."""
    aligned = align_record(rec, student, build.vocab, build.stats)
    if aligned is None:
        return None
    return {t.name: t.build(aligned) for t in build.targets}


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
