"""Step by step: how often each written step of a model's working is right (BENCHMARKS 6i).

    .venv/bin/python bench/reasoning_steps.py runs/capability-reasoning/r1/eval-test/student-think-keep-long \\
        runs/capability-reasoning/eval-test/teacher --task rg_chain_sum_3x2

Reads the generations dante eval keeps as written (``generations_<task>.jsonl``, thinking
included), finds each ``a ± b = c`` line of the thinking and checks its arithmetic: per model, how
many steps it wrote, and the share of responses whose first, second, and first two steps hold.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

STEP = re.compile(r"(-?\d+)\s*([+-])\s*(-?\d+)\s*=\s*(-?\d+)")


def steps_of(text: str) -> list[bool]:
    """Whether each arithmetic step of the thinking (``dante.teacher.reasoning.split_inline``; the
    whole text when it has no thinking block) is right, in order."""
    from dante.teacher.reasoning import split_inline

    thinking = split_inline(text).reasoning
    thinking = text if thinking is None else thinking
    return [(int(a) + int(b) if op == "+" else int(a) - int(b)) == int(c) for a, op, b, c in STEP.findall(thinking)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", type=Path, help="model folders written by dante eval")
    ap.add_argument("--task", required=True)
    args = ap.parse_args()
    for folder in args.models:
        path = folder / f"generations_{args.task}.jsonl"
        if not path.is_file():
            raise SystemExit(f"{path}: not found (dante eval writes it when eval.think_end_token is set)")
        rows = [steps_of(json.loads(line)["text"]) for line in path.read_text(encoding="utf-8").splitlines()]
        n = len(rows)
        first = sum(bool(r) and r[0] for r in rows) / n
        second = sum(len(r) > 1 and r[1] for r in rows) / n
        both = sum(len(r) > 1 and r[0] and r[1] for r in rows) / n
        written = dict(sorted(Counter(len(r) for r in rows).items()))
        print(
            f"{folder}: {n} responses, steps written {written}; step 1 right {first:.1%}, "
            f"step 2 right {second:.1%}, both {both:.1%}"
        )


if __name__ == "__main__":
    main()
