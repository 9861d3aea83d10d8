"""Property tests (hypothesis) for the pure functions every number of a run depends on: the CWCE
weight, the top-k entropy estimate (scalar and batched), packing, the attention mask of packed
rows, and the curriculum order with its split over steps, ranks and micro-batches."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from rel_support import count

from dante.config import LossConfig
from dante.teacher.entropy import topk_entropy, topk_entropy_from_logits
from dante.train.model.attention import block_diagonal_causal_mask
from dante.train.objective.losses import IGNORE, cwce_weight
from dante.train.sources.base import micro_batches, rank_slice
from dante.train.sources.collate import collate
from dante.train.sources.curriculum import BatchStream, epoch_order
from dante.train.sources.examples import make_example

PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
entropies = st.floats(min_value=-10.0, max_value=1e6, allow_nan=False) | st.just(math.inf)


def tick(name: str) -> None:
    count(f"property examples: {name}")


# --- CWCE weight ----------------------------------------------------------------------------


@PROPS
@given(entropies)
def test_cwce_weight_stays_in_its_range(h):
    tick("cwce_weight in [0.30, 1.0]")
    w = cwce_weight(h)
    assert 0.30 <= w <= 1.0
    if h >= 0:
        assert w <= cwce_weight(0.0)
    t = cwce_weight(torch.tensor([h], dtype=torch.float64))
    assert float(t) == pytest.approx(w, abs=1e-12)


@PROPS
@given(entropies, entropies)
def test_cwce_weight_is_monotone_decreasing(a, b):
    tick("cwce_weight monotone")
    lo, hi = min(a, b), max(a, b)
    assert cwce_weight(lo) >= cwce_weight(hi)
    t = cwce_weight(torch.tensor([lo, hi], dtype=torch.float32))
    assert t[0] >= t[1]


@PROPS
@given(st.floats(0.0, 0.9), st.floats(0.0, 1.0), st.floats(0.01, 20.0), st.floats(-5.0, 5.0), entropies, entropies)
def test_cwce_weight_any_config_stays_between_floor_and_floor_plus_span(floor, span_share, slope, center, a, b):
    tick("cwce_weight any config")
    cfg = LossConfig(cwce={"floor": floor, "span": span_share * (1.0 - floor), "slope": slope, "center": center})
    lo, hi = min(a, b), max(a, b)
    w_lo, w_hi = cwce_weight(lo, cfg), cwce_weight(hi, cfg)
    assert cfg.cwce.floor - 1e-12 <= w_hi <= w_lo <= cfg.cwce.floor + cfg.cwce.span + 1e-12


# --- top-k entropy ----------------------------------------------------------------------------


@st.composite
def distributions(draw):
    """A probability vector over V outcomes (zeros allowed) and a k <= V."""
    weights = draw(st.lists(st.floats(0.0, 1.0), min_size=2, max_size=64))
    assume(sum(weights) > 1e-6)
    total = sum(weights)
    probs = sorted((w / total for w in weights), reverse=True)
    return probs, draw(st.integers(1, len(probs)))


@PROPS
@given(distributions())
def test_topk_entropy_is_between_zero_and_log_k_plus_one_and_below_the_true_entropy(dist):
    tick("topk_entropy bounds")
    probs, k = dist
    logprobs = [math.log(p) if p > 0 else -math.inf for p in probs[:k]]
    h = topk_entropy(logprobs)
    assert 0.0 <= h <= math.log(k + 1) + 1e-12
    true = -sum(p * math.log(p) for p in probs if p > 0)
    assert h <= true + 1e-9  # the tail counted as one outcome can only lower the entropy
    if k == len(probs):
        assert h == pytest.approx(true, abs=1e-9)


@PROPS
@given(st.lists(st.floats(max_value=0.01, allow_nan=False, allow_infinity=True), min_size=1, max_size=40))
def test_topk_entropy_of_any_logprob_list_stays_in_bounds(logprobs):
    """Whatever an engine returns (rounded, unnormalised, -inf), the estimate stays in [0, log(k+1)]."""
    tick("topk_entropy any input")
    h = topk_entropy(logprobs)
    assert math.isfinite(h) and 0.0 <= h <= math.log(len(logprobs) + 1) + 1e-12


@st.composite
def logit_batches(draw):
    vocab = draw(st.integers(2, 48))
    rows = draw(st.lists(st.lists(st.floats(-30.0, 30.0), min_size=vocab, max_size=vocab), min_size=1, max_size=4))
    return torch.tensor(rows, dtype=torch.float32), draw(st.integers(1, vocab + 3))


@PROPS
@given(logit_batches())
def test_batched_entropy_from_logits_matches_the_scalar_one_and_its_bounds(batch):
    tick("topk_entropy_from_logits")
    logits, k = batch
    h = topk_entropy_from_logits(logits, k)
    k_eff = min(k, logits.shape[-1])
    assert h.shape == logits.shape[:-1] and h.dtype == torch.float64
    assert bool(((h >= 0) & (h <= math.log(k_eff + 1) + 1e-12)).all())
    logp = torch.log_softmax(logits.float(), dim=-1)
    for row, value in zip(logp, h):
        assert float(value) == pytest.approx(topk_entropy(row.topk(k_eff).values.double().tolist()), abs=1e-9)


# --- packing ----------------------------------------------------------------------------------


@st.composite
def micro_batch(draw):
    n = draw(st.integers(1, 6))
    examples, weights = [], []
    for i in range(n):
        prompt = draw(st.lists(st.integers(0, 300), min_size=1, max_size=12))
        completion = draw(st.lists(st.integers(0, 300), min_size=1, max_size=12))
        entropy = draw(st.none() | st.floats(0.0, 5.0))
        examples.append(make_example(f"r{i}", prompt, completion, entropy, False))
        weights.append(draw(st.floats(0.0, 2.0)))
    return examples, weights


@PROPS
@given(micro_batch())
def test_packing_then_unpacking_returns_the_records_unchanged(mb):
    tick("packing round trip")
    examples, weights = mb
    packed = collate(examples, weights, packing=True, pad_id=0)
    seg = packed["segment_ids"][0]
    assert packed["input_ids"].shape == (1, sum(len(ex) for ex in examples))
    assert bool((seg[1:] >= seg[:-1]).all())  # records stay contiguous, in order
    for k, (ex, w) in enumerate(zip(examples, weights)):
        at = seg == k
        assert packed["input_ids"][0][at].tolist() == ex.input_ids
        assert packed["targets"][0][at].tolist() == ex.targets
        assert packed["position_ids"][0][at].tolist() == list(range(len(ex)))
        assert packed["weights"][0][at].tolist() == pytest.approx([w if t != IGNORE else 0.0 for t in ex.targets])
        assert ex.targets[-1] == IGNORE  # a record's last token never predicts the next record
    padded = collate(examples, weights, packing=False, pad_id=0)
    for r, ex in enumerate(examples):
        n = len(ex)
        assert padded["input_ids"][r, :n].tolist() == ex.input_ids and padded["targets"][r, :n].tolist() == ex.targets
        assert padded["attention_mask"][r].tolist() == [1] * n + [0] * (padded["input_ids"].shape[1] - n)
        assert set(padded["targets"][r, n:].tolist()) <= {IGNORE} and float(padded["weights"][r, n:].abs().sum()) == 0.0


@PROPS
@given(st.lists(st.integers(1, 6), min_size=1, max_size=5))
def test_packed_attention_never_crosses_records(lengths):
    tick("block-diagonal mask")
    seg = torch.tensor([[k for k, n in enumerate(lengths) for _ in range(n)]])
    allowed = block_diagonal_causal_mask(seg, as_bool=True)[0, 0]
    additive = block_diagonal_causal_mask(seg, as_bool=False)[0, 0]
    s = seg[0].tolist()
    for q in range(len(s)):
        for k in range(len(s)):
            want = s[q] == s[k] and k <= q
            assert bool(allowed[q, k]) == want and (float(additive[q, k]) == 0.0) == want


# --- curriculum ------------------------------------------------------------------------------


@dataclass
class Rec:
    id: str
    entropy: float | None
    length: int

    def __len__(self) -> int:
        return self.length


@st.composite
def records(draw, with_entropy: bool = True):
    n = draw(st.integers(1, 30))
    values = st.sampled_from([0.0, 0.5, 0.5, 1.25, 3.0]) | st.floats(0.0, 5.0)  # ties on purpose
    return [Rec(f"r{i:02d}", draw(values) if with_entropy else None, draw(st.integers(1, 40))) for i in range(n)]


@PROPS
@given(
    records(),
    st.sampled_from(["entropy", "shuffle", "none"]),
    st.integers(0, 2**31),
    st.integers(0, 50),
    st.integers(1, 8),
)
def test_curriculum_order_is_a_permutation(recs, mode, seed, epoch, block):
    tick("curriculum permutation")
    order = epoch_order(recs, mode, seed, epoch, block)
    assert sorted(order) == list(range(len(recs)))
    if mode == "entropy":
        keys = [(recs[i].entropy, recs[i].id) for i in order]
        assert keys == sorted(keys)  # easy -> hard, ties by id


@PROPS
@given(
    records(),
    st.sampled_from(["entropy", "shuffle", "none"]),
    st.integers(0, 1000),
    st.integers(1, 4),
    st.integers(1, 4),
    st.one_of(st.tuples(st.just("sequences"), st.integers(1, 40)), st.tuples(st.just("tokens"), st.integers(1, 200))),
)
def test_every_epoch_covers_each_record_exactly_once_across_ranks_and_micro_batches(
    recs, mode, seed, world, micro, budget
):
    tick("epoch coverage over ranks")
    unit, size = budget
    stream = BatchStream(
        recs,
        mode,
        seed,
        batch_sequences=size if unit == "sequences" else None,
        batch_tokens=size if unit == "tokens" else None,
    )
    n, epochs = len(recs), 2
    seen: list[int] = []
    cursor = 0
    while cursor < epochs * n:
        batch, cursor = stream.next_batch(cursor)
        assert batch
        per_rank = []
        for rank in range(world):
            local = rank_slice(batch, rank, world)
            groups = micro_batches(local, len(batch), world, micro)
            assert [i for g in groups for i in g] == local  # micro-batches split the rank's share exactly
            per_rank.append(groups)
        assert (
            len({len(g) for g in per_rank}) == 1
        )  # same number of micro-batches on every rank (collectives stay in step)
        assert [i for groups in per_rank for g in groups for i in g] == batch  # ranks split the global batch exactly
        seen += batch
    for e in range(epochs):
        assert sorted(seen[e * n : (e + 1) * n]) == list(range(n)), f"epoch {e} is not a permutation"
