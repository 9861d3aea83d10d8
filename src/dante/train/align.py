"""Aligning the teacher's tokens with the student's (stage 4, token-level distillation): the
same completion text cut two ways, mapped onto the chunks where both tokenizations have a
boundary. Pure functions; the loss uses the chunks that are one token on both sides.

    teacher: the bytes of each generated token (``dante.tokens.TokenLogprobs``), which join to the
             completion's UTF-8 (a multi-byte character may be split across tokens)
    student: the character span (start, end) of each token of the same text, from the student's
             fast tokenizer (``return_offsets_mapping``), relative to the text

A teacher boundary is the end of a token that falls between two characters; a student boundary
is the end of a token that does not overlap the next one (two byte-level tokens of one character
share its span, so no boundary lies between them; a gap, e.g. a leading space the tokenizer
trims from the offsets, belongs to the next token). Chunks run between consecutive common
boundaries, from 0 to the text's length; every non-empty token of either side lies in exactly
one chunk. Empty teacher tokens (end of sequence, special tokens) belong to no chunk.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Chunk:
    """Characters [start, end) of the text, teacher tokens [t0, t1), student tokens [s0, s1)."""

    start: int
    end: int
    t0: int
    t1: int
    s0: int
    s1: int

    @property
    def one_to_one(self) -> bool:
        return self.t1 - self.t0 == 1 and self.s1 - self.s0 == 1


def teacher_bounds(tokens: Sequence[bytes], text: str) -> list[int | None] | None:
    """The character offset where each teacher token ends (None: inside a character), or None
    when the tokens do not join to ``text``."""
    data = text.encode("utf-8")
    if b"".join(tokens) != data:
        return None
    char_at: dict[int, int] = {}
    pos = 0
    for i, ch in enumerate(text):
        char_at[pos] = i
        pos += len(ch.encode("utf-8"))
    char_at[pos] = len(text)
    ends, pos = [], 0
    for tok in tokens:
        pos += len(tok)
        ends.append(char_at.get(pos))
    return ends


def student_bounds(offsets: Sequence[tuple[int, int]], length: int) -> set[int]:
    """Character offsets where the student's tokenization has a boundary (0 and ``length`` included)."""
    bounds = {0, length}
    for (_, end), (next_start, _) in zip(offsets, offsets[1:], strict=False):
        if end <= next_start:
            bounds.add(end)
    return bounds


def align(teacher_tokens: Sequence[bytes], text: str, offsets: Sequence[tuple[int, int]]) -> list[Chunk] | None:
    """The aligned chunks of one completion, or None when the teacher's tokens do not join to
    ``text`` (the record is skipped and counted). ``offsets`` are the student tokens' character
    spans within ``text``, in order (zero-width and out-of-text tokens left out by the caller)."""
    ends = teacher_bounds(teacher_tokens, text)
    if ends is None:
        return None
    length = len(text)
    t_end = _resolved(ends, length)  # a token ending inside a character: the next boundary
    s_end = _resolved([e if e <= n else None for (_, e), (n, _) in zip(offsets, [*offsets[1:], (length, 0)])], length)
    common = sorted(
        {t_end[i] for i, tok in enumerate(teacher_tokens) if tok} & student_bounds(offsets, length) | {0, length}
    )
    members: dict[int, tuple[list[int], list[int]]] = {k: ([], []) for k in range(len(common) - 1)}
    for i, tok in enumerate(teacher_tokens):
        if tok:
            members[bisect.bisect_left(common, t_end[i]) - 1][0].append(i)
    for j, end in enumerate(s_end):
        members[max(0, bisect.bisect_left(common, end) - 1)][1].append(j)
    chunks = []
    for k, (ts, ss) in members.items():
        t0, t1 = (ts[0], ts[-1] + 1) if ts else (0, 0)
        s0, s1 = (ss[0], ss[-1] + 1) if ss else (0, 0)
        chunks.append(Chunk(common[k], common[k + 1], t0, t1, s0, s1))
    return chunks


def _resolved(ends: Sequence[int | None], length: int) -> list[int]:
    """Each end, or for None (no boundary after this token) the next one that is known."""
    out = [length] * len(ends)
    nxt = length
    for i in range(len(ends) - 1, -1, -1):
        if ends[i] is not None:
            nxt = ends[i]
        out[i] = nxt
    return out
