"""Peak memory of the hf teacher's per-token entropy: dante's per-step hook vs generate(output_logits=True).

    .venv/bin/python bench/hf_entropy_memory.py                 # Qwen2.5-Coder-0.5B (offline package), ~3 min

Each setting runs in a fresh process: the teacher (bf16, CPU) loads, warms up on one short
call, then generates greedily for a batch of GSM8K prompts (the demo's prompt template).
**dante**: ``HFTeacher.generate`` (entropy of each step from a forward hook as generation goes).
**output_logits**: the same ``generate`` call with ``output_logits=True``, entropy computed from
the returned logits afterwards (the hf teacher before this change, and the loop a user writes).
Prints the peak RSS above the post-warm-up RSS of each, and checks that both give the same
entropies.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

from dante.teacher.base import Sampling

ROOT = Path(__file__).resolve().parents[1]


def child(args: argparse.Namespace) -> None:
    import torch

    from dante.config import load_recipe
    from dante.prompts import load_prompts
    from dante.teacher import make_teacher
    from dante.teacher.entropy import topk_entropy_from_logits

    recipe = load_recipe(
        ROOT / "configs" / "demo.yaml", [f"teacher.model={args.teacher}", f"prompts.limit={args.batch}"]
    )
    teacher = make_teacher(recipe.teacher)
    prompts = load_prompts(recipe.prompts, ROOT / "configs")
    teacher.generate(prompts[:1], Sampling(max_new_tokens=2, temperature=0.0, top_logprobs=20))
    start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if args.child == "dante":
        out = teacher.generate(prompts, Sampling(max_new_tokens=args.max_new_tokens, temperature=0.0, top_logprobs=20))
        first = out[0][0].token_entropies[:5]
    else:
        enc = teacher.tokenizer(
            [teacher.render(p) for p in prompts], return_tensors="pt", padding=True, add_special_tokens=False
        )
        with torch.no_grad():
            o = teacher.model.generate(
                **enc,
                max_new_tokens=args.max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                return_dict_in_generate=True,
                output_logits=True,
                pad_token_id=teacher.tokenizer.pad_token_id,
            )
        first = torch.stack([topk_entropy_from_logits(s, 20) for s in o.logits], dim=1)[0, :5].tolist()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"setting": args.child, "peak_above_start_mib": (peak - start) / 1024, "first_entropies": first}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teacher", default="pypi:qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=192)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    results = {}
    for setting in ("dante", "output_logits"):
        cmd = [
            sys.executable,
            __file__,
            "--child",
            setting,
            "--teacher",
            args.teacher,
            "--batch",
            str(args.batch),
            "--max-new-tokens",
            str(args.max_new_tokens),
        ]
        line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        results[setting] = json.loads(line)
        print(f"{setting:14s} peak RSS above start {results[setting]['peak_above_start_mib']:8.0f} MiB")
    same = results["dante"]["first_entropies"] == results["output_logits"]["first_entropies"]
    ratio = results["output_logits"]["peak_above_start_mib"] / max(1.0, results["dante"]["peak_above_start_mib"])
    print(
        f"batch {args.batch} x {args.max_new_tokens} new tokens: output_logits holds {ratio:.1f}x dante's peak; "
        f"entropies identical: {same}"
    )


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    main()
