"""Exactly once across the wait: `dante cache` with ``teacher.dispatch: batch`` SIGKILLed before a
batch's upload, right after the provider created it (its id not yet recorded), while polling,
and in the middle of ingesting its results, each time resumed against the same stand-in Batch
API on 127.0.0.1. No batch is ever submitted twice, no record is written twice or lost, and the
finished cache equals that of a run that was never interrupted."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest
import yaml
from rel_support import cache_state, count, rng, run_cli, tail

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cache"))

from fake_batch_api import FakeBatchAPI  # noqa: E402

from dante.cache.records import read_cache, validate_cache  # noqa: E402

N = 12
KEY = "sk-dante-BATCH-KILL-77"
# the lifecycle in order, each with the largest N-th pass the resumed run still reaches
POINTS = [("batch.upload", 1), ("batch.created", 1), ("batch.poll", 2), ("batch.ingest", N - 2)]


def write_recipe(tmp_path: Path, url: str, name: str) -> tuple[Path, Path]:
    prompts = tmp_path / "prompts.jsonl"
    if not prompts.exists():
        prompts.write_text(
            "".join(json.dumps({"prompt": f"Question {i}: what is {i} times 2?"}) + "\n" for i in range(N))
        )
    recipe = tmp_path / f"{name}.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "output_dir": str(tmp_path / name),
                "teacher": {
                    "backend": "openai",
                    "model": "fake-teacher",
                    "openai": {"base_url": url, "api_key_env": "DANTE_TEST_KEY", "backoff_base_s": 0.01},
                    "top_logprobs": 2,
                    "store_logprobs": 2,
                    "consistency_samples": 2,
                    "max_new_tokens": 16,
                },
                "prompts": {"source": str(prompts)},
                "cache": {
                    "engine": "batch",
                    "shard_size": 5,
                    "flush_every": 1,
                    "batch": {"poll_interval_s": 0.01, "poll_max_s": 0.02},
                },
            }
        )
    )
    return recipe, tmp_path / name / "cache"


@pytest.mark.timeout(300)
def test_batch_run_killed_at_every_step_submits_once_and_writes_exactly_once(tmp_path):
    r = rng("batch-kill")
    api = FakeBatchAPI(api_key=KEY, polls=4, lifetime_s=240)
    try:
        recipe, cache = write_recipe(tmp_path, api.url, "killed")
        durable: set[str] = set()
        for point, top in POINTS:
            n = r.randint(1, top)
            done = run_cli(["cache", recipe], DANTE_CRASH=f"{point}:{n}", DANTE_TEST_KEY=KEY)
            assert done.returncode == -signal.SIGKILL and f"crashrun: SIGKILL at {point} #{n}" in done.stderr, tail(
                done
            )
            count(f"kills: dante cache, batch engine ({point})")
            state = cache_state(cache)  # sealed shards valid and duplicate-free, or this raises
            ids = [x.id for x in [*state.sealed, *state.partial]]
            assert len(ids) == len(set(ids)), "a record was written twice"
            assert durable <= set(ids), "durable records were lost"
            durable = set(ids)
            assert api.count("POST", "/batches") <= 1, "a batch was submitted twice"
        finished = run_cli(["cache", recipe], DANTE_TEST_KEY=KEY)
        assert finished.returncode == 0, tail(finished)
        assert api.count("POST", "/batches") == 1, "one batch, whatever was killed"
        records = read_cache(cache)
        assert len(records) == N and len({x.id for x in records}) == N
        assert validate_cache(cache) == (N, [])
        manifest = cache_state(cache).manifest
        assert manifest["complete"] is True and [b["status"] for b in manifest["batches"]] == ["ingested"]

        ref_recipe, ref_cache = write_recipe(tmp_path, api.url, "reference")
        ref = run_cli(["cache", ref_recipe], DANTE_TEST_KEY=KEY)
        assert ref.returncode == 0, tail(ref)
        reference = {x.id: x.model_dump() for x in read_cache(ref_cache)}
        assert {x.id: x.model_dump() for x in records} == reference
        count("records checked: batch engine, after kills + reference", 2 * N)
    finally:
        api.close()
