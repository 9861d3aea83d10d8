"""Exact and near-duplicate prompts: planted copies are found, distinct prompts are kept."""

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dante.prompts.dedup import exact_duplicates, jaccard, lsh_params, near_duplicates, normalise, shingles, words


def test_normalise_and_words():
    assert normalise("  Hello\u00a0 WORLD\n") == "hello world"  # NFKC turns the no-break space into a space
    assert normalise("ﬁne") == "fine"  # NFKC ligature
    assert words("State: 57 + 8 = ?") == ["state", "57", "+", "8", "="]
    assert words("57 - 8") != words("57 + 8")  # operators are words: different questions stay different
    assert words("Hello, world!") == words("hello world")  # prose punctuation is not


def test_shingles_and_jaccard_by_hand():
    assert shingles(["a", "b", "c", "d"], 2) == {"a b", "b c", "c d"}
    assert shingles(["a", "b"], 5) == {"a b"}  # shorter than a shingle: one shingle, itself
    assert shingles([], 3) == set()
    assert jaccard({"a b", "b c", "c d"}, {"b c", "c d", "d e"}) == pytest.approx(2 / 4)


def test_lsh_params_by_hand():
    # t = 0.8, 128 permutations: r = 8 gives 1 - (1 - 0.8^8)^16 = 0.947 < 0.98; r = 7 gives
    # 1 - (1 - 0.8^7)^18 = 0.985
    assert lsh_params(0.8, 128) == (18, 7)
    assert lsh_params(1.0, 128) == (1, 128)  # identical sets always collide
    b, r = lsh_params(0.5, 64, recall=0.9)
    assert 1 - (1 - 0.5**r) ** b >= 0.9 > 1 - (1 - 0.5 ** (r + 1)) ** (64 // (r + 1))


def test_exact_duplicates_keep_the_first():
    texts = ["What is 2+2?", "what is  2+2?", "Another one", "WHAT IS 2+2?"]
    found = exact_duplicates(texts)
    assert [(d.index, d.of) for d in found] == [(1, 0), (3, 0)]


def _paragraphs(n, seed=0, length=60):
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(3000)]
    return [" ".join(rng.choices(vocab, k=length)) for _ in range(n)]


def test_near_duplicates_planted_and_no_false_positives():
    base = _paragraphs(300)
    rng = random.Random(1)
    planted = {}
    texts = list(base)
    for _ in range(20):  # one word changed near the end of a 60-word paragraph: Jaccard ~0.9
        src = rng.randrange(300)
        ws = base[src].split()
        ws[-3] = "edited"
        planted[len(texts)] = src
        texts.append(" ".join(ws))
    found = near_duplicates(texts, shingle=5, threshold=0.8)
    assert {d.index: d.of for d in found} == planted  # every planted copy, nothing else
    assert all(d.kind == "near" and 0.8 <= d.similarity < 1.0 for d in found)


def test_near_duplicates_respect_the_threshold():
    a = " ".join(f"w{i}" for i in range(40))
    b = " ".join(f"w{i}" for i in range(30)) + " " + " ".join(f"x{i}" for i in range(10))  # J = 26/46
    assert near_duplicates([a, b], shingle=5, threshold=0.8) == []
    assert near_duplicates([a, b], shingle=5, threshold=0.57) == []  # just above J: confirmed exactly
    low = near_duplicates([a, b], shingle=5, threshold=0.5)
    assert [(d.index, d.of) for d in low] == [(1, 0)]
    assert low[0].similarity == pytest.approx(26 / 46, abs=1e-4)


def test_skipped_items_are_neither_checked_nor_indexed():
    texts = _paragraphs(2) * 2  # 2 and 3 repeat 0 and 1
    assert [(d.index, d.of) for d in near_duplicates(texts)] == [(2, 0), (3, 1)]
    assert near_duplicates(texts, skip={0, 1}) == []  # with 0 and 1 skipped, 2 and 3 are the first


@given(st.lists(st.text(min_size=1, max_size=30), max_size=30))
def test_exact_duplicates_leave_one_of_each(texts):
    kept = [t for i, t in enumerate(texts) if i not in {d.index for d in exact_duplicates(texts)}]
    assert sorted({normalise(t) for t in kept}) == sorted({normalise(t) for t in texts})
    assert len({normalise(t) for t in kept}) == len(kept)
