"""Curriculum: entropy order, ablations, epoch cycling and data-parallel slices."""

from __future__ import annotations

import pytest

from dante.errors import DataError
from dante.train.curriculum import BatchStream, check_entropies, epoch_order, micro_batches, rank_slice
from dante.train.data import make_example


def _exs(entropies):
    return [make_example(f"id{i}", [1, 2], [3] * (i + 1), h, False) for i, h in enumerate(entropies)]


def test_entropy_order_ascending_with_stable_ties():
    exs = _exs([2.0, 0.5, 1.0, 0.5, 3.0])
    assert epoch_order(exs, "entropy", 0, 0) == [1, 3, 2, 0, 4]
    assert epoch_order(exs, "none", 0, 0) == [0, 1, 2, 3, 4]
    s0, s1 = epoch_order(exs, "shuffle", 1, 0), epoch_order(exs, "shuffle", 1, 1)
    assert sorted(s0) == list(range(5)) and s0 == epoch_order(exs, "shuffle", 1, 0)
    assert s0 != s1 or s0 != epoch_order(exs, "shuffle", 2, 0)


def test_stream_cycles_epochs_in_curriculum_order():
    exs = _exs([3.0, 1.0, 2.0])
    stream = BatchStream(exs, "entropy", 0, batch_sequences=2, batch_tokens=None)
    batches, cursor = [], 0
    for _ in range(3):
        b, cursor = stream.next_batch(cursor)
        batches.append(b)
    assert batches == [[1, 2], [0, 1], [2, 0]] and cursor == 6 and stream.epoch_of(cursor) == 2.0


def test_token_budget_batches():
    exs = _exs([0.1, 0.2, 0.3, 0.4])  # lengths 3, 4, 5, 6
    stream = BatchStream(exs, "entropy", 0, batch_sequences=None, batch_tokens=8)
    b, c = stream.next_batch(0)
    assert b == [0, 1] and c == 2
    b, c = stream.next_batch(c)
    assert b == [2] and c == 3  # 5 + 6 > 8
    b, c = BatchStream(exs, "none", 0, batch_sequences=None, batch_tokens=2).next_batch(3)
    assert b == [3]  # a record longer than the budget still forms a batch


def test_global_batch_is_split_across_ranks_in_order():
    batch = list(range(10, 17))  # 7 records, 2 ranks
    parts = [rank_slice(batch, r, 2) for r in range(2)]
    assert parts[0] + parts[1] == batch and abs(len(parts[0]) - len(parts[1])) <= 1
    mbs = [micro_batches(p, len(batch), 2, 2) for p in parts]
    assert len(mbs[0]) == len(mbs[1]) == 2  # same micro-batch count on every rank
    assert [i for mb in mbs[0] for i in mb] == parts[0]
    assert micro_batches([], 3, 4, 2) == [[]]  # an empty share still runs one (dummy) micro-batch


def test_missing_entropy_names_the_record(tmp_path):
    exs = _exs([0.1, None, 0.3])
    with pytest.raises(DataError, match="'id1' has no output_entropy") as err:
        check_entropies(exs)
    assert err.value.field == "output_entropy"
    (tmp_path / "a.jsonl").write_text(
        '{"id": "id0", "prompt": "p", "teacher_text": "t"}\n{"id": "id1", "prompt": "q", "teacher_text": "t"}\n'
    )
    with pytest.raises(DataError) as err:
        check_entropies(exs, str(tmp_path))
    assert err.value.file == f"{tmp_path / 'a.jsonl'}:2"
