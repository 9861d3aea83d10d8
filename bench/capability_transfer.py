"""The capability-transfer experiment (issue 5, part 4): does the student gain from the teacher,
and do the DANTE additions help over plain SFT on the same teacher text?

One teacher cache (configs/demo.yaml at a larger size), two students trained on it for the same
steps and batch -- plain SFT (no CWCE weights, no TEA, no λ_CE schedule, shuffled order) and the
full DANTE loss -- then teacher, student before, and both students after are scored on the same
held-out GSM8K rows (gsm8k_local_chat_heldout, rows 600-1318). Reports accuracy with its sample
size and a 95% Wilson interval, and an exact McNemar test of DANTE vs SFT on the paired rows.

    .venv/bin/python bench/capability_transfer.py                       # ~1 h on 2 CPU cores
    .venv/bin/python bench/capability_transfer.py --prompts 24 --eval-rows 16 --epochs 1   # smoke run

Every stage resumes (cache records, finished students, finished evaluations are kept), so a
killed run continues where it stopped. Results: <out>/capability.md and <out>/capability.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASK = "gsm8k_local_chat_heldout"
SFT_FLAGS = [
    "train.loss.cwce=false",
    "train.loss.tea=false",
    "train.loss.ce_schedule=false",
    "train.curriculum=shuffle",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--recipe", default=str(ROOT / "configs" / "demo.yaml"))
    ap.add_argument("--out", default=str(ROOT / "runs" / "capability"))
    ap.add_argument("--prompts", type=int, default=160, help="distillation prompts (GSM8K rows 0-599)")
    ap.add_argument("--eval-rows", type=int, default=150, help="held-out rows scored (from row 600 on)")
    ap.add_argument("--epochs", type=float, default=2.0, help="passes over the cache")
    ap.add_argument("--batch", type=int, default=8, help="sequences per optimizer step")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument(
        "--max-new-tokens",
        type=int,
        default=384,
        help="teacher completion cap and eval generation cap (the demo's 256 cuts about half the teacher's solutions)",
    )
    ap.add_argument("--skip-teacher-eval", action="store_true", help="leave out the (slowest) teacher evaluation")
    ap.add_argument("overrides", nargs="*", help="extra dotted recipe overrides, e.g. teacher.max_new_tokens=192")
    return ap.parse_args(argv)


def recipe_for(args: argparse.Namespace, *extra: str):
    from dante.config import load_recipe

    steps = max(1, math.ceil(args.epochs * args.prompts / args.batch))
    overrides = [
        f"output_dir={args.out}",
        f"prompts.limit={args.prompts}",
        f"eval.limit={args.eval_rows}",
        f"train.steps={steps}",
        f"train.batch_sequences={args.batch}",
        f"train.lr={args.lr}",
        f"train.warmup_steps={max(1, steps // 10)}",
        f"train.checkpoint_every={max(1, steps // 2)}",
        f"train.loss.ce_warmup_steps={max(1, steps // 10)}",
        f"train.loss.ce_ramp_end={steps}",
        f"teacher.max_new_tokens={args.max_new_tokens}",
        f"eval.max_gen_toks={args.max_new_tokens}",
        f"train.max_length={args.max_new_tokens + 256}",
        "eval.suite=null",
        f"eval.tasks=[{TASK}]",
        *args.overrides,
        *extra,
    ]
    return load_recipe(args.recipe, overrides)


def train_student(args: argparse.Namespace, name: str, flags: list[str]) -> Path:
    from dante.train.checkpoint import latest_checkpoint
    from dante.train.loop import train

    recipe = recipe_for(args, f"train.output_dir={Path(args.out) / name}", *flags)
    if not (recipe.student_dir / "dante_manifest.json").is_file():
        print(train(recipe, resume=latest_checkpoint(recipe.student_dir) is not None), flush=True)
    return recipe.student_dir


def evaluate(args: argparse.Namespace, models: list[str]) -> None:
    from dante.eval.run import evaluate as run_eval

    todo = [m for m in models if not (Path(args.out) / "eval" / Path(m).name / "scores.json").is_file()]
    if todo:
        print(run_eval(recipe_for(args, f"eval.models=[{','.join(todo)}]")), flush=True)


def flexible_samples(model_dir: Path) -> list[dict]:
    """lm-eval's per-sample records of the task, one per row (the flexible-extract filter's copy)."""
    rows = [json.loads(line) for line in (model_dir / f"samples_{TASK}.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("filter") == "flexible-extract"]


def correct_by_row(model_dir: Path) -> dict[int, bool]:
    """Per held-out row: was the flexible-extract answer right."""
    return {int(s["doc"]["row"]): bool(s["exact_match"]) for s in flexible_samples(model_dir)}


def boxed_rate(model_dir: Path) -> float:
    """Share of generations that give an answer in \\boxed{} (the teacher's format), any value."""
    outs = [r["resps"][0][0] for r in flexible_samples(model_dir)]
    return sum("\\boxed{" in o for o in outs) / max(1, len(outs))


def mcnemar_exact(a: dict[int, bool], b: dict[int, bool]) -> dict[str, float]:
    """Exact two-sided McNemar test on the rows both models answered: b wins vs a wins."""
    rows = sorted(set(a) & set(b))
    b_only = sum(b[r] and not a[r] for r in rows)
    a_only = sum(a[r] and not b[r] for r in rows)
    n = a_only + b_only
    tail = sum(math.comb(n, k) for k in range(0, min(a_only, b_only) + 1)) / 2**n if n else 1.0
    return {"rows": len(rows), "b_only": b_only, "a_only": a_only, "p_value": min(1.0, 2 * tail)}


def summarise(args: argparse.Namespace, labels: dict[str, str], seconds: float) -> str:
    from dante.eval.scores import read_scores

    eval_dir = Path(args.out) / "eval"
    lines = [
        "| model | accuracy (flexible-extract) | 95% CI | strict-match (\\boxed{N}) | answers in \\boxed{} | n |",
        "|---|---:|---|---:|---:|---:|",
    ]
    table = {}
    for folder, label in labels.items():
        path = eval_dir / folder / "scores.json"
        if not path.is_file():
            continue
        rows = {(r["metric"], r["filter"]): r for r in read_scores(path)["scores"] if r["task"] == TASK}
        flex, strict = rows[("exact_match", "flexible-extract")], rows[("exact_match", "strict-match")]
        boxed = boxed_rate(eval_dir / folder)
        table[label] = {
            "flexible": flex["value"],
            "ci95": flex["ci95"],
            "strict": strict["value"],
            "boxed": boxed,
            "n": flex["n_samples"],
        }
        lo, hi = flex["ci95"]
        lines.append(
            f"| {label} | {flex['value']:.3f} | {lo:.3f}–{hi:.3f} | {strict['value']:.3f} | {boxed:.2f} | "
            f"{flex['n_samples']} |"
        )
    samples = {
        f: correct_by_row(eval_dir / f)
        for f in ("base", "student-sft", "student-dante")
        if (eval_dir / f / f"samples_{TASK}.jsonl").is_file()
    }
    tests = {}
    for a, b, a_name, b_name in (
        ("student-sft", "student-dante", "SFT", "DANTE"),
        ("base", "student-sft", "before", "SFT"),
        ("base", "student-dante", "before", "DANTE"),
    ):
        if a in samples and b in samples:
            t = tests[f"{b_name} vs {a_name}"] = mcnemar_exact(samples[a], samples[b])
            lines += [
                "",
                f"{b_name} vs {a_name} on the same {t['rows']} rows: {b_name} right and {a_name} wrong on "
                f"{t['b_only']}, the reverse on {t['a_only']}; exact McNemar p = {t['p_value']:.3f}.",
            ]
    lines += [
        "",
        f"Prompts {args.prompts} (GSM8K rows 0-599), held-out rows {args.eval_rows} (from row 600), "
        f"{args.epochs:g} epochs at {args.batch} sequences/step, lr {args.lr:g}; wall time {seconds / 60:.0f} min.",
    ]
    out = Path(args.out)
    (out / "capability.json").write_text(
        json.dumps(
            {"args": vars(args), "scores": table, "mcnemar": tests, "wall_time_s": seconds}, indent=2, default=str
        )
    )
    text = "\n".join(lines) + "\n"
    (out / "capability.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    from dante.cache.run import run_cache

    print(run_cache(recipe_for(args)), flush=True)
    sft = train_student(args, "student-sft", SFT_FLAGS)
    dante = train_student(args, "student-dante", [])
    models = ([] if args.skip_teacher_eval else ["teacher"]) + ["base", str(sft), str(dante)]
    evaluate(args, models)
    labels = {
        "teacher": "teacher (Qwen2.5-Coder-0.5B-Instruct)",
        "base": "student before (SmolLM2-135M-Instruct)",
        "student-sft": "student after plain SFT",
        "student-dante": "student after DANTE",
    }
    print(summarise(args, labels, time.perf_counter() - t0))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    sys.exit(main())
