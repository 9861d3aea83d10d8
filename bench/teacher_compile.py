"""Two of issue 48's levers on a CPU: a static KV cache and ``torch.compile`` for the teacher's
decoding, against ``generate``'s default dynamic cache, eager.

    .venv/bin/python bench/teacher_compile.py --recipe configs/demo.yaml --cache runs/capability-reasoning/r1/cache \\
        --prompts 8 --max-new-tokens 48 --fixed --rounds 2 --json bench/results/teacher_compile.json

Each variant runs in its own process (threads pinned, a fresh compile cache) on the same prompts
(the cache's first ``--prompts``, rendered by ``HFTeacher`` as ``dante cache`` does), greedy, one
``generate`` call of all of them at once, twice: the first call pays for compilation, the second
is the steady state; a third call of one step gives the prefill, and the rest of the steady
call over its steps the time of a decode step (``--fixed``: every row decodes all
``--max-new-tokens``, so the decode is measured at full batch). Variants: ``dynamic``
(``generate``'s default), ``static`` (``cache_implementation="static"``, eager) and
``static-compiled`` (the same, its forward compiled by inductor, ``CompileConfig(mode="default")``:
``reduce-overhead`` means CUDA graphs).
transformers compiles ``generate`` only on accelerators unless told to (``_compile_all_devices``),
its own note calling that "often not optimal" on a CPU: this measures it. The variants' order
alternates over rounds; the ratio is the dynamic variant's steady seconds over each other's, within
a round; texts are compared with the dynamic variant's.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, peak_rss_bytes, run_child, set_threads, write_result  # noqa: E402

VARIANTS = ("dynamic", "static", "static-compiled")


def worker(args: argparse.Namespace) -> dict[str, Any]:
    set_threads(args.threads)
    import torch
    from transformers import CompileConfig

    from dante.config import load_recipe
    from dante.teacher.hf import HFTeacher
    from teacher_profile import prompts_of

    cfg = load_recipe(args.recipe).teacher
    teacher = HFTeacher(cfg)
    texts, _ = teacher._encode(prompts_of(args.cache, args.prompts))
    batch = teacher.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not teacher._uses_template())
    kwargs: dict[str, Any] = {"do_sample": False, "max_new_tokens": args.max_new_tokens}
    if args.fixed:  # every row decodes max_new_tokens steps: the decode measured, not when answers end
        kwargs["min_new_tokens"] = args.max_new_tokens
    if args.variant != "dynamic":
        kwargs["cache_implementation"] = "static"
    if args.variant == "static-compiled":
        compile_config = CompileConfig(mode="default", fullgraph=False)
        compile_config._compile_all_devices = True
        kwargs["compile_config"] = compile_config
    else:
        kwargs["disable_compile"] = True
    calls = []
    for _ in range(2):
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = teacher.model.generate(**batch, **kwargs)
        calls.append(time.perf_counter() - t0)
    new = out[:, batch["input_ids"].shape[1] :]
    t0 = time.perf_counter()  # the prefill and one step alone, its graphs already compiled
    with torch.inference_mode():
        teacher.model.generate(**batch, **{**kwargs, "max_new_tokens": 1, "min_new_tokens": 1})
    prefill = time.perf_counter() - t0
    steps = new.shape[1] - 1
    return {
        "variant": args.variant,
        "first_s": round(calls[0], 2),
        "steady_s": round(calls[1], 2),
        "prefill_s": round(prefill, 2),
        "decode_step_ms": round(1000 * (calls[1] - prefill) / max(1, steps), 1),
        "texts": teacher.tokenizer.batch_decode(new, skip_special_tokens=True),
        "new_tokens": int((new != teacher.tokenizer.pad_token_id).sum()),
        "peak_mib": peak_rss_bytes() // 2**20,
        "model": teacher.name,
        "dtype": str(teacher.dtype),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", default="configs/demo.yaml")
    ap.add_argument("--cache", type=Path, required=True, help="a cache whose records give the prompts")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--fixed", action="store_true", help="every row decodes --max-new-tokens steps (min_new_tokens)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # the child process
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.variant:
        print(json.dumps(worker(args)))
        return
    set_threads(args.threads)  # the parent names the threads its children were pinned to
    variants = args.variants.split(",")
    shared = ["--recipe", args.recipe, "--cache", str(args.cache), "--prompts", str(args.prompts)]
    shared += ["--max-new-tokens", str(args.max_new_tokens), "--threads", str(args.threads)]
    shared += ["--fixed"] if args.fixed else []
    rounds = []
    for k in range(args.rounds):
        done: dict[str, Any] = {}
        for variant in variants if k % 2 == 0 else variants[::-1]:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="dante-inductor-")  # compiles afresh
            done[variant] = run_child(Path(__file__), ["--variant", variant, *shared], timeout=3600)
            run = done[variant]
            print(f"round {k + 1} {variant}: first {run['first_s']} s, steady {run['steady_s']} s, ", end="")
            print(f"prefill {run['prefill_s']} s, a decode step {run['decode_step_ms']} ms", flush=True)
        base = done.get("dynamic")
        for run in done.values():
            if base is not None:
                run["dynamic_over_this"] = round(base["steady_s"] / run["steady_s"], 3)
                run["same_texts"] = sum(a == b for a, b in zip(base["texts"], run["texts"], strict=True))
        rounds.append(done)
    result = {
        "machine": machine(),
        "recipe": args.recipe,
        "prompts": args.prompts,
        "max_new_tokens": args.max_new_tokens,
        "fixed_length": args.fixed,
        "threads": args.threads,
        "command": shlex.join(["python", "bench/teacher_compile.py", *(argv if argv is not None else sys.argv[1:])]),
        "rounds": [{v: {k: x for k, x in run.items() if k != "texts"} for v, run in rnd.items()} for rnd in rounds],
    }
    if "dynamic" in variants:
        result["median_dynamic_over"] = {
            v: statistics.median(r[v]["dynamic_over_this"] for r in rounds) for v in variants
        }
    write_result(result, args.json)


if __name__ == "__main__":
    main()
