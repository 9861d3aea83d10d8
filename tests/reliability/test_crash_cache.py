"""Crash anywhere, resume, lose nothing: `dante cache` (hf backend, tiny teacher) SIGKILLed at
random moments — mid-write of a shard line, around a shard seal, mid-manifest write, at a random
time during generation — then resumed. After every kill the sealed shards are valid and nothing
durable was lost; the finished cache holds every prompt exactly once and equals, record for
record, the cache of a run that was never interrupted."""

from __future__ import annotations

import json
import signal
import time

import pytest
import yaml
from rel_support import cache_state, count, durable_lines, rng, run_cli, start_cli, tail

from dante.cache.records import read_cache, validate_cache
from dante.config import PromptsConfig
from dante.prompts import load_prompts

N = 40
SHARD, FLUSH = 4, 2
POINTS = ["cache.write", "cache.seal", "cache.sealed", "manifest", "random"]


def write_recipe(tmp_path, teacher_dir, name: str):
    prompts = tmp_path / "prompts.jsonl"
    if not prompts.exists():
        prompts.write_text(
            "".join(json.dumps({"prompt": f"Question {i}: what is {i} plus {i}?"}) + "\n" for i in range(N))
        )
    recipe = tmp_path / f"{name}.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "output_dir": str(tmp_path / name),
                "teacher": {
                    "backend": "hf",
                    "model": str(teacher_dir),
                    "device": "cpu",
                    "max_new_tokens": 6,
                    "batch_size": 1,
                    "top_logprobs": 5,
                    "store_logprobs": 3,  # the token-logprob payload is part of the exactly-once guarantee
                    "consistency_samples": 1,
                },
                "prompts": {"source": str(prompts)},
                "cache": {"shard_size": SHARD, "flush_every": FLUSH},
            }
        )
    )
    return recipe, tmp_path / name / "cache", {p.id: p.prompt for p in load_prompts(PromptsConfig(source=str(prompts)))}


def arm_count(point: str, state, r) -> int | None:
    """The N-th pass through ``point`` to kill at, chosen so the run certainly reaches it."""
    pending, partial = N - len(state.ids), len(state.partial)
    seals = (partial + pending) // SHARD
    top = {
        "cache.write": min(4, pending // FLUSH - 1),
        "cache.seal": min(2, seals),
        "cache.sealed": min(2, seals),
        "manifest": min(3, 1 + seals),
    }[point]
    return r.randint(1, top) if top >= 1 else None


def kill_at_random_time(recipe, cache, r) -> str | None:
    """Start a slowed-down run; once it has made a new record durable, SIGKILL it after a random delay."""
    before = durable_lines(cache)
    proc = start_cli(["cache", recipe], DANTE_CRASH_SLOW="0.03")
    deadline = time.monotonic() + 120
    while proc.poll() is None and durable_lines(cache) <= before and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(r.uniform(0.0, 0.4))
    if proc.poll() is not None:
        return None  # finished first: nothing killed
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    return f"random time, {durable_lines(cache) - before} new lines durable"


def check_after_kill(cache, before: set[str], expected: dict[str, str]) -> set[str]:
    state = cache_state(cache)  # sealed shards strictly valid and duplicate-free, or this raises
    sealed_ids = {r.id for r in state.sealed}
    partial_ids = [r.id for r in state.partial]
    assert len(partial_ids) == len(set(partial_ids)) and not sealed_ids & set(partial_ids), "an id is written twice"
    for rec in [*state.sealed, *state.partial]:
        assert expected.get(rec.id) == rec.prompt and rec.output_entropy is not None and rec.consistency_samples == 1
    assert before <= state.ids, f"durable records were lost: {sorted(before - state.ids)}"
    if state.manifest is not None:  # replaced atomically: old or new, never half, never ahead of the shards
        assert set(state.manifest["shards"]) <= set(state.shard_files)
        assert state.manifest["sealed_records"] <= len(state.sealed)
    count("records checked: cache, after a kill", len(state.sealed) + len(state.partial))
    return state.ids


@pytest.mark.timeout(400)
def test_cache_killed_at_random_points_resumes_to_exactly_once(tmp_path, teacher_dir):
    r = rng("cache-crash")
    recipe, cache, expected = write_recipe(tmp_path, teacher_dir, "crashed")
    points = list(POINTS)
    r.shuffle(points)
    durable: set[str] = set()
    kills = []
    for point in points:
        if point == "random":
            what = kill_at_random_time(recipe, cache, r)
        else:
            n = arm_count(point, cache_state(cache), r)
            if n is None:
                continue
            done = run_cli(["cache", recipe], DANTE_CRASH=f"{point}:{n}:{r.randrange(2**31)}")
            assert done.returncode == -signal.SIGKILL and f"crashrun: SIGKILL at {point} #{n}" in done.stderr, tail(
                done
            )
            what = done.stderr.strip().splitlines()[-1]
            if point == "cache.write":
                assert cache_state(cache).torn_tail, "the kill should leave a torn line"
        if what is None:
            continue
        kills.append(what)
        count(f"kills: dante cache ({point})")
        durable = check_after_kill(cache, durable, expected)
    assert len(kills) >= 4, kills

    finished = run_cli(["cache", recipe])
    assert finished.returncode == 0, tail(finished)
    records = read_cache(cache)
    assert sorted(r.id for r in records) == sorted(expected), "every prompt exactly once"
    assert validate_cache(cache) == (N, [])
    state = cache_state(cache)
    assert not state.partial and not state.torn_tail and not list(cache.glob(".partial-*"))
    assert state.temp_files == [], "a killed manifest write left its temp file behind"
    assert state.manifest["complete"] is True and state.manifest["records"] == N
    assert len(state.shard_files) == N // SHARD and state.manifest["shards"] == state.shard_files

    # the same cache as a run that was never interrupted (greedy main completion, seeded samples)
    ref_recipe, ref_cache, _ = write_recipe(tmp_path, teacher_dir, "reference")
    ref = run_cli(["cache", ref_recipe])
    assert ref.returncode == 0, tail(ref)
    reference = {x.id: x for x in read_cache(ref_cache)}
    for rec in records:
        want = reference[rec.id]
        assert rec.teacher_text == want.teacher_text and rec.completion_tokens == want.completion_tokens
        assert rec.output_entropy == pytest.approx(want.output_entropy, rel=1e-5, abs=1e-9)
        assert rec.self_consistency == pytest.approx(want.self_consistency) and rec.prompt == want.prompt
        assert rec.token_logprobs == want.token_logprobs  # whole, not torn or doubled: the same bytes
    count("records checked: cache, final + reference", 2 * N)
