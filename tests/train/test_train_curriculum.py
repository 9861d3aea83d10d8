"""Curriculum: entropy order, ablations, epoch cycling and data-parallel slices."""

from __future__ import annotations

import math
import random

import pytest

from dante.config import PacingConfig
from dante.errors import DataError
from dante.train.sources.base import micro_batches, rank_slice
from dante.train.sources.curriculum import (
    BatchStream,
    check_entropies,
    competence,
    epoch_order,
    run_positions,
)
from dante.train.sources.examples import make_example


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


# -- the paced curricula and the diagnostics (issue 24) ------------------------------------------


def _stream(exs, mode, seed=3, batch=4, steps=10, **pacing):
    return BatchStream(
        exs,
        mode,
        seed,
        batch_sequences=batch,
        batch_tokens=None,
        run_positions=steps * batch,
        pacing=PacingConfig(**pacing),
    )


def _batches(stream, steps, cursor=0):
    out = []
    for _ in range(steps):
        b, cursor = stream.next_batch(cursor)
        out.append(b)
    return out, cursor


def test_competence_is_platanios_square_root_pacing():
    assert competence(0.0, 0.1) == pytest.approx(0.1)
    assert competence(1.0, 0.1) == 1.0 and competence(2.0, 0.1) == 1.0
    assert competence(0.5, 0.2) == pytest.approx(math.sqrt(0.5 * 0.96 + 0.04))  # 0.7211


def test_competence_draws_each_batch_from_the_easiest_open_share_then_ends_on_the_full_mix():
    entropies = [float(h) for h in range(20)]  # record i has rank i
    random.Random(0).shuffle(entropies)
    exs = _exs(entropies)
    rank = {i: sorted(range(20), key=lambda j: entropies[j]).index(i) for i in range(20)}
    stream = _stream(exs, "competence", steps=10, batch=4, c0=0.25, full_mix=0.2)  # 8 paced steps, 2 mixed
    batches, _ = _batches(stream, 10)
    for b, batch in enumerate(batches[:8]):
        open_share = math.ceil(competence(b * 4 / 32, 0.25) * 20)
        assert len(set(batch)) == 4  # drawn without replacement
        assert max(rank[i] for i in batch) < open_share, (b, batch, open_share)
    assert max(rank[i] for i in batches[0]) < 5  # c0 = 0.25 of 20 records
    mix = [i for b in batches[8:] for i in b]
    assert sorted(mix) == sorted(epoch_order(exs, "shuffle", 3, 0)[:8])  # the mix: seeded epochs of all records
    assert mix == epoch_order(range(20), "shuffle", 3, 0)[:8]


def test_buckets_visit_easy_to_hard_shuffled_inside_then_the_full_mix():
    exs = _exs([float(h) for h in range(12)])  # ranks = indices
    stream = _stream(exs, "buckets", steps=8, batch=3, buckets=3, full_mix=0.25)  # 18 paced positions: 6 per bucket
    batches, _ = _batches(stream, 8)
    flat = [i for b in batches for i in b]
    for k in range(3):
        stage = flat[6 * k : 6 * (k + 1)]
        assert all(4 * k <= i < 4 * (k + 1) for i in stage)  # only bucket k
        assert sorted(stage[:4]) == list(range(4 * k, 4 * k + 4))  # each cycle a permutation of the bucket
    assert flat[:4] != [0, 1, 2, 3] or flat[4:8] != [4, 5, 6, 7]  # shuffled inside (seeded)
    assert flat[18:] == epoch_order(range(12), "shuffle", 3, 0)[:6]


@pytest.mark.parametrize("mode", ["competence", "buckets", "entropy", "shuffle"])
def test_a_stream_rebuilt_mid_run_gives_the_same_batches(mode):
    """Resume: the order is a function of (records, seed, position), so a new stream at a saved
    cursor continues exactly as the first one."""
    exs = _exs([((7 * i) % 11) / 3 for i in range(11)])
    whole, _ = _batches(_stream(exs, mode, steps=12, batch=3), 12)
    first, cursor = _batches(_stream(exs, mode, steps=12, batch=3), 5)
    rest, _ = _batches(_stream(exs, mode, steps=12, batch=3), 7, cursor)
    assert first + rest == whole


@pytest.mark.parametrize("mode", ["competence", "buckets"])
def test_paced_batches_split_across_ranks_in_order(mode):
    exs = _exs([i / 10 for i in range(10)])
    stream = _stream(exs, mode, batch=5, steps=6)
    batch, _ = stream.next_batch(10)
    parts = [rank_slice(batch, r, 2) for r in range(2)]
    assert parts[0] + parts[1] == batch
    groups = [micro_batches(p, len(batch), 2, 2) for p in parts]
    assert len(groups[0]) == len(groups[1])


def test_paced_curricula_need_entropies_and_a_token_budget_estimates_the_run():
    exs = _exs([0.1, 0.2, 0.3, 0.4])  # lengths 3, 4, 5, 6: mean 4.5
    assert run_positions(10, exs, None, 9) == 20 and run_positions(10, exs, 4, None) == 40
    stream = BatchStream(
        exs, "competence", 0, batch_sequences=None, batch_tokens=9, run_positions=20, pacing=PacingConfig()
    )
    assert stream.next_batch(0)[0]
    with pytest.raises(DataError, match="train.curriculum=buckets needs"):
        check_entropies(_exs([0.1, None]), mode="buckets")
