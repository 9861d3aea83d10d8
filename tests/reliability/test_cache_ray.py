"""`teacher.dispatch: ray` on a local Ray cluster (num_cpus=2) with the tiny hf teacher: every prompt
exactly once across replicas, ids already written never dispatched again, a replica SIGKILLed
mid-batch (its prompts redone by another, none lost, none doubled), the driver's whole process
group SIGKILLed (the re-run resumes exactly once), and a prompt that keeps failing (reported by
id; the run stops or goes on by the setting, never an empty record)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import pytest
import ray  # noqa: E402  (the ray extra, which make install installs: a broken import fails, never a skip)
import yaml
from rel_support import count, durable_lines, prompt_lines
from test_cache_kill import kill_when

import tiny
from dante.cache.records import read_cache, validate_cache
from dante.config import load_recipe
from dante.errors import DanteError
from dante.prompts import load_prompts

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"
N = 40


@pytest.fixture(scope="module")
def ray_cluster():
    """One local cluster for the in-process tests; workers import ray_teachers from here."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), str(SRC)] + ([old] if old else []))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    yield
    ray.shutdown()
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


def recipe_data(tmp: Path, teacher_dir: Path, n: int = N, **ray_cfg) -> dict:
    prompts = tmp / "prompts.jsonl"
    prompts.write_text(prompt_lines(n))
    return {
        "name": "ray",
        "output_dir": str(tmp / "run"),
        "teacher": tiny.teacher_settings(teacher_dir, top_logprobs=5),
        "prompts": {"source": str(prompts)},
        "cache": {"shard_size": 8, "flush_every": 1, "engine": "ray", "ray": {"replicas": 2, **ray_cfg}},
    }


def _pool(recipe, **kw):
    from ray_teachers import LoggedHF

    from dante.teacher.ray_pool import RayTeacherPool

    return RayTeacherPool(recipe.teacher, recipe.teacher.ray, partial(LoggedHF, **kw))


def test_every_prompt_once_across_replicas_and_written_ids_are_never_dispatched(tmp_path, teacher_dir, ray_cluster):
    from ray_teachers import logged

    from dante.cache.run import run_cache

    log = tmp_path / "batches.jsonl"
    data = recipe_data(tmp_path, teacher_dir)
    data["prompts"]["limit"] = 24
    recipe = load_recipe(data=data)
    pool = _pool(recipe, log=str(log))
    try:
        first = run_cache(recipe, teacher=pool)
        assert first.written == 24
        data["prompts"]["limit"] = N  # a larger set extends the cache: only the 16 new prompts go out
        second = run_cache(load_recipe(data=data), teacher=pool)
    finally:
        pool.close()
    assert second.written == N - 24 and second.skipped == 24
    batches = logged(log)
    sent = [i for b in batches for i in b["ids"]]
    assert len(sent) == N == len(set(sent))  # each prompt went to a replica once, in both runs together
    assert len({b["pid"] for b in batches}) == 2  # both replicas took work
    assert max(len(b["ids"]) for b in batches) == 4
    records = read_cache(recipe.cache_dir)
    assert len(records) == N and len({r.id for r in records}) == N
    assert validate_cache(recipe.cache_dir) == (N, [])
    manifest = json.loads((recipe.cache_dir / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["ray"]["restarts"] == 0 and manifest["failed_prompts"] == []
    count("records checked: ray cache", N)


def test_a_replica_killed_mid_batch_loses_and_doubles_nothing(tmp_path, teacher_dir, ray_cluster):
    """SIGKILL of a replica's process while it holds batches: they come back as errors, go to the
    other replica (and a restarted one), and the cache ends with every prompt exactly once."""
    from ray_teachers import logged

    from dante.cache.run import run_cache

    log = tmp_path / "batches.jsonl"
    recipe = load_recipe(data=recipe_data(tmp_path, teacher_dir))
    pool = _pool(recipe, log=str(log), delay_s=0.3)
    victim = pool.replica_pids()[0]
    killed = threading.Event()

    def kill_mid_run() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and durable_lines(recipe.cache_dir) < 8:
            time.sleep(0.01)
        os.kill(victim, signal.SIGKILL)
        killed.set()

    killer = threading.Thread(target=kill_mid_run)
    killer.start()
    try:
        summary = run_cache(recipe, teacher=pool)
    finally:
        killer.join()
        pool.close()
    assert killed.is_set()
    count("kills: ray replica SIGKILL mid-batch")
    assert summary.written == N
    records = read_cache(recipe.cache_dir)
    assert sorted(r.id for r in records) == sorted({r.id for r in records}) and len(records) == N
    assert validate_cache(recipe.cache_dir) == (N, [])
    manifest = json.loads((recipe.cache_dir / "manifest.json").read_text())
    assert manifest["ray"]["restarts"] == 1 and manifest["ray"]["retried_batches"] >= 1
    done_by = {i: b["pid"] for b in logged(log) for i in b["ids"]}
    assert len(done_by) == N and set(done_by.values()) - {victim}  # the others finished its work
    count("records checked: ray cache", N)


@pytest.mark.parametrize("policy", ["skip", "stop"])
def test_a_prompt_that_keeps_failing_is_reported_by_id(tmp_path, teacher_dir, ray_cluster, policy):
    """The poisoned prompt breaks every batch it is in: batches are split until it is alone, it
    is tried max_prompt_attempts times, then skipped (listed in the manifest) or the run stops;
    it is never written, and every other prompt is."""
    from dante.cache.run import run_cache

    data = recipe_data(tmp_path, teacher_dir, n=16, on_prompt_failure=policy, max_prompt_attempts=2)
    prompts = tmp_path / "prompts.jsonl"
    lines = prompts.read_text().splitlines()
    lines[5] = json.dumps({"prompt": "poison: this one breaks the teacher"})
    prompts.write_text("\n".join(lines) + "\n")
    recipe = load_recipe(data=data)
    (bad,) = [p.id for p in load_prompts(recipe.prompts) if "poison:" in p.prompt]
    pool = _pool(recipe, poison="poison:")
    try:
        if policy == "skip":
            summary = run_cache(recipe, teacher=pool)
            assert summary.failed == [bad] and summary.written == 15
        else:
            with pytest.raises(DanteError, match=f"'{bad}' failed 2 times") as err:
                run_cache(recipe, teacher=pool)
            assert "teacher.ray.on_prompt_failure" in str(err.value)
    finally:
        pool.close()
    count("faults: ray poisoned prompt")
    records = read_cache(recipe.cache_dir)
    assert bad not in {r.id for r in records} and all(r.teacher_text for r in records)
    manifest = json.loads((recipe.cache_dir / "manifest.json").read_text())
    assert [f["id"] for f in manifest["failed_prompts"]] == [bad] and manifest["complete"] is False
    if policy == "skip":
        assert len(records) == 15 and manifest["ray"]["split_batches"] >= 1


def test_the_driver_killed_with_its_cluster_then_rerun_gives_every_prompt_once(tmp_path, teacher_dir):
    """`dante cache` with teacher.dispatch ray as a user runs it; its whole process group (driver,
    the local cluster it started, the replicas) SIGKILLed mid-run, twice; the re-run resumes."""
    data = recipe_data(tmp_path, teacher_dir, num_cpus=2)
    data["teacher"].update(batch_size=1, max_new_tokens=24, consistency_samples=2)
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(data))
    cache = tmp_path / "run" / "cache"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(SRC),
        "RAY_ADDRESS": "",
    }
    cmd = [sys.executable, "-m", "dante.cli", "cache", str(recipe_file)]
    for at_least in (3, 12):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            seen = kill_when(proc, cache, at_least, timeout=180, group=True)
        finally:
            _kill_group(proc)
        assert seen < N
        count("kills: ray driver and cluster SIGKILL")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, start_new_session=True)
    assert done.returncode == 0, done.stderr[-3000:]
    records = read_cache(cache)
    assert len(records) == N and len({r.id for r in records}) == N
    assert validate_cache(cache) == (N, [])
    assert all(r.consistency_samples == 2 and r.self_consistency is not None for r in records)
    assert json.loads((cache / "manifest.json").read_text())["complete"] is True
    count("records checked: ray cache", N)


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def test_min_replicas_starts_without_waiting_for_a_replica_the_cluster_cannot_place(tmp_path, teacher_dir, ray_cluster):
    """replicas: 3 on a 2-CPU cluster with min_replicas: 2: the run starts with the two that fit
    (the third waits for resources, as it would for an autoscaler) and finishes without it."""
    from dante.cache.run import run_cache

    recipe = load_recipe(data=recipe_data(tmp_path, teacher_dir, n=12, replicas=3, min_replicas=2))
    pool = _pool(recipe)
    try:
        assert len(pool.replica_pids()) == 2
        summary = run_cache(recipe, teacher=pool)
    finally:
        pool.close()
    assert summary.written == 12 and len(read_cache(recipe.cache_dir)) == 12
    assert json.loads((recipe.cache_dir / "manifest.json").read_text())["ray"]["replicas_started"] == 3


def test_a_thinking_server_behind_ray_replicas_gives_the_same_split_and_valid_records(tmp_path, ray_cluster):
    """The openai engine in Ray replicas against a stand-in that answers as vLLM's qwen3 parser
    does: each record holds the rule's reasoning and answer, and validates (issue 46)."""
    sys.path.insert(0, str(HERE.parent / "teacher"))
    from reasoning_server import ReasoningServer, answer, thinking

    from dante.cache.run import run_cache

    server = ReasoningServer("vllm-qwen3", field="reasoning")
    try:
        prompts = tmp_path / "prompts.jsonl"
        prompts.write_text(prompt_lines(6))
        data = {
            "name": "ray-thinking",
            "output_dir": str(tmp_path / "run"),
            "teacher": {
                "backend": "openai",
                "model": "thinker",
                "openai": {"base_url": server.url, "concurrency": 2, "max_retries": 1, "request_timeout_s": 10},
                "top_logprobs": 2,
                "store_logprobs": 2,
                "dispatch": "ray",
                "ray": {"replicas": 2, "cpus_per_replica": 0.5},
            },
            "prompts": {"source": str(prompts)},
            "cache": {"shard_size": 4, "flush_every": 1},
        }
        recipe = load_recipe(data=data)
        run_cache(recipe)
    finally:
        server.close()
    records = read_cache(recipe.cache_dir)
    assert len(records) == 6
    assert all((r.teacher_text, r.teacher_reasoning) == (answer(r.prompt), thinking(r.prompt)) for r in records)
    assert validate_cache(recipe.cache_dir) == (6, [])
