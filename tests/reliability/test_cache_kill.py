"""`dante cache` killed with SIGKILL mid-run and re-run: every prompt exactly once, all valid,
each with its token-logprob payload whole (teacher.store_logprobs)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from rel_support import durable_lines

from dante.cache.payload import decode
from dante.cache.records import read_cache, validate_cache
from dante.config import PromptsConfig
from dante.prompts import load_prompts

N = 30


def start(recipe: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(Path(__file__).parents[2] / "src"),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "dante.cli", "cache", str(recipe)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def kill_when(proc: subprocess.Popen, cache: Path, at_least: int, timeout: float = 60.0, group: bool = False) -> int:
    """SIGKILL ``proc`` (with ``group``: its whole process group) once ``at_least`` records are durable."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        n = durable_lines(cache)  # tolerates a .partial renamed to shard-* between glob and read
        if n >= at_least:
            if group:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            return n
        time.sleep(0.005)
    proc.kill()
    raise AssertionError(f"run ended before {at_least} records were durable: {proc.communicate()[0][-2000:]!r}")


def test_sigkill_mid_run_then_resume_gives_every_prompt_once(tmp_path, teacher_dir):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Question {i}: what is {i} plus {i}?"}) + "\n" for i in range(N)))
    cache = tmp_path / "run" / "cache"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "output_dir": str(tmp_path / "run"),
                "teacher": {
                    "backend": "hf",
                    "model": str(teacher_dir),
                    "device": "cpu",
                    "max_new_tokens": 24,
                    "batch_size": 1,
                    "top_logprobs": 5,
                    "store_logprobs": 5,
                    "consistency_samples": 2,
                },
                "prompts": {"source": str(prompts)},
                "cache": {"shard_size": 4, "flush_every": 2},
            }
        )
    )

    for at_least in (3, 13):  # kill inside the first shard, then later across a seal
        proc = start(recipe)
        seen = kill_when(proc, cache, at_least)
        assert proc.returncode == -signal.SIGKILL and seen < N

    done = subprocess.run(
        [sys.executable, "-m", "dante.cli", "cache", str(recipe)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).parents[2] / "src")},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    records = read_cache(cache)
    expected = {p.id for p in load_prompts(PromptsConfig(source=str(prompts)))}
    assert len(records) == N and {r.id for r in records} == expected
    assert validate_cache(cache) == (N, [])  # payloads included: count, logprobs, tokens joining to the text
    payloads = [decode(r.token_logprobs) for r in records]
    assert all(len(p) == r.completion_tokens and p.k == 5 for p, r in zip(payloads, records, strict=True))
    assert not list(cache.glob(".partial-*")) and json.loads((cache / "manifest.json").read_text())["complete"] is True
    assert all(
        r.output_entropy is not None and r.consistency_samples == 2 and r.self_consistency is not None for r in records
    )
