"""The teacher's cache through llama.cpp's own server beside dante's hf engine (issue 48 item 3).

    .venv/bin/python bench/teacher_llamacpp.py --recipe configs/reasoning.yaml --parallel 8 \\
        --json bench/results/teacher_llamacpp.json

Both engines write the recipe's cache from the same prompts, greedy, with the recipe's
``max_new_tokens`` and ``top_logprobs``, one after the other on an idle machine, each as
`dante cache run` in a child process (its peak resident memory read by the parent):

- **hf**: the recipe as it is (``teacher.backend: hf``, the converted bf16/fp32 weights);
- **llama.cpp**: ``llama-server`` (``--server``, or ``dante.llamacpp.server_binary()``) serving the
  packaged GGUF itself (its own quantisation, int8/int4 dot products), ``--parallel`` slots with
  continuous batching and its prompt cache, ``--threads`` threads; dante talks to it as any
  OpenAI-compatible server (``teacher.backend: openai``, chat endpoint, ``concurrency`` = slots).

For each: seconds to the last record, records, generated tokens and tokens per second, the
``dante cache validate`` problems, the reasoning split (records with teacher_reasoning), and peak
resident memory (the server's and the client's for llama.cpp). Then how often llama.cpp's greedy
text equals the hf engine's, and how often their final answers do. ``--engines`` runs one of them
(a rerun of the other reads its folder). The machine and the threads are named in the output.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def records_of(folder: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for shard in sorted(folder.glob("shard-*.jsonl")):
        for line in shard.read_text().splitlines():
            r = json.loads(line)
            out[r["id"]] = r
    return out


LIMIT: list[str] = []  # prompts.limit=N from --limit, for every engine


def timed_dante(args: list[str], threads: int) -> tuple[float, int]:
    """``python -m dante.cli ARGS`` in a child process (threads pinned) under /usr/bin/time: its
    seconds and its own peak resident memory in MiB."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = ["/usr/bin/time", "-f", "peak-kb %M", sys.executable, "-m", "dante.cli", *args]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    peak = [line for line in done.stderr.splitlines() if line.startswith("peak-kb ")][-1]
    return seconds, round(int(peak.split()[1]) / 1024)


def run_cache(recipe: str, folder: Path, overrides: list[str], threads: int) -> dict[str, Any]:
    """`dante cache run` of ``recipe`` into ``folder`` (``timed_dante``)."""
    if folder.exists():
        shutil.rmtree(folder)
    seconds, peak = timed_dante(["cache", "run", recipe, f"cache.dir={folder}", *LIMIT, *overrides], threads)
    return {"seconds": round(seconds, 1), "client_peak_mib": peak}


def summary(folder: Path, seconds: float) -> dict[str, Any]:
    from dante.cache.records import validate_cache

    recs = records_of(folder)
    tokens = sum(int(r.get("completion_tokens") or 0) for r in recs.values())
    checked, problems = validate_cache(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    return {
        "cache_wall_s": round(manifest.get("wall_time_s") or 0.0, 1),  # the cache stage alone, as dante timed it
        "records": len(recs),
        "generated_tokens": tokens,
        "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
        "validate_checked": checked,
        "validate_problems": len(problems),
        "first_problems": [str(p) for p in problems[:3]],
        "with_reasoning": sum(bool(r.get("teacher_reasoning")) for r in recs.values()),
        "with_entropy": sum(r.get("output_entropy") is not None for r in recs.values()),
        "finish_length": sum(r.get("finish_reason") == "length" for r in recs.values()),
    }


def compare(hf: Path, other: Path) -> dict[str, Any]:
    from dante.answers import extract_answer

    a, b = records_of(hf), records_of(other)
    both = sorted(set(a) & set(b))
    text = sum(
        (a[i].get("teacher_reasoning"), a[i]["teacher_text"]) == (b[i].get("teacher_reasoning"), b[i]["teacher_text"])
        for i in both
    )
    answer = sum(extract_answer(a[i]["teacher_text"]) == extract_answer(b[i]["teacher_text"]) for i in both)
    return {"records_compared": len(both), "same_text": text, "same_answer": answer}


def llamacpp(args, recipe, gguf: Path, folder: Path) -> dict[str, Any]:
    from dante.llamacpp import LlamaServer

    with LlamaServer(
        gguf,
        binary=args.server,
        parallel=args.parallel,
        ctx_per_slot=args.ctx,
        threads=args.threads,
        extra=args.server_args.split(),
    ) as server:
        loaded = server.loaded_seconds
        overrides = [
            "teacher.backend=openai",
            f"teacher.openai.base_url={server.url}",
            "teacher.openai.api=chat",
            f"teacher.openai.concurrency={args.parallel}",
            "teacher.openai.request_timeout_s=600",
            f"teacher.model={recipe.teacher.model}",
        ]
        out = run_cache(args.recipe, folder, overrides, 1)
        out["server_peak_mib"] = round(server.peak_rss_mib())
    out["server_start_s"] = round(loaded, 1)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", default="configs/reasoning.yaml")
    ap.add_argument("--server", default=None, help="llama-server binary (default: dante.llamacpp.server_binary())")
    ap.add_argument("--parallel", type=int, default=8, help="llama-server slots (= requests in flight)")
    ap.add_argument("--ctx", type=int, default=512, help="context tokens per slot")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--engines", default="hf,llamacpp")
    ap.add_argument("--limit", type=int, default=None, help="the recipe's first N prompts only (prompts.limit)")
    ap.add_argument("--server-args", default="", help="further llama-server arguments, e.g. '--poll 0'")
    ap.add_argument("--out", type=Path, default=Path("/tmp/dante-teacher-llamacpp"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    from dante.config import load_recipe
    from dante.llamacpp import packaged_gguf

    recipe = load_recipe(ROOT / args.recipe)
    if args.limit:
        LIMIT.append(f"prompts.limit={args.limit}")
    engines = args.engines.split(",")
    result: dict[str, Any] = {
        "machine": machine(),
        "recipe": args.recipe,
        "threads": args.threads,
        "parallel": args.parallel,
        "limit": args.limit,
        "server_args": args.server_args,
        "teacher": recipe.teacher.model,
        "command": shlex.join(["python", "bench/teacher_llamacpp.py", *(argv or sys.argv[1:])]),
    }
    folders = {"hf": args.out / "hf", "llamacpp": args.out / "llamacpp"}
    if "hf" in engines:
        timing = run_cache(args.recipe, folders["hf"], [], args.threads)
        result["hf"] = {**timing, **summary(folders["hf"], timing["seconds"])}
        print(json.dumps({"hf": result["hf"]}), flush=True)
    if "llamacpp" in engines:
        gguf = packaged_gguf(recipe.teacher.model)
        result["gguf"] = {"file": gguf.name, "bytes": gguf.stat().st_size}
        timing = llamacpp(args, recipe, gguf, folders["llamacpp"])
        result["llamacpp"] = {**timing, **summary(folders["llamacpp"], timing["seconds"])}
        print(json.dumps({"llamacpp": result["llamacpp"]}), flush=True)
    if folders["hf"].exists() and folders["llamacpp"].exists():
        result["agreement"] = compare(folders["hf"], folders["llamacpp"])
        if "hf" in result and "llamacpp" in result:
            result["speedup"] = round(result["hf"]["seconds"] / result["llamacpp"]["seconds"], 2)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
