"""Teacher/student token alignment on the bytes of both sides (dante.train.align): hand-made cases,
the two bugs of the offsets-based alignment it replaced as regression tests, and properties over
adversarial text with cuts at any byte on both sides."""

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dante.train.align import (
    STRADDLES_EDGE,
    STUDENT_NOT_JOINING,
    TEACHER_NOT_JOINING,
    Chunk,
    NotAligned,
    align,
    char_boundary,
    window,
)
from dante.train.objective.losses import chunk_log_ratios


def pieces(data: bytes, chunks, side: str, tokens) -> list[bytes]:
    """Each chunk's bytes as ``side``'s tokens spell them."""
    lo, hi = ("t0", "t1") if side == "t" else ("s0", "s1")
    return [b"".join(tokens[getattr(c, lo) : getattr(c, hi)]) for c in chunks]


def test_a_partial_character_is_one_chunk_with_every_token_that_touches_it():
    # regression: a byte-level student token holding 中 and the first byte of 文 (student
    # [e4 b8 ad e6][96 87], teacher [中][文]) made two "one-to-one" chunks of different bytes
    text = "中文".encode()
    teacher = [b"\xe4\xb8\xad", b"\xe6\x96\x87"]
    student = [b"\xe4\xb8\xad\xe6", b"\x96\x87"]
    chunks = align(teacher, student, text)
    assert chunks == [Chunk(0, 6, 0, 2, 0, 2)]
    assert not chunks[0].one_to_one
    # both sides cutting inside the same character still make no boundary there
    assert align([b"\xe4\xb8", b"\xad"], [b"\xe4\xb8", b"\xad"]) == [Chunk(0, 3, 0, 2, 0, 2)]


def test_whitespace_is_never_paired_across_different_tokens():
    # regression: offsets that trim whitespace (or give whitespace tokens empty spans) paired a
    # student "\n   " with a teacher "\n" and " return" with "    return", both "one to one"
    text = b"\n    return x"
    teacher = [b"\n", b"    return", b" x"]
    student = [b"\n   ", b" return", b" x"]
    chunks = align(teacher, student, text)
    assert [text[c.start : c.end] for c in chunks] == [b"\n    return", b" x"]
    assert [c.one_to_one for c in chunks] == [False, True]
    for c in chunks:
        if c.one_to_one:
            assert teacher[c.t0] == student[c.s0]


def test_multibyte_character_split_across_byte_level_tokens():
    text = "é😀".encode()
    teacher = [b"\xc3", b"\xa9", b"\xf0\x9f\x98", b"\x80"]  # every token a piece of a character
    student = [b"\xc3\xa9", b"\xf0\x9f\x98\x80"]
    assert align(teacher, student, text) == [Chunk(0, 2, 0, 2, 0, 1), Chunk(2, 6, 2, 4, 1, 2)]


def test_leading_space_merges():
    teacher = [b"is", b" ", b"65"]
    student = [b"is", b" 65"]
    chunks = align(teacher, student)
    assert [(c.start, c.end) for c in chunks] == [(0, 2), (2, 5)]
    assert [c.one_to_one for c in chunks] == [True, False]


def test_digits_split_differently():
    chunks = align([b"1", b"2", b"3", b"4"], [b"12", b"3", b"4"])
    assert [(c.t0, c.t1, c.s0, c.s1) for c in chunks] == [(0, 2, 0, 1), (2, 3, 1, 2), (3, 4, 2, 3)]
    assert [c.one_to_one for c in chunks] == [False, True, True]


def test_eos_and_special_tokens_belong_to_no_chunk():
    chunks = align([b"", b"ok", b""], [b"ok", b""], b"ok")
    assert chunks == [Chunk(0, 2, 1, 2, 0, 1)] and chunks[0].one_to_one
    assert align([b""], [b""], b"") == []


def test_crlf_and_a_boundary_inside_a_token():
    assert [c.end for c in align([b"a\r", b"\nb"], [b"a", b"\r\n", b"b"])] == [4]
    assert align([b"a", b"\r\n", b"b"], [b"a", b"\r\n", b"b"]) == [
        Chunk(0, 1, 0, 1, 0, 1),
        Chunk(1, 3, 1, 2, 1, 2),
        Chunk(3, 4, 2, 3, 2, 3),
    ]


def test_sides_that_do_not_spell_the_text_are_refused_by_reason():
    with pytest.raises(NotAligned) as exc:
        align([b"Hello", b" wrld"], [b"Hello", b" world"], b"Hello world")
    assert exc.value.reason == TEACHER_NOT_JOINING
    with pytest.raises(NotAligned) as exc:
        align([b"Hello", b" world"], [b"Hello", b" wrld"], b"Hello world")
    assert exc.value.reason == STUDENT_NOT_JOINING


def test_window_finds_the_answer_tokens_or_refuses_a_straddling_token():
    student = [b"<think>", b"\n", b"x", b"\n", b"</think>", b"\n\n", b"The", b" answer", b"", b"\n"]
    at = b"".join(student).index(b"The")
    assert window(student, at, len(b"The answer")) == (6, 8)
    assert window([b"ab", b"", b"cd"], 0, 4) == (0, 3)
    with pytest.raises(NotAligned) as exc:
        window([b"x\n\nThe", b" answer"], 3, len(b"The answer"))
    assert exc.value.reason == STRADDLES_EDGE
    with pytest.raises(NotAligned):
        window([b"The", b" answer."], 0, len(b"The answer"))


def test_char_boundary():
    data = "aé".encode()
    assert [char_boundary(data, i) for i in range(len(data) + 1)] == [True, True, False, True]


# -- properties: adversarial text, cuts at any byte on both sides -----------------------------------

ALPHABET = list("ab x1 9\t\n\r") + ["    ", "\n  ", "中", "文", "é", "e\u0301", "😀", "👩\u200d💻", "<|im_end|>", "ß"]


@st.composite
def two_tokenizations(draw):
    text = "".join(draw(st.lists(st.sampled_from(ALPHABET), min_size=1, max_size=20)))
    data = text.encode("utf-8")

    def cut() -> list[bytes]:
        points = sorted(draw(st.sets(st.integers(1, max(1, len(data) - 1)), max_size=len(data))))
        bounds = [0, *[p for p in points if p < len(data)], len(data)]
        tokens = [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
        if draw(st.booleans()):  # special tokens (empty) at the edges and inside
            at = draw(st.integers(0, len(tokens)))
            tokens = [b"", *tokens[:at], b"", *tokens[at:], b""]
        return tokens

    return data, cut(), cut()


@settings(max_examples=300, deadline=None)
@given(two_tokenizations(), st.integers(0, 2**31 - 1))
def test_chunks_partition_the_bytes_of_both_sides_and_are_byte_equal(case, seed):
    data, teacher, student = case
    chunks = align(teacher, student, data)
    check_chunks(data, teacher, student, chunks)
    # the chunk log-ratios still add up to the sequence log-ratio
    rng = random.Random(seed)
    lp_t = [-rng.uniform(0, 5) if t else 0.0 for t in teacher]
    lp_s = [-rng.uniform(0, 5) for _ in student]
    in_chunks = {j for c in chunks for j in range(c.s0, c.s1)}
    r = chunk_log_ratios(chunks, teacher, lp_t, lp_s)
    assert math.isclose(sum(r), sum(lp_t) - sum(lp_s[j] for j in in_chunks), abs_tol=1e-9)


def check_chunks(data: bytes, teacher: list[bytes], student: list[bytes], chunks: list[Chunk]) -> None:
    """The invariants every alignment keeps (also used by the real-tokenizer tests)."""
    if not data:
        assert chunks == []
        return
    assert chunks[0].start == 0 and chunks[-1].end == len(data)
    assert all(a.end == b.start for a, b in zip(chunks, chunks[1:], strict=False))
    assert b"".join(pieces(data, chunks, "t", teacher)) == data == b"".join(pieces(data, chunks, "s", student))
    for c in chunks:
        assert b"".join(teacher[c.t0 : c.t1]) == data[c.start : c.end] == b"".join(student[c.s0 : c.s1])
        assert char_boundary(data, c.start) and char_boundary(data, c.end)
        if c.one_to_one:
            assert teacher[c.t0] == student[c.s0] and teacher[c.t0]
    # every non-empty token of either side is in exactly one chunk
    t_in = [i for c in chunks for i in range(c.t0, c.t1) if teacher[i]]
    s_in = [j for c in chunks for j in range(c.s0, c.s1) if student[j]]
    assert t_in == [i for i, t in enumerate(teacher) if t]
    assert s_in == [j for j, s in enumerate(student) if s]
    # and the chunk boundaries are exactly the common ends between two characters
    ends = lambda toks: {sum(map(len, toks[: i + 1])) for i, t in enumerate(toks) if t}  # noqa: E731
    common = {e for e in ends(teacher) & ends(student) if char_boundary(data, e)} | {len(data)}
    assert {c.end for c in chunks} == common


def test_character_offsets_put_a_partial_character_in_the_wrong_chunk():
    """The bug the properties catch: aligning on character offsets (the old ``_char_offsets`` of
    on-policy) calls a chunk one to one whose two tokens are not the same bytes."""

    def char_offsets(tokens: list[bytes]) -> list[tuple[int, int]]:
        spans, data = [], b""
        for piece in tokens:
            start = len(data.decode("utf-8", errors="ignore"))
            data += piece
            spans.append((start, max(len(data.decode("utf-8", errors="ignore")), start + 1)))
        return spans

    student = [b"\xe4\xb8\xad\xe6", b"\x96\x87"]
    assert char_offsets(student) == [(0, 1), (1, 2)]  # two "characters" of one token each: wrong
    assert not any(c.one_to_one for c in align([b"\xe4\xb8\xad", b"\xe6\x96\x87"], student))
