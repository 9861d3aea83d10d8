"""Aligning the teacher's tokens with the student's (stage 4, token-level and on-policy
distillation): the same text cut two ways, mapped onto the chunks where both tokenizations have a
boundary. Pure functions, one implementation for cached records and for the student's own samples.

Both sides are given as the exact **bytes** of each token (the teacher's from its payload,
``dante.tokens.TokenLogprobs``; the student's from ``dante.tokens.TokenBytes``), which must join to
the same bytes. Offsets from a tokenizer are never used: they trim whitespace and give special or
whitespace tokens empty spans, which paired different tokens (a student ``"\\n   "`` with a teacher
``"\\n"``), and a byte-level token holding a character and the first byte of the next ended its
span at the last whole character (student ``[e4 b8 ad e6][96 87]`` against teacher ``[中][文]`` made
two "one-to-one" chunks of different bytes).

A boundary is a byte offset where a non-empty token of that side ends; a chunk boundary is one
both sides have **and** that falls between two UTF-8 characters, so a partial character is in one
chunk with every token that touches it. Chunks run between consecutive chunk boundaries, from 0 to
the text's length; every non-empty token of either side lies in exactly one chunk, and a chunk's
tokens join to the same bytes on both sides (checked). Empty tokens (end of sequence, special
tokens) belong to no chunk.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

# Why a text could not be aligned (counted by the callers, never trained on wrongly).
TEACHER_NOT_JOINING = "teacher_not_joining"  # the teacher's tokens do not spell the text
STUDENT_NOT_JOINING = "student_not_joining"  # the student's tokens do not spell the text
STRADDLES_EDGE = "student_token_straddles_edge"  # a student token runs across the aligned text's start or end


class NotAligned(ValueError):
    """Two tokenizations that cannot be aligned; ``reason`` is one of the constants above."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class Chunk:
    """Bytes [start, end) of the text, teacher tokens [t0, t1), student tokens [s0, s1)."""

    start: int
    end: int
    t0: int
    t1: int
    s0: int
    s1: int

    @property
    def one_to_one(self) -> bool:
        return self.t1 - self.t0 == 1 and self.s1 - self.s0 == 1


def token_ends(tokens: Sequence[bytes]) -> list[int]:
    """The byte offset where each token ends (an empty token ends where the previous one did)."""
    ends, pos = [], 0
    for tok in tokens:
        pos += len(tok)
        ends.append(pos)
    return ends


def char_boundary(data: bytes, pos: int) -> bool:
    """Whether byte offset ``pos`` of ``data`` lies between two UTF-8 characters (not before a
    continuation byte). Invalid UTF-8 is cut anywhere its bytes are not continuation bytes."""
    return pos <= 0 or pos >= len(data) or (data[pos] & 0xC0) != 0x80


def align(teacher: Sequence[bytes], student: Sequence[bytes], text: bytes | None = None) -> list[Chunk]:
    """The aligned chunks of one text cut into ``teacher`` and ``student`` tokens (bytes each).

    ``text`` (the text's UTF-8, when known) is what both must spell; without it the teacher's
    tokens define it. Raises ``NotAligned`` (reason ``teacher_not_joining`` or
    ``student_not_joining``) when a side does not spell it."""
    data = b"".join(teacher)
    if text is not None and data != text:
        raise NotAligned(TEACHER_NOT_JOINING, f"{len(data)} bytes against the text's {len(text)}")
    if b"".join(student) != data:
        raise NotAligned(STUDENT_NOT_JOINING, f"{sum(map(len, student))} bytes against {len(data)}")
    if not data:
        return []
    t_end, s_end = token_ends(teacher), token_ends(student)
    both = {e for e, tok in zip(t_end, teacher, strict=True) if tok} & {
        e for e, tok in zip(s_end, student, strict=True) if tok
    }
    common = sorted({e for e in both if char_boundary(data, e)} | {0, len(data)})
    t_members = _members(teacher, t_end, common)
    s_members = _members(student, s_end, common)
    chunks = []
    for k in range(len(common) - 1):
        ts, ss = t_members[k], s_members[k]
        t0, t1 = (ts[0], ts[-1] + 1) if ts else (0, 0)
        s0, s1 = (ss[0], ss[-1] + 1) if ss else (0, 0)
        chunk = Chunk(common[k], common[k + 1], t0, t1, s0, s1)
        if b"".join(teacher[t0:t1]) != b"".join(student[s0:s1]):  # cannot happen: the invariant, checked
            raise AssertionError(f"chunk {chunk} is not the same bytes on both sides")
        chunks.append(chunk)
    return chunks


def _members(tokens: Sequence[bytes], ends: Sequence[int], common: Sequence[int]) -> list[list[int]]:
    """For each chunk k (bytes common[k]..common[k+1]), the indices of the non-empty tokens in it:
    a token belongs to the chunk its last byte falls in."""
    members: list[list[int]] = [[] for _ in range(len(common) - 1)]
    for i, (tok, end) in enumerate(zip(tokens, ends, strict=True)):
        if tok:
            members[bisect.bisect_left(common, end) - 1].append(i)
    return members


def window(student: Sequence[bytes], start: int, length: int) -> tuple[int, int]:
    """The student tokens [j0, j1) that spell bytes [start, start + length) of their joined text
    (empty tokens at the edges left out). Raises ``NotAligned`` (``student_token_straddles_edge``)
    when a token runs across either edge, so that the span has no student boundary there."""
    stop, pos, inside = start + length, 0, []
    for j, tok in enumerate(student):
        begins, pos = pos, pos + len(tok)
        if not tok or pos <= start or begins >= stop:
            continue
        if begins < start or pos > stop:
            edge = start if begins < start else stop
            raise NotAligned(STRADDLES_EDGE, f"student token {j} (bytes {begins}-{pos}) runs across byte {edge}")
        inside.append(j)
    return (inside[0], inside[-1] + 1) if inside else (0, 0)
