"""A run folder written by hand, as the cache, train and eval stages leave it (no models needed)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import yaml

from dante.cache.records import CacheRecord
from dante.eval.scores import write_scores


def _raw(task: str, metric: str, filt: str, value: float, n: int, total: int, shots: int) -> dict:
    return {
        "results": {task: {"alias": task, f"{metric},{filt}": value, f"{metric}_stderr,{filt}": 0.05}},
        "n-shot": {task: shots},
        "n-samples": {task: {"original": total, "effective": n}},
        "versions": {task: 1.0},
        "lm_eval_version": "0.4.13",
        "configs": {task: {"task": task}},
    }


def write_eval(
    eval_dir: Path,
    model: str,
    task: str,
    value: float,
    *,
    shots: int = 8,
    n: int = 50,
    benchmark: str = "GSM8K",
    metric: str = "exact_match",
    filt: str = "strict-match",
    limit: float | None = 50,
    device: str = "cpu",
) -> None:
    d = eval_dir / model
    d.mkdir(parents=True, exist_ok=True)
    total = {"gsm8k_local_heldout": 719, "humaneval_local": 164}.get(task, 1319)
    (d / f"results_{task}.json").write_text(json.dumps(_raw(task, metric, filt, value, n, total, shots)))
    spec = {
        "task": task,
        "benchmark": benchmark,
        "shots": 8,
        "metric": metric,
        "filter": filt,
        "rows": None,
        "note": "",
    }
    info = {
        "model": model,
        "model_ref": model,
        "model_path": f"/models/{model}",
        "spec": spec,
        "limit": limit,
        "status": "ok",
        "max_gen_toks": 64,
        "apply_chat_template": False,
        "dtype": "float32",
        "device": device,
        "batch_size": 4,
        "lm_eval_version": "0.4.13",
        "date": "2026-01-01T00:00:00+00:00",
        "wall_time_s": 30.0,
    }
    (d / f"dante_{task}.json").write_text(json.dumps(info))
    write_scores(d)


def write_student(run: Path, steps: int = 60) -> None:
    d = run / "student"
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text("{}")
    rows = [{"step": 0, "eval_loss": 3.2, "tokens": 0}]
    for s in range(1, steps + 1):
        loss = 3.0 * math.exp(-s / 25) + 0.8
        rows.append(
            {
                "step": s,
                "loss": loss,
                "cwce": loss * 0.9,
                "ce": loss * 1.05,
                "tea": 1e-4 * s,
                "lambda_ce": 0.7 + 0.3 * s / steps,
                "lambda_tea": 1.0 - 0.9 * s / steps,
                "lr": 3e-3 * math.cos(math.pi * s / (2 * steps)),
                "grad_norm": 1.0,
                "tokens": 512 * s,
                "tokens_per_s": 140.0,
                **({"eval_loss": loss + 0.1} if s % 20 == 0 else {}),
            }
        )
    (d / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    manifest = {
        "name": "fake",
        "student": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "steps": steps,
        "tokens_seen": 512 * steps,
        "records_seen": 240,
        "wall_time_s": 1800.0,
        "device_type": "cpu",
        "device_count": 2,
        "device_name": "x86_64",
        "device_hours": 1.0,
        "final_loss": rows[-1]["loss"],
        "initial_eval_loss": 3.2,
        "eval_loss": rows[-1]["eval_loss"],
        "mixed_precision": "no",
        "data": {"records": 240},
        "config": {"train": {"loss": {"cwce": {"center": 1.5}}}},
    }
    (d / "dante_manifest.json").write_text(json.dumps(manifest))


def write_cache(run: Path, n: int = 300) -> None:
    d = run / "cache"
    d.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    lines = []
    for i in range(n):
        h = rng.gammavariate(2.0, 0.6)
        rec = CacheRecord(
            prompt=f"question {i}",
            teacher_text=f"answer {i}",
            output_entropy=h,
            self_consistency=None,
            difficulty_score=min(1.0, h / 3),
            id=f"id{i:05d}",
            teacher="tiny-teacher",
            completion_tokens=20,
        )
        lines.append(rec.to_json())
    (d / "shard-00000.jsonl").write_text("\n".join(lines) + "\n")
    (d / "manifest.json").write_text(
        json.dumps({"teacher": {"backend": "hf", "model": "tiny-teacher"}, "records": n, "complete": True})
    )


def make_run(run: Path, *, cache: bool = True, student: bool = True, scores: bool = True) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    recipe = {
        "name": "fake-run",
        "output_dir": str(run),
        "teacher": {"model": "Qwen/Qwen2.5-0.5B-Instruct"},
        "student": {"model": "HuggingFaceTB/SmolLM2-135M-Instruct"},
        "train": {"steps": 60, "lr": 3e-3, "loss": {"cwce": {"weighted": True}}},
    }
    (run / "resolved_recipe.yaml").write_text(yaml.safe_dump(recipe))
    if cache:
        write_cache(run)
    if student:
        write_student(run)
    if scores:
        write_eval(run / "eval", "student", "gsm8k_local_heldout", 0.32)
        write_eval(run / "eval", "base", "gsm8k_local_heldout", 0.18)
        write_eval(
            run / "eval",
            "student",
            "humaneval_local",
            0.1,
            shots=0,
            benchmark="HumanEval",
            metric="pass@1",
            filt="create_test",
        )
        write_eval(
            run / "eval",
            "base",
            "humaneval_local",
            0.06,
            shots=0,
            benchmark="HumanEval",
            metric="pass@1",
            filt="create_test",
        )
    return run
