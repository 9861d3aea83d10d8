"""On-policy training killed mid-step, resumed, loses nothing: `dante train` with
``train.on_policy`` SIGKILLed right after a teacher score reached the score cache (the step's
samples scored, not yet trained or checkpointed) and at a random moment of a step, then resumed
with --resume. The run ends with the same steps, samples and losses as a run never interrupted,
every score is on disk exactly once, and the scores written before a kill are read back instead
of asking the teacher again."""

from __future__ import annotations

import json
import signal
import time

import pytest
import yaml
from rel_support import count, rng, run_cli, start_cli, tail, train_recipe, write_train_cache

from dante.cache.records import iter_cache
from dante.config import load_recipe
from dante.train.checkpoint import latest_checkpoint
from dante.train.loop import train
from dante.train.sources.on_policy import SCORES

STEPS, EVERY = 6, 2


def recipe_dict(run_dir, student_dir, teacher_dir, cache, warm, prompts) -> dict:
    data = train_recipe(run_dir, student_dir, cache, steps=STEPS, checkpoint_every=EVERY)
    data["prompts"] = {"source": str(prompts), "id_field": "id"}
    data["teacher"] = {"backend": "hf", "model": str(teacher_dir), "device": "cpu", "dtype": "float32"}
    data["train"]["on_policy"] = {
        "fraction": 0.5,
        "samples_per_prompt": 2,
        "max_new_tokens": 6,
        "temperature": 0.7,
        "top_p": 0.9,
        "warm_start": str(warm),
    }
    return data


def metric_rows(out) -> list[dict]:
    path = out / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def score_ids(out) -> list[str]:
    """Every score record on disk, sealed shards and partial files of every rank."""
    files = sorted((out / SCORES).glob("*/rank-*/shard-*.jsonl")) + sorted((out / SCORES).glob("*/rank-*/.partial-*"))
    return [rec.id for f in files for _, _, rec, problems in iter_cache(f) if rec is not None and not problems]


@pytest.mark.timeout(600)
def test_on_policy_killed_mid_step_resumes_to_the_same_samples_and_losses(tmp_path, student_dir, teacher_dir):
    r = rng("on-policy-kill")
    cache = write_train_cache(tmp_path / "cache")
    warm = train(load_recipe(data=train_recipe(tmp_path / "sft", student_dir, cache, steps=30, lr=1e-2))).output_dir
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"id": f"q{i}", "prompt": f"Question {i}: the fox?"}) + "\n" for i in range(6))
    )

    reference = train(load_recipe(data=recipe_dict(tmp_path / "ref", student_dir, teacher_dir, cache, warm, prompts)))
    want = [x for x in metric_rows(reference.output_dir) if "loss" in x]
    want_scores = score_ids(reference.output_dir)
    assert len(want_scores) >= 6, "too few scored samples for the kill points"

    recipe = tmp_path / "crashed.yaml"
    recipe.write_text(yaml.safe_dump(recipe_dict(tmp_path / "crashed", student_dir, teacher_dir, cache, warm, prompts)))
    out = tmp_path / "crashed" / "student"

    # 1. killed at a random moment of a step
    proc = start_cli(["train", recipe], DANTE_CRASH_SLOW_STEP="0.3")
    deadline, after = time.monotonic() + 180, r.randint(1, 2)
    while proc.poll() is None and time.monotonic() < deadline:
        if any(x.get("step", 0) >= after for x in metric_rows(out)):
            break
        time.sleep(0.02)
    time.sleep(r.uniform(0.0, 0.4))
    assert proc.poll() is None, "the run ended before the kill"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    count("kills: dante train on-policy (random moment)")

    # 2. resumed, killed right after the n-th new score of this process reached the score cache
    before = len(score_ids(out))
    n = r.randint(1, 2)
    done = run_cli(
        ["train", recipe, *(["--resume"] if latest_checkpoint(out) else [])], DANTE_CRASH=f"on_policy.score:{n}"
    )
    assert done.returncode == -signal.SIGKILL and f"on_policy.score #{n}" in done.stderr, tail(done)
    assert len(score_ids(out)) == before + n  # the kill left every score written so far durable
    count("kills: dante train on-policy (after a score)")

    # 3. resumed to the end
    done = run_cli(["train", recipe, *(["--resume"] if latest_checkpoint(out) else [])])
    assert done.returncode == 0, tail(done)
    got = [x for x in metric_rows(out) if "loss" in x]
    assert [x["step"] for x in got] == list(range(1, STEPS + 1)), "every step logged exactly once"
    for a, b in zip(want, got, strict=True):
        assert (b["on_policy_samples"], b["on_policy_tokens"]) == (a["on_policy_samples"], a["on_policy_tokens"])
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-6)
        if a["on_policy_kl"] is not None:
            assert b["on_policy_kl"] == pytest.approx(a["on_policy_kl"], rel=1e-6)
    ids = score_ids(out)
    assert len(ids) == len(set(ids)), "a score written twice"
    assert set(ids) == set(want_scores), "the same samples were scored"
    compute = json.loads((out / "dante_manifest.json").read_text())["teacher_compute"]["on_policy"]
    assert compute["cache_hits"] > 0  # the step killed after its score was redone from the score cache
    count("on-policy steps compared with an uninterrupted run", STEPS)
