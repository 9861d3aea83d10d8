"""`train.on_policy` end to end on the tiny student and the tiny hf teacher (different tokenizers):
the student's samples are scored and trained on next to the cached records, the scores land in
their exactly-once cache (a second run pays no teacher compute), the manifest counts the
teacher's tokens, and a run interrupted and resumed reaches the same losses and samples."""

from __future__ import annotations

import json

import pytest
from train_helpers import interrupt_at_step, recipe_data

from dante.config import load_recipe
from dante.errors import DanteError
from dante.train.loop import train
from dante.train.on_policy import SCORES


def recipe(tmp_path, student_dir, cache, teacher_dir, folder="run", **on_policy):
    data = recipe_data(tmp_path / folder, student_dir, cache, steps=3, checkpoint_every=1)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": f"Question {i}: tell me about the fox."}) + "\n" for i in range(6))
    )
    data["prompts"] = {"source": str(prompts)}
    data["teacher"] = {"backend": "hf", "model": str(teacher_dir), "device": "cpu", "dtype": "float32"}
    data["train"]["on_policy"] = {"fraction": 0.5, "max_new_tokens": 6, "samples_per_prompt": 2, **on_policy}
    return load_recipe(data=data)


def rows(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_on_policy_trains_caches_scores_and_resumes_to_the_same_losses(
    tmp_path, student_dir, teacher_dir, tiny_cache, monkeypatch
):
    # warm start from a short SFT run on the cache, as a user would (a random student writes no text)
    sft = load_recipe(data=recipe_data(tmp_path / "sft", student_dir, tiny_cache, steps=12, lr=1e-2))
    warm = train(sft).output_dir
    r = recipe(tmp_path, student_dir, tiny_cache, teacher_dir, warm_start=str(warm))
    result = train(r)
    metrics = [x for x in rows(result.metrics_path) if "loss" in x]
    assert len(metrics) == 3 and sum(x["on_policy_samples"] for x in metrics) > 0
    assert all(x["on_policy_kl"] is None or x["on_policy_kl"] == x["on_policy_kl"] for x in metrics)
    manifest = json.loads(result.manifest_path.read_text())
    compute = manifest["teacher_compute"]
    assert compute["tokens_scored"] > 0 and compute["on_policy"]["scored"] + compute["on_policy"]["cache_hits"] > 0
    scores = [*(r.student_dir / SCORES).glob("*/shard-*.jsonl"), *(r.student_dir / SCORES).glob("*/.partial-*")]
    assert scores and sum(len(f.read_text().splitlines()) for f in scores) == compute["on_policy"]["scored"]

    # interrupted after step 2 (checkpoint at 2), resumed: the same samples and losses
    again = recipe(tmp_path, student_dir, tiny_cache, teacher_dir, folder="crash", warm_start=str(warm))
    undo = interrupt_at_step(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        train(again)
    undo()
    resumed = train(again, resume=True)
    got = {x["step"]: x for x in rows(resumed.metrics_path) if "loss" in x}
    for x in metrics:
        assert got[x["step"]]["loss"] == pytest.approx(x["loss"], rel=1e-5)
        assert got[x["step"]]["on_policy_kl"] == pytest.approx(x["on_policy_kl"], rel=1e-5)


def test_a_warm_start_that_is_not_a_model_is_refused(tmp_path, student_dir, teacher_dir, tiny_cache):
    r = recipe(tmp_path, student_dir, tiny_cache, teacher_dir, warm_start=str(tmp_path))
    with pytest.raises(DanteError, match="not a model folder") as exc:
        train(r)
    assert exc.value.field == "train.on_policy.warm_start"
