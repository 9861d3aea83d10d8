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
    # issue 24: candidates for a second task where the teacher hesitates (multi-step, short answers)
    "leg_counting_small": (
        "leg_counting",
        {"min_animals": 2, "max_animals": 3, "min_instances": 1, "max_instances": 5},
    ),
    "simple_equations_small": (
        "simple_equations",
        {"min_terms": 2, "max_terms": 3, "min_value": 1, "max_value": 20, "operators": ["+", "-", "*"]},
    ),
    "gcd_small": ("gcd", {"min_numbers": 2, "max_numbers": 2, "min_value": 2, "max_value": 100}),
    "lcm_small": ("lcm", {"min_numbers": 2, "max_numbers": 2, "min_value": 2, "max_value": 20}),
    "count_bits_small": ("count_bits", {"min_n": 1, "max_n": 4095}),
    "base_conversion_small": ("base_conversion", {"min_base": 2, "max_base": 10, "min_value": 0, "max_value": 64}),
    "letter_counting_small": ("letter_counting", {"min_words": 3, "max_words": 5}),
    "decimal_chain_sum_small": (
        "decimal_chain_sum",
        {
            "min_terms": 2,
            "max_terms": 2,
            "min_digits": 1,
            "max_digits": 2,
            "min_decimal_places": 1,
            "max_decimal_places": 1,
        },
    ),
    "time_intervals_time": ("time_intervals", {"task_types": ["time"]}),
    "calendar_weekday_offset": ("calendar_arithmetic", {"tasks": ["weekday_offset"]}),
    "calendar_count_days": ("calendar_arithmetic", {"tasks": ["count_days"]}),
    "products_2d": ("products", {"min_digits": 2, "max_digits": 2}),
    "products_3": ("products", {"min_digits": 1, "max_digits": 3}),
    # issue 35: multi-step candidates for reasoning distillation (a teacher that works step by step)
    "chain_sum_4x1": ("chain_sum", {"min_terms": 4, "max_terms": 4, "min_digits": 1, "max_digits": 1}),
    "chain_sum_3x1": ("chain_sum", {"min_terms": 3, "max_terms": 3, "min_digits": 1, "max_digits": 1}),
    "chain_sum_4x2": ("chain_sum", {"min_terms": 4, "max_terms": 4, "min_digits": 1, "max_digits": 2}),
}
# issue 35: a teacher asked to reason, its working between thinking markers (dante.teacher.reasoning
# splits it from the answer), and one asked not to
SYSTEMS = {
    "think": (
        "Solve the problem step by step. Write your working between <think> and </think>, "
        "one operation per line, then give the final answer as: The answer is N."
    ),
    "direct": "Do not show any working. Reply with one sentence: 'The answer is' followed by the number.",
}
MODELS = {
    "teacher": "pypi:qwen2.5-coder-0.5b-instruct",
    "teacher-1.5b": "pypi:qwen2.5-coder-1.5b-instruct",
    "student": "pypi:smollm2-135m-instruct",
}


def answer_all(model_ref: str, prompts, max_new_tokens: int, batch: int, temperature: float = 0.0):
    """Each prompt's completion (the answer part; a thinking teacher's reasoning in ``.reasoning``)."""
    from dante.config import TeacherConfig
    from dante.teacher import Sampling, make_teacher

    engine = make_teacher(TeacherConfig(backend="hf", model=model_ref, device="cpu", batch_size=batch, top_logprobs=20))
    try:
        t0 = time.perf_counter()
        out = []
        for start in range(0, len(prompts), batch):
            sampling = Sampling(max_new_tokens, temperature, top_logprobs=20)
            out += [g[0] for g in engine.generate(prompts[start : start + batch], sampling)]
        return out, time.perf_counter() - t0, engine.dtype
    finally:
        engine.close()


def median_tokens(gens) -> int:
    return sorted(g.completion_tokens or 0 for g in gens)[len(gens) // 2]


def entropy_spread(entropies: list[float | None]) -> dict[str, float]:
    """Per-record output entropies (finished answers) and the CWCE weights they give: how much
    w(H) can tell records apart on this task (``w_span`` = w(p10) − w(p90), the card's w)."""
    from dante.train.objective.losses import cwce_weight

    hs = sorted(h for h in entropies if h is not None)
    if not hs:
        return {"p10": float("nan"), "p50": float("nan"), "p90": float("nan"), "w_span": 0.0, "w_range": 0.0}
    pick = lambda q: hs[min(len(hs) - 1, int(q * len(hs)))]  # noqa: E731
    return {
        "p10": pick(0.1),
        "p50": pick(0.5),
        "p90": pick(0.9),
        "w_span": cwce_weight(pick(0.1)) - cwce_weight(pick(0.9)),
        "w_range": cwce_weight(hs[0]) - cwce_weight(hs[-1]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=60, help="validation items per task")
    p.add_argument("--tasks", default=",".join(CANDIDATES), help=f"comma list from {', '.join(CANDIDATES)}")
    p.add_argument("--models", default="teacher,student")
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy; > 0: sampled at that temperature")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--system", default=None, help=f"a system prompt for every model: {', '.join(SYSTEMS)} or text")
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
        system = SYSTEMS.get(args.system, args.system)
        prompts = [Prompt(id=item.id, prompt=item.question, system=system) for item in items]
        report["tasks"][name] = {"task": task, "settings": settings, "models": {}}
        for label in args.models.split(","):
            gens, seconds, dtype = answer_all(MODELS[label], prompts, args.max_new_tokens, args.batch, args.temperature)
            scores = [
                score(task, g.text, item.answer, item.metadata, settings) for g, item in zip(gens, items, strict=True)
            ]
            correct = sum(s >= 1.0 for s in scores)
            lo, hi = wilson_ci(correct / len(items), len(items))
            capped = sum(g.finish_reason == "length" for g in gens)
            spread = entropy_spread([g.output_entropy for g in gens if g.finish_reason != "length"])
            thought = [g for g in gens if g.reasoning is not None]
            closed = sum(bool(g.reasoning_closed) and bool(g.text.strip()) for g in thought)
            print(
                f"{name:<24} {label:<8} {correct:>3}/{len(items)} = {correct / len(items):6.1%} "
                f"[{lo:.1%}, {hi:.1%}]  capped {capped:>3}  {seconds / len(items):.2f} s/item ({dtype})  "
                f"H p10-p90 {spread['p10']:.2f}-{spread['p90']:.2f} nats, w(H) span {spread['w_span']:.2f} "
                f"(range {spread['w_range']:.2f}), median {median_tokens(gens)} tokens, "
                f"reasoning {len(thought)} (complete {closed})",
                flush=True,
            )
            report["tasks"][name]["models"][label] = {
                "correct": correct,
                "n": len(items),
                "ci95": [lo, hi],
                "capped": capped,
                "seconds": seconds,
                "dtype": dtype,
                "entropy": spread,
                "answers": [
                    {"q": it.question, "gold": it.answer, "reasoning": g.reasoning, "text": g.text, "score": s}
                    for it, g, s in zip(items, gens, scores, strict=True)
                ],
            }
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
