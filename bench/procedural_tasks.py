"""Which procedural tasks can show transfer: the teacher's and the student's accuracy on the
*validation* split of each candidate reasoning-gym task, before any distillation.

    .venv/bin/python bench/procedural_tasks.py --items 60

A useful task has a teacher well above the student and answers the student can learn to write.
Each model answers greedily through dante's hf teacher engine (chat template, the task's own
question as the prompt) and is scored by the generator's own check (dante.procedural.score).
Prints accuracy with a Wilson 95% interval, the share of completions that hit the token cap,
and the seconds per item; ``--json`` keeps every answer.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import set_threads, thread_arg  # noqa: E402

if __name__ == "__main__":
    set_threads(thread_arg())

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

# name -> (reasoning-gym task, settings)
CANDIDATES = {
    "chain_sum_2x2": ("chain_sum", {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}),
    "chain_sum_3x2": ("chain_sum", {"min_terms": 3, "max_terms": 3, "min_digits": 1, "max_digits": 2}),
    "chain_sum": ("chain_sum", {}),
    "products_2x2": ("products", {"min_digits": 1, "max_digits": 2}),
    "basic_arithmetic_small": (
        "basic_arithmetic",
        {
            "min_terms": 2,
            "max_terms": 3,
            "min_digits": 1,
            "max_digits": 2,
            "operators": ["+", "-", "*"],
            "allow_parentheses": False,
            "allow_negation": False,
        },
    ),
}
MODELS = {
    "teacher": "pypi:qwen2.5-coder-0.5b-instruct",
    "teacher-1.5b": "pypi:qwen2.5-coder-1.5b-instruct",
    "student": "pypi:smollm2-135m-instruct",
}


def answer_all(model_ref: str, prompts, max_new_tokens: int, batch: int):
    from dante.config import TeacherConfig
    from dante.teacher import Sampling, make_teacher

    engine = make_teacher(TeacherConfig(backend="hf", model=model_ref, device="cpu", batch_size=batch, top_logprobs=0))
    try:
        t0 = time.perf_counter()
        out = []
        for start in range(0, len(prompts), batch):
            out += [g[0] for g in engine.generate(prompts[start : start + batch], Sampling(max_new_tokens, 0.0))]
        return out, time.perf_counter() - t0, engine.dtype
    finally:
        engine.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=60, help="validation items per task")
    p.add_argument("--tasks", default=",".join(CANDIDATES), help=f"comma list from {', '.join(CANDIDATES)}")
    p.add_argument("--models", default="teacher,student")
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args()

    from common import machine
    from dante.eval.scores import wilson_ci
    from dante.procedural import generate, score
    from dante.prompts import Prompt

    print(f"machine: {machine()}")
    report = {"machine": machine(), "args": vars(args), "tasks": {}}
    for name in args.tasks.split(","):
        task, settings = CANDIDATES[name]
        items = generate(task, "validation", args.items, settings=settings)
        prompts = [Prompt(id=item.id, prompt=item.question) for item in items]
        report["tasks"][name] = {"task": task, "settings": settings, "models": {}}
        for label in args.models.split(","):
            gens, seconds, dtype = answer_all(MODELS[label], prompts, args.max_new_tokens, args.batch)
            scores = [
                score(task, g.text, item.answer, item.metadata, settings) for g, item in zip(gens, items, strict=True)
            ]
            correct = sum(s >= 1.0 for s in scores)
            lo, hi = wilson_ci(correct / len(items), len(items))
            capped = sum(g.finish_reason == "length" for g in gens)
            print(
                f"{name:<24} {label:<8} {correct:>3}/{len(items)} = {correct / len(items):6.1%} "
                f"[{lo:.1%}, {hi:.1%}]  capped {capped:>3}  {seconds / len(items):.2f} s/item ({dtype})",
                flush=True,
            )
            report["tasks"][name]["models"][label] = {
                "correct": correct,
                "n": len(items),
                "ci95": [lo, hi],
                "capped": capped,
                "seconds": seconds,
                "dtype": dtype,
                "answers": [
                    {"q": it.question, "gold": it.answer, "text": g.text, "score": s}
                    for it, g, s in zip(items, gens, scores, strict=True)
                ],
            }
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
