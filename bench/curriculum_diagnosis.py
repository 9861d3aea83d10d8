"""Why the card's entropy curriculum hurts on chain_sum (BENCHMARKS section 6): what the teacher's
entropy sorts the records by, and what the students trained in each order get right.

For each replicate of bench/capability_transfer.py it prints (1) the cache in entropy quintiles,
easy to hard as the card's curriculum visits them: the entropy range, how often the teacher's
answer is right (checked against reasoning-gym's gold answer here, for the diagnosis only: training
never reads it), and the problem types in the quintile; (2) each student's validation accuracy
by problem type (addition, subtraction with a result ≥ 0, subtraction with a negative result).

    .venv/bin/python bench/curriculum_diagnosis.py --replicates 1,2,3 --students sft,dante,dante-batches
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}
KINDS = ("addition", "subtraction, ≥ 0", "subtraction, negative")


def kind(question: str, answer: str) -> str:
    if " + " in question:
        return "addition"
    return "subtraction, negative" if answer.startswith("-") else "subtraction, ≥ 0"


def quintiles(out: Path, replicate: int) -> list[str]:
    from dante.cache.records import read_cache
    from dante.procedural import generate, score

    items = {it.question: it for it in generate("chain_sum", "train", 300, seed=replicate - 1, settings=SETTINGS)}
    records = sorted(read_cache(out / f"r{replicate}" / "cache"), key=lambda r: (r.output_entropy, r.id))
    size = len(records) // 5
    lines = [
        f"replicate {replicate}: {len(records)} cache records in the card's order, by fifths",
        "| fifth | entropy (nats) | teacher right | addition | subtraction ≥ 0 | subtraction < 0 |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for k in range(5):
        part = records[k * size : (k + 1) * size if k < 4 else len(records)]
        golds = [items[r.prompt].answer for r in part]
        right = sum(score("chain_sum", r.teacher_text, g, settings=SETTINGS) >= 1 for r, g in zip(part, golds))
        kinds = [kind(r.prompt, g) for r, g in zip(part, golds)]
        shares = " | ".join(f"{kinds.count(k_) / len(kinds):.0%}" for k_ in KINDS)
        lines.append(
            f"| {k + 1} | {part[0].output_entropy:.2f}–{part[-1].output_entropy:.2f} | {right / len(part):.0%} "
            f"| {shares} |"
        )
    return lines


def by_type(out: Path, replicates: list[int], students: list[str]) -> list[str]:
    """Validation accuracy per problem type, summed over replicates."""
    task = "rg_chain_sum_2x2_validation"
    lines = [
        f"validation accuracy by problem type, {len(replicates)} replicate(s) pooled",
        "| student | addition | subtraction ≥ 0 | subtraction < 0 |",
        "|---|---:|---:|---:|",
    ]
    for name in students:
        hits: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for r in replicates:
            path = out / f"r{r}" / "eval-validation" / f"student-{name}" / f"samples_{task}.jsonl"
            if not path.is_file():
                continue
            for line in path.read_text().splitlines():
                if not line.strip():
                    continue
                row = json.loads(line)
                cell = hits[kind(row["doc"]["question"], row["doc"]["answer"])]
                cell[0] += int(row["exact_match"] >= 1)
                cell[1] += 1
        cells = [f"{hits[k][0] / hits[k][1]:.0%} ({hits[k][1]})" if hits[k][1] else "—" for k in KINDS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "runs" / "capability-chain_sum"))
    p.add_argument("--replicates", default="1,2,3")
    p.add_argument("--students", default="sft,dante,dante-batches,dante-reversed,dante-competence")
    args = p.parse_args()
    out, reps = Path(args.out), [int(r) for r in args.replicates.split(",")]
    for r in reps:
        print("\n".join(quintiles(out, r)) + "\n")
    print("\n".join(by_type(out, reps, args.students.split(","))))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    main()
