"""Helpers for the trainer tests: a tiny learnable cache on disk and recipes over the tiny student."""

from __future__ import annotations

import json
import random
from pathlib import Path

TOPICS = ["fox", "clips", "add", "answer", "cache", "numbers", "letters", "dog"]


def make_cache_lines(n: int = 24, seed: int = 0, *, entropy: bool = True) -> list[dict]:
    """CacheRecord-compatible dicts with a learnable pattern (the answer repeats the topic)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        prompt = f"Question {i}: tell me about the {topic}."
        text = f"The answer is {topic}. The {topic} is {i % 7}." + (" More." * rng.randint(0, 3))
        row = {
            "id": f"r{i:03d}",
            "prompt": prompt,
            "teacher_text": text,
            "self_consistency": None,
            "difficulty_score": None,
        }
        row["output_entropy"] = round(rng.uniform(0.0, 3.0), 3) if entropy else None
        rows.append(row)
    return rows


def write_cache(directory: Path, rows: list[dict]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "shard-00000.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return directory


def recipe_data(tmp: Path, student_dir: Path, cache_dir: Path, **train) -> dict:
    """A recipe dict for a tiny CPU run; train overrides go into the train section."""
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
        "curriculum": "entropy",  # the card's order (the schema's default is shuffle): a fixed order to test against
    }
    base.update(train)
    return {
        "name": "tiny-train",
        "output_dir": str(tmp / "run"),
        "cache": {"dir": str(cache_dir)},
        "student": {"model": str(student_dir)},
        "train": base,
    }


def interrupt_at_step(monkeypatch, step: int):
    """Make training raise KeyboardInterrupt right after the metrics row of ``step`` is written
    (a crash between checkpoints); returns a function that undoes it."""
    from dante.train.metrics import MetricsLog

    real_write = MetricsLog.write

    def write_then_crash(self, row):
        real_write(self, row)
        if row.get("step") == step:
            raise KeyboardInterrupt

    monkeypatch.setattr(MetricsLog, "write", write_then_crash)
    return lambda: monkeypatch.setattr(MetricsLog, "write", real_write)
