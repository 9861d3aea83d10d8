"""bench/teacher_bound.py: a cache's decode steps under three schedules, and the floors, by hand."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[2] / "bench"
sys.path.insert(0, str(BENCH))
_SPEC = importlib.util.spec_from_file_location("teacher_bound", BENCH / "teacher_bound.py")
bound_mod = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bound_mod)


def test_steps_of_each_schedule_and_the_padding(tmp_path):
    rows = [(10, 4), (10, 1), (12, 3), (12, 2), (8, 5)]  # (prompt tokens, generated tokens) in cache order
    (tmp_path / "shard-00000.jsonl").write_text(
        "".join(json.dumps({"prompt_tokens": p, "completion_tokens": c}) + "\n" for p, c in rows)
    )
    t = bound_mod.cache_tokens(tmp_path, batch=2)
    assert (t["prompt_tokens"], t["generated_tokens"]) == (52, 15)
    # continuous: ceil(15 / 2) = 8; static: batches (4, 1), (3, 2), (5) run to 4 + 3 + 5 = 12 steps
    assert t["steps"] == {"continuous": 8, "static": 12, "one at a time": 15}
    assert t["padding_share_static"] == pytest.approx(1 - 15 / 24)


def test_the_floor_is_the_slower_of_arithmetic_and_weight_traffic():
    cost = {"flops_per_token": 2e9, "layers": 1, "attention_width": 0, "weight_bytes": {"bfloat16": 1e9}}
    tokens = {
        "prompt_tokens": 100,
        "mean_context": 0.0,
        "steps": {"continuous": 10, "static": 20, "one at a time": 40},
        "rows_per_step": {"continuous": 4, "static": 4, "one at a time": 1},
    }
    rates = {"large": 100.0, "decode M=16": 40.0, "decode M=1": 10.0}  # GFLOP/s
    b = bound_mod.bound(cost, tokens, rates, bw=10.0, dtype="bfloat16")  # 10 GB/s
    assert b["prefill"] == pytest.approx(100 * 2e9 / 100e9)  # 2 s
    # continuous: arithmetic 10·4·2e9 / 40e9 = 2 s, traffic 10 · 1e9 / 10e9 = 1 s -> 2 s
    assert b["continuous"] == pytest.approx(2 + 2)
    # one at a time: arithmetic 40·2e9 / 10e9 = 8 s, traffic 4 s -> 8 s
    assert b["one at a time"] == pytest.approx(2 + 8)
