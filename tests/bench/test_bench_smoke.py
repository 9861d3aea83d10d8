"""The benchmark scripts of bench/ still run end to end (smallest sizes; no timing asserted).

bench/gpu_mfu.py --tiny is left out (two interpreters, ~11 s); it runs by hand in 20 s.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _run(script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_train_bench_runs_dante_and_prints_its_table():
    out = _run(
        "train_throughput.py",
        "--settings",
        "dante",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--batch",
        "2",
        "--micro",
        "1",
        "--records",
        "6",
        "--repeats",
        "1",
        "--no-memory",
    )
    assert "padding-free correctness" in out and "| dante" in out


def test_train_bench_runs_dante_with_lora():
    out = _run(
        "train_throughput.py",
        *("--settings", "dante,dante-lora", "--steps", "2", "--warmup", "1", "--batch", "2", "--micro", "1"),
        *("--records", "6", "--repeats", "1", "--no-memory"),
    )
    assert "| dante-lora" in out and "dante-lora vs dante:" in out


def test_cache_bench_compares_dante_with_the_generate_loop():
    out = _run(
        "cache_throughput.py",
        "--prompts",
        "2",
        "--batch",
        "2",
        "--max-new-tokens",
        "2",
        "--vocab",
        "512",
        "--hidden",
        "64",
        "--layers",
        "1",
        "--repeats",
        "1",
        "--settings",
        "generate,dante",
    )
    assert "completions identical to the hand-written loop: yes" in out


def test_prompts_throughput_bench_finds_the_planted_contaminants(tmp_path):
    out = _run(
        "prompts_throughput.py",
        "--prompts",
        "600",
        "--scaling",
        "2",
        "--baseline-prompts",
        "300",
        "--json",
        str(tmp_path / "p.json"),
    )
    assert "same hits" in out and "1 M prompts, extrapolated" in out and "MinHashLSH as documented" in out


def test_cache_ray_bench_measures_the_pool_against_the_local_engine():
    out = _run("cache_ray.py", "--records", "300", "--batch", "16", "--repeats", "1", "--skip-real")
    assert "Ray's overhead" in out and "records/s" in out


@pytest.mark.slow
def test_cache_ray_bench_compares_a_real_teacher_at_equal_cores():
    # the real-teacher part, on a tiny random teacher: 2 replicas x 1 thread against 1 process x
    # 2 threads (and x 1 thread), every engine in every round
    out = _run(
        "cache_ray.py", "--records", "100", "--batch", "16", "--repeats", "1", "--tiny", "--prompts", "6",
        "--max-new-tokens", "4", "--teacher-batch", "3",
    )  # fmt: skip
    assert "at equal cores and threads" in out and "1 local process x 1 thread" in out
