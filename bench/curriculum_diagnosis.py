"""Why the card's entropy curriculum hurts (BENCHMARKS sections 6e and 6g): what the teacher's
entropy sorts the records by, and what the students trained in each order get right.

For each replicate of bench/capability_transfer.py it prints (1) the cache in entropy quintiles,
easy to hard as the card's curriculum visits them: the entropy range, how often the teacher's
answer is right (checked against reasoning-gym's gold answer here, for the diagnosis only: training
never reads it), and the problem types in the quintile; (2) each student's accuracy on a split by
problem type. The types: on chain_sum addition, subtraction with a result ≥ 0 and with a negative
result; on products the factors' length (1 or 2 digits).

    .venv/bin/python bench/curriculum_diagnosis.py --replicates 1,2,3 --students sft,dante,dante-batches
    .venv/bin/python bench/curriculum_diagnosis.py --task products --split test --students sft,sft-cwce,dante
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import capability_transfer as capability  # noqa: E402  (the tasks: recipes and lm-eval names)


def chain_sum_kind(question: str, answer: str) -> str:
    if " + " in question:
        return "addition"
    return "subtraction, negative" if answer.startswith("-") else "subtraction, ≥ 0"


def operations_kind(question: str, answer: str) -> str:
    """The operators of a chain of three terms, in order ("+ then −"): which steps the working has."""
    ops = re.findall(r"\d+ ([+-]) (?=\d)", question)
    if len(ops) != 2:
        raise ValueError(f"not a chain of three terms: {question!r}")
    name = {"+": "+", "-": "−"}
    return f"{name[ops[0]]} then {name[ops[1]]}"


def products_kind(question: str, answer: str) -> str:
    """reasoning-gym's products draws every factor of a question with the same number of digits."""
    factors = re.search(r"(\d+) \* (\d+)", question)
    if factors is None or len({len(f) for f in factors.groups()}) != 1:
        raise ValueError(f"not a product of two factors of the same length: {question!r}")
    return f"{len(factors.group(1))}-digit factors"


@dataclass(frozen=True)
class Task:
    """A task's problem types; its recipe and lm-eval tasks are the capability bench's."""

    kinds: tuple[str, ...]
    kind: Callable[[str, str], str]  # (question, gold answer) -> one of kinds
    generator: str | None = None  # the reasoning-gym task, when the bench's name is not it


TASKS = {
    "chain_sum": Task(("addition", "subtraction, ≥ 0", "subtraction, negative"), chain_sum_kind),
    "products": Task(("1-digit factors", "2-digit factors"), products_kind),
    "reasoning": Task(("+ then +", "+ then −", "− then +", "− then −"), operations_kind, generator="chain_sum"),
}


def generator_settings(name: str) -> dict:
    """The reasoning-gym settings the task's recipe draws its prompts with (prompts.task_settings)."""
    from dante.config import load_recipe

    return dict(load_recipe(ROOT / capability.TASKS[name].recipe).prompts.task_settings or {})


def quintiles(name: str, out: Path, replicate: int) -> list[str]:
    from dante.cache.records import read_cache
    from dante.procedural import generate, score
    from dante.train.objective.losses import cwce_weight

    task, settings = TASKS[name], generator_settings(name)
    rg = task.generator or name
    records = sorted(read_cache(out / f"r{replicate}" / "cache"), key=lambda r: (r.output_entropy, r.id))
    items = {it.question: it for it in generate(rg, "train", len(records), seed=replicate - 1, settings=settings)}
    size = len(records) // 5
    lines = [
        f"replicate {replicate}: {len(records)} cache records in the card's order, by fifths",
        "| fifth | entropy (nats) | w(H) | teacher right | " + " | ".join(task.kinds) + " |",
        "|---|---|---|---:|" + "---:|" * len(task.kinds),
    ]
    for k in range(5):
        part = records[k * size : (k + 1) * size if k < 4 else len(records)]
        golds = [items[r.prompt].answer for r in part]
        right = sum(score(rg, r.teacher_text, g, settings=settings) >= 1 for r, g in zip(part, golds))
        kinds = [task.kind(r.prompt, g) for r, g in zip(part, golds)]
        shares = " | ".join(f"{kinds.count(k_) / len(kinds):.0%}" for k_ in task.kinds)
        low, high = part[0].output_entropy, part[-1].output_entropy
        lines.append(
            f"| {k + 1} | {low:.2f}–{high:.2f} | {cwce_weight(low):.2f}–{cwce_weight(high):.2f} "
            f"| {right / len(part):.0%} | {shares} |"
        )
    return lines


def by_type(name: str, out: Path, split: str, replicates: list[int], students: list[str]) -> list[str]:
    """Accuracy on ``split`` per problem type, summed over replicates."""
    task = TASKS[name]
    lm_eval = capability.TASKS[name].test if split == "test" else capability.TASKS[name].validation
    lines = [
        f"{split} accuracy by problem type, {len(replicates)} replicate(s) pooled",
        "| student | " + " | ".join(task.kinds) + " |",
        "|---|" + "---:|" * len(task.kinds),
    ]
    for student in students:
        hits: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for r in replicates:
            path = out / f"r{r}" / f"eval-{split}" / f"student-{student}" / f"samples_{lm_eval}.jsonl"
            if not path.is_file():
                continue
            for line in path.read_text().splitlines():
                if not line.strip():
                    continue
                row = json.loads(line)
                cell = hits[task.kind(row["doc"]["question"], row["doc"]["answer"])]
                cell[0] += int(row["exact_match"] >= 1)
                cell[1] += 1
        cells = [f"{hits[k][0] / hits[k][1]:.0%} ({hits[k][1]})" if hits[k][1] else "—" for k in task.kinds]
        lines.append(f"| {student} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=sorted(TASKS), default="chain_sum")
    p.add_argument("--out", default=None, help="default: runs/capability-<task>")
    p.add_argument("--split", choices=["test", "validation"], default="validation", help="the students' scores")
    p.add_argument("--replicates", default="1,2,3")
    p.add_argument("--students", default="sft,dante,dante-batches,dante-reversed,dante-competence")
    args = p.parse_args()
    out = Path(args.out or ROOT / "runs" / f"capability-{args.task}")
    reps = [int(r) for r in args.replicates.split(",")]
    for r in reps:
        print("\n".join(quintiles(args.task, out, r)) + "\n")
    print("\n".join(by_type(args.task, out, args.split, reps, args.students.split(","))))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    main()
