"""Mixture allocation by hand and by property: counts add up, shares match weights, picks nest."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dante.errors import DataError
from dante.prompts.mixture import allocate, pick


def test_allocate_by_hand():
    assert allocate([1, 1], [100, 100], 10) == [5, 5]
    assert allocate([2, 1], [100, 100], 10) == [7, 3]  # 6.67 / 3.33: the larger remainder gets the extra one
    assert allocate([1, 1, 1], [100, 100, 100], 10) == [4, 3, 3]  # ties: the earlier source
    assert allocate([3, 1], [30, 100], None) == [30, 10]  # without a size: the most that keep 3:1
    assert allocate([1, 0], [5, 100], None) == [5, 0]  # a zero weight gives nothing


def test_a_source_short_of_its_share_is_a_located_error():
    with pytest.raises(DataError) as err:
        allocate([1, 1], [3, 100], 10)
    assert "prompts.sources[0].weight" in err.value.render()
    assert "at most 6" in err.value.render()
    with pytest.raises(DataError, match=r"sources\[1\].weight"):
        allocate([1, 1], [5, 0], None)  # an emptied source: no set keeps the weights


@given(
    st.lists(st.floats(min_value=0.01, max_value=10), min_size=1, max_size=6),
    st.integers(min_value=1, max_value=2000),
)
def test_allocate_adds_up_and_is_within_one_of_the_share(weights, size):
    counts = allocate(weights, [10_000] * len(weights), size)
    assert sum(counts) == size
    for w, n in zip(weights, counts, strict=True):
        assert abs(n - size * w / sum(weights)) < 1 + 1e-9


def test_pick_is_seeded_sorted_and_nested():
    a = pick(100, 10, seed=0, source_index=0)
    assert a == sorted(a) and len(set(a)) == 10
    assert a == pick(100, 10, seed=0, source_index=0)
    assert a != pick(100, 10, seed=1, source_index=0)
    assert set(a) <= set(pick(100, 30, seed=0, source_index=0))  # a larger set keeps the smaller one's prompts
    assert pick(5, 10, seed=0, source_index=0) == [0, 1, 2, 3, 4]
