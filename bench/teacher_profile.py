"""Where the hf teacher's time goes (issue 48 item 2): prefill, decode, the rows a batch keeps
decoding after they ended, and the logprob bookkeeping, at several batch sizes, on the prompts of a
real cache.

    .venv/bin/python bench/teacher_profile.py --cache runs/reasoning/cache --recipe configs/reasoning.yaml \\
        --batches 1,8,16,32 --prompts 32

For each batch size, the same prompts (the cache's first ``--prompts``, rebuilt from its records:
prompt, system, messages) go through dante's ``HFTeacher.generate`` as `dante cache` calls it
(greedy, the recipe's ``max_new_tokens`` and ``top_logprobs``), then again without logprobs, then
with ``max_new_tokens=1`` (the prefill and one step). From them: prefill seconds, decode seconds
and seconds per decode step, the logprob bookkeeping's share, and the decode rows that were padding
(rows past their end-of-sequence while the batch's longest row went on). Torch threads as set
(``--threads``, default 1); the machine is named in the output.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import set_threads, thread_arg  # noqa: E402


def prompts_of(cache: Path, limit: int):
    from dante.prompts.sources import Prompt

    out = []
    for shard in sorted(cache.glob("shard-*.jsonl")):
        for line in shard.read_text().splitlines():
            r = json.loads(line)
            out.append(Prompt(id=r["id"], prompt=r["prompt"], system=r.get("system"), messages=r.get("messages")))
            if len(out) == limit:
                return out
    return out


def run(teacher, prompts, batch: int, sampling) -> dict[str, Any]:
    """Seconds, decode steps (the longest row of each batch) and useful tokens over all batches."""
    t0, steps, useful = time.perf_counter(), 0, 0
    for i in range(0, len(prompts), batch):
        gens = teacher.generate(prompts[i : i + batch], sampling)
        lengths = [g[0].completion_tokens for g in gens]
        steps += max(lengths)
        useful += sum(lengths)
    return {"seconds": time.perf_counter() - t0, "steps": steps, "tokens": useful}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--recipe", default="configs/reasoning.yaml")
    ap.add_argument("--batches", default="1,8,16,32")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (set before torch loads)")
    args = ap.parse_args(argv)
    set_threads(thread_arg(argv=argv) if argv is not None else thread_arg())
    from common import machine
    from dante.config import load_recipe
    from dante.teacher.base import Sampling
    from dante.teacher.hf import HFTeacher

    cfg = load_recipe(args.recipe).teacher
    teacher = HFTeacher(cfg)
    prompts = prompts_of(args.cache, args.prompts)
    full = Sampling(max_new_tokens=cfg.max_new_tokens, temperature=0.0, top_logprobs=cfg.top_logprobs)
    plain = Sampling(max_new_tokens=cfg.max_new_tokens, temperature=0.0)
    first = Sampling(max_new_tokens=1, temperature=0.0)
    rows = []
    print(f"machine: {machine()}; {teacher.name}, {teacher.dtype}, {len(prompts)} prompts\n")
    print(
        "| batch | tokens/s (as `dante cache`) | prefill s | decode s | s per decode step | logprobs' share | "
        "padding rows | s total |\n|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    for b in [int(x) for x in args.batches.split(",")]:
        with_lp, without, prefill = run(teacher, prompts, b, full), run(teacher, prompts, b, plain), None
        prefill = run(teacher, prompts, b, first)
        decode = without["seconds"] - prefill["seconds"]
        steps = without["steps"]
        padding = 1 - without["tokens"] / (steps * b) if b > 1 else 0.0
        row = {
            "batch": b,
            "tokens_per_s": with_lp["tokens"] / with_lp["seconds"],
            "prefill_s": prefill["seconds"],
            "decode_s": decode,
            "step_s": decode / max(1, steps - len(range(0, len(prompts), b))),
            "logprob_share": 1 - without["seconds"] / with_lp["seconds"],
            "padding_rows": padding,
            "total_s": with_lp["seconds"],
            "tokens": with_lp["tokens"],
            "same_text": with_lp["tokens"] == without["tokens"],
        }
        rows.append(row)
        print(
            f"| {b} | {row['tokens_per_s']:.1f} | {row['prefill_s']:.1f} | {decode:.1f} | {row['step_s']:.3f} | "
            f"{row['logprob_share']:.0%} | {padding:.0%} | {row['total_s']:.1f} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "model": teacher.name, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
