"""Packaged offline models on this CPU: conversion time and size, vocabulary, chat template, and
greedy generation tokens/s at batch 1 and 8 in float32 and bfloat16 (docs/offline-models.md).

    .venv/bin/python bench/offline_models.py                     # all installed models, defaults
    .venv/bin/python bench/offline_models.py --models smollm2-135m-instruct --repeats 5 --json out.json

Conversion numbers come from each folder's marker (written by the first conversion); pass
``--reconvert`` to convert again into a temporary cache and time it here. Generation: the same
prompts, exactly ``--new-tokens`` new tokens per row (EOS ignored), warm-up run dropped, runs of
the dtypes and batch sizes interleaved; median and best of ``--repeats`` (the best is the better
estimate when other processes share the cores: the load average is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROMPTS = [
    "Write a Python function that returns the sum of a list of numbers.",
    "What is 17 * 23? Explain step by step.",
    "Give three tips for writing readable code.",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many in all?",
    "Explain what a hash table is in two sentences.",
    "Write a haiku about compilers.",
    "Convert 3.5 hours to minutes and show the arithmetic.",
    "What does the Python keyword `yield` do?",
]


def set_threads(n: int) -> None:
    """Before torch is imported: one thread count for torch, OpenMP and MKL."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    assert "torch" not in sys.modules


def conversion_facts(name: str, reconvert: bool) -> dict:
    """Seconds to join + convert, folder size, vocabulary and chat template of ``pypi:name``."""
    from dante.offline import read_marker, resolve_packaged

    cache = tempfile.mkdtemp(prefix="dante-bench-") if reconvert else None
    try:
        started = time.perf_counter()
        folder = resolve_packaged(name, cache_dir=cache)
        seconds = time.perf_counter() - started
        marker = read_marker(folder)
        size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
        return {
            "model": name,
            "folder": str(folder) if not reconvert else "(temporary)",
            "convert_seconds": round(seconds, 1) if reconvert else marker["convert_seconds"],
            "step_seconds": marker.get("step_seconds"),
            "folder_mb": round(size / 1e6, 1),
            "parameters_m": round(marker["parameters"] / 1e6, 1),
            "vocab_size": marker["vocab_size"],
            "chat_template": marker["chat_template"],
            "architecture": marker["architecture"],
        }
    finally:
        if cache:
            shutil.rmtree(cache, ignore_errors=True)


def encode(tokenizer, batch: int):
    texts = PROMPTS[:batch]
    if tokenizer.chat_template:
        texts = [
            tokenizer.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True, tokenize=False)
            for t in texts
        ]
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not tokenizer.chat_template)


def generate_seconds(model, inputs, new_tokens: int) -> float:
    import torch

    started = time.perf_counter()
    with torch.inference_mode():
        model.generate(
            **inputs,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=model.generation_config.pad_token_id,
        )
    return time.perf_counter() - started


def generation_rates(name: str, dtypes: list[str], batches: list[int], new_tokens: int, repeats: int) -> list[dict]:
    """Median greedy tokens/s (new tokens of all rows / wall time) per dtype and batch size."""
    from dante.models import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(f"pypi:{name}", padding_side="left")
    models = {d: load_causal_lm(f"pypi:{name}", dtype=d).eval() for d in dtypes}
    cases = [(d, b, encode(tokenizer, b)) for d in dtypes for b in batches]
    for d, _, inputs in cases:  # warm-up, dropped
        generate_seconds(models[d], inputs, 4)
    times: dict[tuple[str, int], list[float]] = {(d, b): [] for d, b, _ in cases}
    for _ in range(repeats):
        for d, b, inputs in cases:
            times[d, b].append(generate_seconds(models[d], inputs, new_tokens))
    return [
        {
            "model": name,
            "dtype": d,
            "batch": b,
            "new_tokens": new_tokens,
            "tokens_per_s": round(b * new_tokens / statistics.median(ts), 2),
            "best_tokens_per_s": round(b * new_tokens / min(ts), 2),
            "runs_s": [round(t, 2) for t in ts],
        }
        for (d, b), ts in times.items()
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models", nargs="+", default=["qwen2.5-coder-0.5b-instruct", "smollm2-135m-instruct", "gemma-3-270m"]
    )
    parser.add_argument(
        "--generate",
        nargs="*",
        default=["qwen2.5-coder-0.5b-instruct", "smollm2-135m-instruct"],
        help="models to time generation for",
    )
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--reconvert", action="store_true", help="time a fresh conversion in a temporary cache")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    set_threads(args.threads)

    from dante.offline import missing_packages, packaged_model

    installed = [m for m in args.models if not missing_packages(packaged_model(m))]
    for m in sorted(set(args.models) - set(installed)):
        print(f"skip {m}: packages not installed", file=sys.stderr)
    results = {
        "threads": args.threads,
        "load_average_before": os.getloadavg(),
        "conversion": [conversion_facts(m, args.reconvert) for m in installed],
        "generation": [],
    }
    for row in results["conversion"]:
        print(json.dumps(row))
    for m in [m for m in args.generate if m in installed]:
        for row in generation_rates(m, args.dtypes, args.batches, args.new_tokens, args.repeats):
            print(json.dumps(row))
            results["generation"].append(row)
    results["load_average_after"] = os.getloadavg()
    print(
        f"load average before {results['load_average_before']}, after {results['load_average_after']} "
        f"(other processes on these {os.cpu_count()} cores slow the runs down)",
        file=sys.stderr,
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
