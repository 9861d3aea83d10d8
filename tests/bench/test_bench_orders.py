"""The benchmarks' diagnostic orders (bench/orders.py): hand-checked orders, permutations every
epoch, the same batches after a resume, and a run trained through the loop's hook."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from dante.train.sources.curriculum import BatchStream, epoch_order  # noqa: E402
from orders import ORDERS, entropy_batches, entropy_reversed  # noqa: E402


def _exs(entropies):
    return [SimpleNamespace(id=f"r{i}", entropy=h, input_ids=[0] * (3 + i)) for i, h in enumerate(entropies)]


def test_the_diagnostic_orders_by_hand():
    exs = _exs([0.3, 0.1, 0.2, 0.5, 0.4, 0.0])
    assert entropy_reversed(exs, 0, 0) == [3, 4, 0, 2, 1, 5]
    ranked = epoch_order(exs, "entropy", 0, 0)  # [5, 1, 2, 0, 4, 3]
    batches = entropy_batches(exs, 1, 0, block=2)
    blocks = [batches[k : k + 2] for k in range(0, 6, 2)]
    assert sorted(blocks) == sorted([ranked[0:2], ranked[2:4], ranked[4:6]])  # the card's batches, reordered
    assert any(entropy_batches(exs, s, 0, block=2) != ranked for s in range(5))


@pytest.mark.parametrize("name", sorted(ORDERS))
def test_each_epoch_is_a_permutation_and_a_resumed_stream_continues(name):
    exs = _exs([((7 * i) % 11) / 3 for i in range(11)])
    for epoch in range(3):
        assert sorted(ORDERS[name](exs, 5, epoch, 3)) == list(range(11))

    def batches(stream, n, cursor=0):
        out = []
        for _ in range(n):
            batch, cursor = stream.next_batch(cursor)
            out.append(batch)
        return out, cursor

    def stream():
        return BatchStream(exs, "entropy", 5, batch_sequences=3, batch_tokens=None, order=ORDERS[name])

    whole, _ = batches(stream(), 12)
    first, cursor = batches(stream(), 5)
    rest, _ = batches(stream(), 7, cursor)  # a resumed run: a new stream at the saved cursor
    assert first + rest == whole
    assert whole != batches(BatchStream(exs, "entropy", 5, batch_sequences=3, batch_tokens=None), 12)[0]
