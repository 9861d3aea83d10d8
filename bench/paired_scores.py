"""Two evaluated models compared question by question on one task (exact McNemar test), e.g. a
student of one run against a student of another run scored on the same questions:

    .venv/bin/python bench/paired_scores.py runs/demo-p15/eval/student runs/lora-sel-2.0e-4/eval/student \\
        --task rg_chain_sum_2x2

Each argument is a model folder written by `dante eval` (its samples_<task>.jsonl). Prints each
model's accuracy, then how many questions B got right and A wrong (won) and the reverse (lost).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dante.eval.scores import correct_by_doc, mcnemar_exact


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("a", type=Path, help="model folder A (the baseline)")
    p.add_argument("b", type=Path, help="model folder B")
    p.add_argument("--task", required=True)
    p.add_argument("--metric", default="exact_match")
    p.add_argument("--filter", default="none")
    args = p.parse_args()
    a, b = (correct_by_doc(d, args.task, args.metric, args.filter) for d in (args.a, args.b))
    if a is None or b is None:
        raise SystemExit(f"no per-question samples of {args.task} in {args.a if a is None else args.b}")
    for name, d in (("A", a), ("B", b)):
        print(f"{name} {sum(d.values())}/{len(d)} = {sum(d.values()) / len(d):.1%}")
    t = mcnemar_exact(a, b)
    print(f"B vs A on {t['rows']} questions: {t['b_only']} won / {t['a_only']} lost, McNemar p = {t['p_value']:.2g}")


if __name__ == "__main__":
    main()
