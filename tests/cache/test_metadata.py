"""Cache metadata: entropy from top-k logprobs, self-consistency, difficulty (hand-computed values)."""

import math

import pytest

from dante.cache.metadata import (
    difficulty_score,
    extract_answer,
    normalise_number,
    output_entropy,
    self_consistency,
    text_similarity,
    topk_entropy,
)

LN2 = math.log(2)


def test_topk_entropy_counts_the_tail_as_one_outcome():
    # p = 0.5, 0.25; tail r = 0.25: H = 0.5 ln2 + 0.25 ln4 + 0.25 ln4 = 1.5 ln2
    assert topk_entropy([math.log(0.5), math.log(0.25)]) == pytest.approx(1.5 * LN2, abs=1e-12)


def test_topk_entropy_edge_cases():
    assert topk_entropy([0.0]) == 0.0  # certain token
    assert topk_entropy([0.0, -math.inf]) == 0.0  # a zero-probability entry adds nothing
    # uniform over 4 outcomes seen through its top 3: the bound log(k + 1) is reached
    assert topk_entropy([math.log(0.25)] * 3) == pytest.approx(math.log(4), abs=1e-12)
    # rounding makes sum p > 1: the tail is clamped to 0, never NaN
    h = topk_entropy([math.log(0.5000001)] * 2)
    assert h == pytest.approx(LN2, abs=1e-6) and not math.isnan(h)
    assert topk_entropy([]) == 0.0


def test_output_entropy_is_the_mean_over_tokens():
    assert output_entropy([1.0, 2.0]) == 1.5
    assert output_entropy([[math.log(0.5), math.log(0.25)], [0.0]]) == pytest.approx(0.75 * LN2)
    assert output_entropy([]) is None and output_entropy(None) is None


@pytest.mark.parametrize(
    "text, answer",
    [
        ("so she sold 48 + 24 = 72 clips.\n#### 72", "72"),
        ("#### 1,000", "1000"),
        ("The total is $1,234.50 in all", "1234.5"),
        ("We get 5.0", "5"),
        ("x = -3", "-3"),
        ("The answer is (B).", "B"),
        ("Answer: C", "C"),
        ("thus \\boxed{12}", "12"),
        ("no digits here", None),
    ],
)
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer


def test_normalise_number():
    assert (
        normalise_number("1,000") == "1000" and normalise_number("5.0") == "5" and normalise_number("-0.50") == "-0.5"
    )
    assert normalise_number("abc") is None


def test_self_consistency_answer_mode():
    # answers 1000, 1000, 999 -> majority 1000 agreed by 2 of 3
    assert self_consistency(["The answer is 1,000", "so 1000.0", "#### 999"]) == pytest.approx(2 / 3)
    assert self_consistency(["The answer is (B)", "Answer: B", "answer is (C)", "The answer is B."]) == 0.75
    # a sample without an answer disagrees
    assert self_consistency(["#### 4", "#### 4", "I don't know"]) == pytest.approx(2 / 3)
    # against a reference answer instead of the majority
    assert self_consistency(["#### 4", "#### 5", "#### 5"], reference="#### 4") == pytest.approx(1 / 3)


def test_self_consistency_text_mode_and_empty():
    # SequenceMatcher("abcd", "abce"): 3 matching chars, 2*3/8 = 0.75
    assert text_similarity("abcd", "abce") == 0.75
    assert self_consistency(["abcd", "abce"]) == 0.75
    # pairs: (abcd,abce)=.75, (abcd,wxyz)=0, (abce,wxyz)=0 -> 0.25
    assert self_consistency(["abcd", "abce", "wxyz"]) == pytest.approx(0.25)
    assert self_consistency(["hello"]) == 1.0
    assert self_consistency([]) is None


def test_difficulty_score():
    assert difficulty_score(1.5, 0.5) == pytest.approx(0.5)  # 0.5*(1.5/3) + 0.5*(1-0.5)
    assert difficulty_score(6.0, 1.0) == pytest.approx(0.5)  # entropy term saturates at 1
    assert difficulty_score(0.0, 1.0) == 0.0 and difficulty_score(9.0, 0.0) == 1.0
    assert difficulty_score(1.5, None) == pytest.approx(0.5)
    assert difficulty_score(None, 0.25) == pytest.approx(0.75)
    assert difficulty_score(1.0, None, entropy_scale=2.0) == pytest.approx(0.5)
    assert difficulty_score(None, None) is None
