"""End to end on tiny models: a reasoning-gym prompt source -> teacher cache -> train.filter ->
train -> lm-eval on the task's validation split; gold answers never reach the cache."""

from __future__ import annotations

import json

import pytest
import reasoning_gym  # noqa: E402, F401  (the procedural extra, which make install installs: a broken import fails)

import tiny  # noqa: E402
from dante.cache.records import read_cache  # noqa: E402
from dante.cache.run import run_cache  # noqa: E402
from dante.config import load_recipe  # noqa: E402
from dante.eval.run import evaluate  # noqa: E402
from dante.procedural import generate  # noqa: E402
from dante.train.loop import train  # noqa: E402

SETTINGS = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}


@pytest.mark.slow
def test_reasoning_gym_source_to_cache_to_train_to_eval(tmp_path, teacher_dir, student_dir):
    recipe = load_recipe(
        data={
            "name": "tiny-procedural",
            "output_dir": str(tmp_path / "run"),
            "teacher": tiny.teacher_settings(teacher_dir),
            "prompts": {"source": "reasoning_gym:chain_sum", "task_settings": SETTINGS, "limit": 8},
            "student": {"model": str(student_dir)},
            "train": {
                "steps": 2,
                "batch_sequences": 4,
                "micro_batch_size": 4,
                "max_length": 96,
                "lr": 1e-3,
                "warmup_steps": 1,
                "checkpoint_every": 100,
                "filter": {"require_answer": False},
            },
            "eval": {
                "suite": None,
                "tasks": ["rg_chain_sum_2x2_validation"],
                "models": ["base", "student"],
                "limit": 4,
                "max_gen_toks": 8,
                "device": "cpu",
                "dtype": "float32",
                "batch_size": 4,
            },
        }
    )
    summary = run_cache(recipe)
    assert summary.records == 8
    records = read_cache(recipe.cache_dir)
    items = generate("chain_sum", "train", 8, settings=SETTINGS)
    assert [r.prompt for r in records] == [i.question for i in items]
    cache_text = "".join(p.read_text() for p in recipe.cache_dir.glob("*.jsonl"))
    assert '"answer"' not in cache_text  # the gold answer field never enters the cache
    result = train(recipe)
    assert result.steps == 2
    assert json.loads(result.manifest_path.read_text())["data"]["filter"]["read"] == 8
    evaluate(recipe)
    for model in ("base", "student"):
        scores = json.loads((recipe.eval_dir / model / "scores.json").read_text())["scores"]
        (row,) = [r for r in scores if r["metric"] == "exact_match"]
        assert row["task"] == "rg_chain_sum_2x2_validation" and row["n_samples"] == 4 and 0.0 <= row["value"] <= 1.0
