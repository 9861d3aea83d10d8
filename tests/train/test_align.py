"""Teacher/student token alignment on hand-made cases and a round-trip property."""

from hypothesis import given, settings
from hypothesis import strategies as st

from dante.train.align import Chunk, align, student_bounds, teacher_bounds


def texts(text, chunks):
    return [text[c.start : c.end] for c in chunks]


def test_multibyte_character_split_across_byte_level_tokens():
    text = "é😀"
    teacher = [b"\xc3", b"\xa9", b"\xf0\x9f\x98", b"\x80"]  # every token a piece of a character
    student = [(0, 1), (1, 2)]
    assert teacher_bounds(teacher, text) == [None, 1, None, 2]
    chunks = align(teacher, text, student)
    assert chunks == [Chunk(0, 1, 0, 2, 0, 1), Chunk(1, 2, 2, 4, 1, 2)]
    # the student splits the emoji instead: both pieces share its span, no boundary between them
    assert align([b"\xc3\xa9", b"\xf0\x9f\x98\x80"], text, [(0, 1), (1, 2), (1, 2)]) == [
        Chunk(0, 1, 0, 1, 0, 1),
        Chunk(1, 2, 1, 2, 1, 3),
    ]


def test_leading_space_merges_and_trimmed_offsets():
    text = "is 65"
    teacher = [b"is", b" ", b"65"]
    merged = [(0, 2), (2, 5)]  # " 65" one token
    assert texts(text, align(teacher, text, merged)) == ["is", " 65"]
    trimmed = [(0, 2), (3, 5)]  # offsets that leave out the leading space: the gap joins the next token
    assert align(teacher, text, trimmed) == align(teacher, text, merged)
    assert [c.one_to_one for c in align(teacher, text, merged)] == [True, False]


def test_digits_split_differently():
    text = "1234"
    teacher = [b"1", b"2", b"3", b"4"]
    student = [(0, 2), (2, 3), (3, 4)]  # "12", "3", "4"
    chunks = align(teacher, text, student)
    assert texts(text, chunks) == ["12", "3", "4"]
    assert [(c.t0, c.t1, c.s0, c.s1) for c in chunks] == [(0, 2, 0, 1), (2, 3, 1, 2), (3, 4, 2, 3)]
    assert [c.one_to_one for c in chunks] == [False, True, True]


def test_eos_and_special_tokens_belong_to_no_chunk():
    text = "ok"
    chunks = align([b"", b"ok", b""], text, [(0, 2)])
    assert chunks == [Chunk(0, 2, 1, 2, 0, 1)] and chunks[0].one_to_one


def test_crlf_and_a_boundary_inside_a_token():
    text = "a\r\nb"
    teacher = [b"a\r", b"\nb"]  # the teacher cuts inside \r\n, the student does not
    student = [(0, 1), (1, 3), (3, 4)]
    assert texts(text, align(teacher, text, student)) == ["a\r\nb"]
    assert align([b"a", b"\r\n", b"b"], text, student) == [
        Chunk(0, 1, 0, 1, 0, 1),
        Chunk(1, 3, 1, 2, 1, 2),
        Chunk(3, 4, 2, 3, 2, 3),
    ]


def test_teacher_tokens_that_do_not_join_to_the_text_are_refused():
    assert align([b"Hello", b" wrld"], "Hello world", [(0, 5), (5, 11)]) is None


def test_student_bounds():
    assert student_bounds([(0, 2), (2, 3), (2, 3), (4, 6)], 6) == {0, 2, 3, 6}


@st.composite
def tokenizations(draw):
    text = draw(st.text(alphabet=st.sampled_from(list("ab 1\r\né😀x")), min_size=1, max_size=25))
    data = text.encode("utf-8")
    byte_cuts = sorted(draw(st.sets(st.integers(1, max(1, len(data) - 1)), max_size=len(data))))
    cuts = [0, *[c for c in byte_cuts if c < len(data)], len(data)]
    teacher = [data[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]
    if draw(st.booleans()):
        teacher = [b"", *teacher, b""]
    char_cuts = sorted(draw(st.sets(st.integers(1, max(1, len(text) - 1)), max_size=len(text))))
    points = [0, *[c for c in char_cuts if c < len(text)], len(text)]
    student = [(a, b) for a, b in zip(points, points[1:], strict=False)]
    return text, teacher, student


@settings(max_examples=200, deadline=None)
@given(tokenizations())
def test_chunks_partition_the_text_and_both_tokenizations(case):
    text, teacher, student = case
    chunks = align(teacher, text, student)
    assert chunks is not None and chunks[0].start == 0 and chunks[-1].end == len(text)
    assert all(a.end == b.start for a, b in zip(chunks, chunks[1:], strict=False))
    for c in chunks:
        piece = text[c.start : c.end]
        assert b"".join(teacher[c.t0 : c.t1]) == piece.encode("utf-8")  # the chunk's teacher tokens are its bytes
        assert (student[c.s0][0], student[c.s1 - 1][1]) == (c.start, c.end)  # and its student tokens its characters
    nonempty = [i for i, t in enumerate(teacher) if t]
    assert sorted(i for c in chunks for i in range(c.t0, c.t1) if teacher[i]) == nonempty
    assert [j for c in chunks for j in range(c.s0, c.s1)] == list(range(len(student)))
    # chunk boundaries are exactly the common cut points
    t_cuts = {e for e in teacher_bounds(teacher, text) if e is not None}
    assert {c.end for c in chunks} == (t_cuts & {e for _, e in student}) | {len(text)}
