"""Step by step: how often each written step of a model's working is right (BENCHMARKS 6i).

    .venv/bin/python bench/reasoning_steps.py runs/capability-reasoning/r1/eval-test/student-think-keep-long \\
        runs/capability-reasoning/eval-test/teacher --task rg_chain_sum_3x2

Reads the generations dante eval keeps as written (``generations_<task>.jsonl``, thinking
included), finds each ``a ± b = c`` line of the thinking and checks its arithmetic: per model, how
many steps it wrote, the share of responses whose first, second, and first two steps hold, each
operation's steps right, and the thinking's mean length (a length collapse shows there).
``--compare``: question by question, the first model against each other one (corrected, broken,
still wrong; an example of each), from generations kept with their doc ids.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

STEP = re.compile(r"(-?\d+)\s*([+-])\s*(-?\d+)\s*=\s*(-?\d+)")


def thinking_of(text: str) -> str:
    """The thinking block (``dante.teacher.reasoning.split_inline``), or the whole text without one."""
    from dante.teacher.reasoning import split_inline

    thinking = split_inline(text).reasoning
    return text if thinking is None else thinking


def step_ops(text: str) -> list[tuple[str, bool]]:
    """(operation, right) of each ``a ± b = c`` step of the thinking, in order."""
    return steps_in(thinking_of(text))


def steps_in(thinking: str) -> list[tuple[str, bool]]:
    return [
        (op, (int(a) + int(b) if op == "+" else int(a) - int(b)) == int(c)) for a, op, b, c in STEP.findall(thinking)
    ]


def both_right(steps: list[bool]) -> bool:
    """The first two steps written, both right."""
    return len(steps) > 1 and steps[0] and steps[1]


def steps_of(text: str) -> list[bool]:
    """Whether each arithmetic step of the thinking (the whole text when it has no thinking block)
    is right, in order."""
    return [ok for _, ok in step_ops(text)]


def read(folder: Path, task: str) -> list[dict]:
    """The model's kept generations (``generations_<task>.jsonl``), each with its steps and the
    length of its thinking (None without a thinking block)."""
    from dante.teacher.reasoning import split_inline

    path = folder / f"generations_{task}.jsonl"
    if not path.is_file():
        raise SystemExit(f"{path}: not found (dante eval writes it when eval.think_end_token is set)")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    for row in rows:
        reasoning = split_inline(row["text"]).reasoning
        row["steps"] = steps_in(row["text"] if reasoning is None else reasoning)
        row["thinking_chars"] = None if reasoning is None else len(reasoning)
    return rows


def summary(rows: list[dict]) -> dict:
    """Steps written, step 1 / step 2 / both right, each operation's steps right, thinking length."""
    n = len(rows)
    steps = [[ok for _, ok in r["steps"]] for r in rows]
    by_op = {op: [ok for r in rows for o, ok in r["steps"] if o == op] for op in "+-"}
    lengths = [r["thinking_chars"] for r in rows if r["thinking_chars"] is not None]
    return {
        "responses": n,
        "written": dict(sorted(Counter(len(s) for s in steps).items())),
        "step1": sum(bool(s) and s[0] for s in steps) / n,
        "step2": sum(len(s) > 1 and s[1] for s in steps) / n,
        "both": sum(both_right(s) for s in steps) / n,
        "by_op": {op: (sum(v) / len(v) if v else None, len(v)) for op, v in by_op.items()},
        "thinking_chars": sum(lengths) / len(lengths) if lengths else None,
    }


def compare(before: list[dict], after: list[dict]) -> dict:
    """Per question (both files need doc ids: dante eval writes them since issue 49): responses
    whose two steps went from wrong to right (corrected), right to wrong (broken), or stayed
    wrong, with one example of each."""
    if not all("doc_id" in r for r in before + after):
        raise SystemExit("--compare needs generations with doc ids (evaluate again with this dante)")
    a, b = {r["doc_id"]: r for r in before}, {r["doc_id"]: r for r in after}

    def right(r: dict) -> bool:
        return both_right([ok for _, ok in r["steps"]])

    kinds: dict[str, list[int]] = {"corrected": [], "broken": [], "still wrong": [], "still right": []}
    for doc in sorted(set(a) & set(b)):
        x, y = right(a[doc]), right(b[doc])
        kinds[
            "corrected" if y and not x else "broken" if x and not y else "still right" if x else "still wrong"
        ].append(doc)
    return {
        k: {"count": len(docs), "example": docs and {"before": a[docs[0]]["text"], "after": b[docs[0]]["text"]}}
        for k, docs in kinds.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", type=Path, help="model folders written by dante eval")
    ap.add_argument("--task", required=True)
    ap.add_argument("--compare", action="store_true", help="question by question: the first model against each other")
    args = ap.parse_args()
    print(
        "| model | responses | steps written | step 1 right | step 2 right | both | + steps right | − steps right "
        "| thinking (chars) |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    read_rows = {}
    for folder in args.models:
        rows = read_rows[folder] = read(folder, args.task)
        s = summary(rows)
        ops = {op: f"{v:.1%} ({k})" if v is not None else "" for op, (v, k) in s["by_op"].items()}
        chars = f"{s['thinking_chars']:.1f}" if s["thinking_chars"] is not None else ""
        written = ", ".join(f"{k} ({v})" for k, v in s["written"].items())
        print(
            f"| {folder} | {s['responses']} | {written} | {s['step1']:.1%} | {s['step2']:.1%} | {s['both']:.1%} | "
            f"{ops['+']} | {ops['-']} | {chars} |"
        )
    if args.compare:
        first = args.models[0]
        for other in args.models[1:]:
            found = compare(read_rows[first], read_rows[other])
            print(f"\n{first} -> {other}: " + ", ".join(f"{k} {v['count']}" for k, v in found.items()))
            for kind in ("corrected", "broken", "still wrong"):
                ex = found[kind]["example"]
                if ex:
                    print(f"- {kind}: before {ex['before']!r}\n  after  {ex['after']!r}")


if __name__ == "__main__":
    main()
