"""The capability-transfer benchmark: does the student gain a skill from its teacher, and what
does each DANTE addition add over plain SFT on the same teacher text?

The demo's task and settings (configs/demo.yaml: reasoning-gym chain_sum with two terms of one
or two digits; settings chosen on the validation split, see BENCHMARKS.md): one teacher cache
from the train split, then students trained on it for the same steps and batch --

    sft             plain SFT: no CWCE weights, no TEA, no λ_CE schedule, shuffled order
    dante           the full DANTE loss (CWCE + TEA + λ_CE schedule + entropy curriculum)
    no-cwce         DANTE with one addition switched off, one at a time
    no-tea
    no-ce-schedule
    no-curriculum   (shuffled order instead of ascending entropy)
    sft-kd          plain SFT + token-level distillation from the cached teacher logprobs
                    (train.loss.token_kd, λ_KD = 1; sft-kd-0.3: λ_KD = 0.3)
    dante-kd        the full DANTE loss + token-level distillation (λ_KD = 1)

-- and the teacher, the student before and every student after are scored on the test split
(rg_chain_sum_2x2, 300 questions no train question equals). Reports accuracy with a 95% Wilson
interval, an exact McNemar test of each student against the student before and against SFT on
the paired questions, and one plot.

    .venv/bin/python bench/capability_transfer.py                          # ~35 min on 2 CPU cores
    .venv/bin/python bench/capability_transfer.py --split validation       # the same on the validation split
    .venv/bin/python bench/capability_transfer.py --prompts 24 --epochs 1 --settings sft,dante   # smoke run

Every stage resumes (cache records, finished students, finished evaluations are kept), so a
killed run continues where it stopped. Results: <out>/capability.md, .json and .png.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASKS = {"test": "rg_chain_sum_2x2", "validation": "rg_chain_sum_2x2_validation"}
TASK = TASKS["test"]
SFT_FLAGS = [
    "train.loss.cwce=false",
    "train.loss.tea=false",
    "train.loss.ce_schedule=false",
    "train.curriculum=shuffle",
]
SETTINGS: dict[str, list[str]] = {
    "sft": SFT_FLAGS,
    "dante": [],
    "no-cwce": ["train.loss.cwce=false"],
    "no-tea": ["train.loss.tea=false"],
    "no-ce-schedule": ["train.loss.ce_schedule=false"],
    "no-curriculum": ["train.curriculum=shuffle"],
    "sft-kd": [*SFT_FLAGS, "train.loss.token_kd=1.0"],
    "sft-kd-0.3": [*SFT_FLAGS, "train.loss.token_kd=0.3"],
    "dante-kd": ["train.loss.token_kd=1.0"],
}
DEFAULT_SETTINGS = ["sft", "dante", "no-cwce", "no-tea", "no-ce-schedule", "no-curriculum", "sft-kd", "dante-kd"]
LABELS = {
    "teacher": "teacher (Qwen2.5-Coder-0.5B-Instruct)",
    "base": "student before (SmolLM2-135M-Instruct)",
    "sft": "after plain SFT",
    "dante": "after DANTE (full)",
    "no-cwce": "DANTE without CWCE weights",
    "no-tea": "DANTE without TEA",
    "no-ce-schedule": "DANTE without the λ_CE schedule",
    "no-curriculum": "DANTE without the entropy curriculum",
    "sft-kd": "SFT + token-level KD (λ_KD 1)",
    "sft-kd-0.3": "SFT + token-level KD (λ_KD 0.3)",
    "dante-kd": "DANTE + token-level KD (λ_KD 1)",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--recipe", default=str(ROOT / "configs" / "demo.yaml"))
    ap.add_argument("--out", default=str(ROOT / "runs" / "capability"))
    ap.add_argument("--prompts", type=int, default=300, help="distillation prompts (the task's train split)")
    ap.add_argument("--epochs", type=float, default=2.0, help="passes over the cache")
    ap.add_argument("--batch", type=int, default=16, help="sequences per optimizer step")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--split", choices=sorted(TASKS), default="test", help="validation: for choosing settings")
    ap.add_argument("--settings", default=",".join(DEFAULT_SETTINGS), help=f"comma list from {', '.join(SETTINGS)}")
    ap.add_argument("--skip-teacher-eval", action="store_true", help="leave out the (slowest) teacher evaluation")
    ap.add_argument("overrides", nargs="*", help="extra dotted recipe overrides, e.g. teacher.max_new_tokens=64")
    return ap.parse_args(argv)


def task_of(args: argparse.Namespace) -> str:
    return TASKS[args.split]


def recipe_for(args: argparse.Namespace, *extra: str):
    from dante.config import load_recipe

    steps = max(1, math.ceil(args.epochs * args.prompts / args.batch))
    overrides = [
        f"output_dir={args.out}",
        f"prompts.limit={args.prompts}",
        "teacher.store_logprobs=20",  # the teacher's per-token top-20 for the token-level KD settings
        f"train.steps={steps}",
        f"train.batch_sequences={args.batch}",
        f"train.micro_batch_size={args.batch}",
        f"train.lr={args.lr}",
        f"train.warmup_steps={max(1, steps // 8)}",
        f"train.checkpoint_every={max(1, steps // 2)}",
        f"train.loss.ce_warmup_steps={max(1, steps // 10)}",
        f"train.loss.ce_ramp_end={steps}",
        "eval.suite=null",
        f"eval.tasks=[{task_of(args)}]",
        *args.overrides,
        *extra,
    ]
    return load_recipe(args.recipe, overrides)


def train_student(args: argparse.Namespace, name: str, flags: list[str]) -> Path:
    from dante.train.checkpoint import latest_checkpoint
    from dante.train.loop import train

    recipe = recipe_for(args, f"train.output_dir={Path(args.out) / ('student-' + name)}", *flags)
    if not (recipe.student_dir / "dante_manifest.json").is_file():
        print(train(recipe, resume=latest_checkpoint(recipe.student_dir) is not None), flush=True)
    return recipe.student_dir


def eval_dir(args: argparse.Namespace) -> Path:
    return Path(args.out) / ("eval" if args.split == "test" else f"eval-{args.split}")


def evaluate(args: argparse.Namespace, models: list[str]) -> None:
    from dante.eval.run import evaluate as run_eval

    todo = [m for m in models if not (eval_dir(args) / Path(m).name / "scores.json").is_file()]
    if todo:
        print(run_eval(recipe_for(args, f"eval.models=[{','.join(todo)}]", f"eval.output_dir={eval_dir(args)}")))


def folder_of(name: str) -> str:
    return name if name in ("teacher", "base") else f"student-{name}"


def summarise(args: argparse.Namespace, names: list[str], seconds: float) -> str:
    from dante.eval.scores import correct_by_doc, mcnemar_exact, read_scores

    task, edir = task_of(args), eval_dir(args)
    table, samples = {}, {}
    for name in names:
        path = edir / folder_of(name) / "scores.json"
        if not path.is_file():
            continue
        row = next(r for r in read_scores(path)["scores"] if r["task"] == task and r["metric"] == "exact_match")
        table[name] = {"accuracy": row["value"], "ci95": row["ci95"], "n": row["n_samples"]}
        samples[name] = correct_by_doc(edir / folder_of(name), task, "exact_match", "none")
    tests = {}
    refs = ("base", "sft", "dante")
    for name in names:
        for ref in refs:
            if name not in (ref, "teacher", "base") and name in samples and ref in samples:
                tests[f"{name} vs {ref}"] = mcnemar_exact(samples[ref], samples[name])
    lines = [
        f"| model | accuracy on {task} | 95% CI | n | vs before: won / lost, McNemar p | vs SFT: won / lost, p "
        "| vs DANTE: won / lost, p |",
        "|---|---:|---|---:|---|---|---|",
    ]
    for name, t in table.items():
        cells = []
        for ref in refs:
            m = tests.get(f"{name} vs {ref}")
            cells.append(f"{m['b_only']} / {m['a_only']}, p = {m['p_value']:.2g}" if m else "")
        lo, hi = t["ci95"]
        lines.append(
            f"| {LABELS[name]} | {t['accuracy']:.1%} | {lo:.1%}–{hi:.1%} | {t['n']} | {cells[0]} | {cells[1]} "
            f"| {cells[2]} |"
        )
    steps = max(1, math.ceil(args.epochs * args.prompts / args.batch))
    lines += [
        "",
        f"{args.prompts} distillation prompts (train split), {args.epochs:g} epochs = {steps} steps at {args.batch} "
        f"sequences/step, lr {args.lr:g}; scored on the {args.split} split; wall time {seconds / 60:.0f} min.",
    ]
    out = Path(args.out)
    suffix = "" if args.split == "test" else f"-{args.split}"
    (out / f"capability{suffix}.json").write_text(
        json.dumps({"args": vars(args), "scores": table, "mcnemar": tests, "wall_time_s": seconds}, indent=2)
    )
    plot(table, out / f"capability{suffix}.png", task)
    text = "\n".join(lines) + "\n"
    (out / f"capability{suffix}.md").write_text(text)
    return text


def plot(table: dict[str, dict], path: Path, task: str) -> None:
    """One bar per model with its 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(table)
    values = [100 * table[n]["accuracy"] for n in names]
    errors = [
        [v - 100 * table[n]["ci95"][0] for n, v in zip(names, values, strict=True)],
        [100 * table[n]["ci95"][1] - v for n, v in zip(names, values, strict=True)],
    ]
    colors = ["#888888" if n in ("teacher", "base") else ("#1f77b4" if n == "dante" else "#9ecae1") for n in names]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.barh([LABELS[n] for n in names], values, xerr=errors, color=colors, capsize=3)
    ax.invert_yaxis()
    ax.set_xlabel(f"accuracy on {task} (%), 95% Wilson interval")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [n for n in args.settings.split(",") if n]
    unknown = set(names) - set(SETTINGS)
    if unknown:
        raise SystemExit(f"unknown settings {sorted(unknown)}; from {', '.join(SETTINGS)}")
    t0 = time.perf_counter()
    from dante.cache.run import run_cache

    print(run_cache(recipe_for(args)), flush=True)
    students = {name: train_student(args, name, SETTINGS[name]) for name in names}
    models = ([] if args.skip_teacher_eval else ["teacher"]) + ["base"] + [str(p) for p in students.values()]
    evaluate(args, models)
    order = ([] if args.skip_teacher_eval else ["teacher"]) + ["base"] + names
    print(summarise(args, order, time.perf_counter() - t0))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    sys.exit(main())
