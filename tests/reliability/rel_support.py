"""Shared pieces of the reliability suite: the tally of injected faults and checked records that
the session prints at the end, the seed of the random choices, runs of the real CLI in a
subprocess, and an independent reader of a cache folder's on-disk state."""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from dante.cache.records import CacheRecord, read_cache
from dante.teacher.base import Generation, Teacher

ROOT = Path(__file__).resolve().parents[2]
CRASHRUN = Path(__file__).with_name("crashrun.py")

# Every random choice of the suite (kill points, kill times, torn-write lengths) derives from
# this seed; it is printed in the summary so a failing run can be replayed exactly.
SEED = int(os.environ.get("DANTE_RELIABILITY_SEED") or random.SystemRandom().randrange(2**31))
TALLY: Counter[str] = Counter()


def rng(name: str) -> random.Random:
    """A random stream of its own for one test, derived from SEED."""
    return random.Random(f"{SEED}:{name}")


def count(key: str, n: int = 1) -> None:
    TALLY[key] += n


def cli_env(**extra: str) -> dict[str, str]:
    """Environment of a CLI subprocess: offline, one thread, this checkout's sources."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DANTE_CRASH")}
    env.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONPATH=str(ROOT / "src"),
    )
    env.update(extra)
    return env


def cli_command(args: list[str]) -> list[str]:
    """``dante ARGS`` through crashrun.py (a no-op wrapper unless DANTE_CRASH is set)."""
    return [sys.executable, str(CRASHRUN), *map(str, args)]


def run_cli(args: list[str], *, timeout: float = 240, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        cli_command(args), cwd=ROOT, env=cli_env(**env), capture_output=True, text=True, timeout=timeout
    )


def start_cli(args: list[str], **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        cli_command(args), cwd=ROOT, env=cli_env(**env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def tail(proc: subprocess.CompletedProcess, n: int = 3000) -> str:
    return f"rc={proc.returncode}\nstdout: {proc.stdout[-n:]}\nstderr: {proc.stderr[-n:]}"


@dataclass
class CacheState:
    """What a cache folder holds on disk, read without the writer's recovery code."""

    sealed: list[CacheRecord]
    partial: list[CacheRecord]  # complete, valid lines at the start of .partial-* files
    torn_tail: bool  # a .partial file ends in an incomplete or damaged line
    manifest: dict | None
    shard_files: list[str] = field(default_factory=list)
    temp_files: list[str] = field(default_factory=list)

    @property
    def ids(self) -> set[str]:
        return {r.id for r in self.sealed} | {r.id for r in self.partial}


def cache_state(cache: Path) -> CacheState:
    """Read a cache folder; sealed shards must be fully valid and duplicate-free (read_cache is strict)."""
    if not cache.exists():
        return CacheState([], [], False, None)
    sealed = read_cache(cache) if list(cache.glob("shard-*.jsonl")) else []
    partial, torn = [], False
    for f in sorted(cache.glob(".partial-*.jsonl")):
        data = f.read_bytes()
        lines = data.split(b"\n")
        for raw in lines[:-1]:  # the piece after the last newline is never complete
            try:
                partial.append(CacheRecord.model_validate_json(raw))
            except ValueError:
                torn = True
                break
        torn = torn or lines[-1] != b""
    manifest_path = cache / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else None  # atomic: never half
    return CacheState(
        sealed,
        partial,
        torn,
        manifest,
        sorted(p.name for p in cache.glob("shard-*.jsonl")),
        sorted(p.name for p in cache.glob(".*.tmp-*")),
    )


def durable_lines(cache: Path) -> int:
    files = [*cache.glob("shard-*.jsonl"), *cache.glob(".partial-*.jsonl")] if cache.exists() else []
    total = 0
    for f in files:
        with contextlib.suppress(FileNotFoundError):  # renamed between glob and read
            total += f.read_bytes().count(b"\n")
    return total


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its bytes (to prove an output was not touched)."""
    return (
        {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        if folder.exists()
        else {}
    )


def write_train_cache(directory: Path, n: int = 24) -> Path:
    """A tiny learnable cache (the answer repeats the topic) for the trainer tests."""
    topics = ["fox", "clips", "add", "answer", "cache", "numbers", "letters", "dog"]
    r = random.Random(0)
    directory.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        topic = topics[i % len(topics)]
        rows.append(
            {
                "id": f"r{i:03d}",
                "prompt": f"Question {i}: tell me about the {topic}.",
                "teacher_text": f"The answer is {topic}. The {topic} is {i % 7}." + " More." * r.randint(0, 3),
                "output_entropy": round(r.uniform(0.0, 3.0), 3),
                "self_consistency": None,
                "difficulty_score": None,
            }
        )
    (directory / "shard-00000.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    return directory


def train_recipe(run_dir: Path, student_dir: Path, cache_dir: Path, **train) -> dict:
    """A recipe dict for a tiny CPU training run."""
    base = {
        "steps": 6,
        "batch_sequences": 4,
        "micro_batch_size": 2,
        "max_length": 96,
        "lr": 3e-3,
        "warmup_steps": 1,
        "lr_scheduler": "constant_with_warmup",
        "checkpoint_every": 100,
        "seed": 7,
        **train,
    }
    return {
        "name": "reliability",
        "output_dir": str(run_dir),
        "cache": {"dir": str(cache_dir)},
        "student": {"model": str(student_dir)},
        "train": base,
    }


def prompt_lines(n: int, start: int = 0) -> str:
    return "".join(
        json.dumps({"prompt": f"Question {i}: what is {i} plus {i}?"}) + "\n" for i in range(start, start + n)
    )


class EchoTeacher(Teacher):
    """A deterministic in-process teacher (no model): fast runs of the cache stage."""

    name = "echo"

    def generate(self, prompts, sampling):
        entropies = [0.25, 0.5, 0.75] if sampling.top_logprobs else None
        return [[Generation(f"echo: {p.prompt}", 3, "stop", entropies, 7) for _ in range(sampling.n)] for p in prompts]
