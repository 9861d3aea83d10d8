"""The hf teacher's decoding schedules side by side (issue 48): ``teacher.hf.schedule: batch``
(``generate`` batch by batch, each batch until its longest row ends) against ``refill`` (a
finished row leaves at once and a waiting prompt takes its place).

    .venv/bin/python bench/teacher_schedule.py --recipe configs/reasoning.yaml --limit 64 --rounds 2
    .venv/bin/python bench/teacher_schedule.py --stage eval --recipe configs/reasoning.yaml --limit 64 \
        --task rg_chain_sum_3x2_validation --model teacher     # the evaluation's generation (eval.schedule)

Each round writes the recipe's cache once per schedule, in its own process (``dante cache run``,
threads pinned, under /usr/bin/time), the schedules interleaved and their order alternated; the
ratio is batch seconds / refill seconds within a round. Reported beside it: generated tokens,
``dante cache validate``, how many texts and answers the two schedules share (greedy either way:
they differ only where a row's padding changes the kernels' rounding), peak memory. With
``--stage eval`` each round runs ``dante eval`` on one model and task instead (``eval.schedule``),
and reports its accuracy and how many logged responses the schedules share.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_result  # noqa: E402
from teacher_llamacpp import LIMIT, compare, run_cache, summary, timed_dante  # noqa: E402

SCHEDULES = ("batch", "refill")


def run_eval(args: argparse.Namespace, folder: Path, schedule: str) -> dict[str, Any]:
    """``dante eval`` of one model on one task (``timed_dante``), and its primary score."""
    import shutil

    if folder.exists():
        shutil.rmtree(folder)
    overrides = [f"eval.models=[{args.model}]", f"eval.tasks=[{args.task}]", "eval.suite=null"]
    overrides += [f"eval.output_dir={folder}", f"eval.schedule={schedule}", f"eval.limit={args.limit}"]
    seconds, peak = timed_dante(["eval", args.recipe, *overrides], args.threads)
    scores = json.loads((folder / args.model / "scores.json").read_text())["scores"]
    primary = next(r for r in scores if r["primary"])
    return {"seconds": round(seconds, 1), "peak_mib": peak, "accuracy": primary["value"]}


def responses(folder: Path, model: str, task: str) -> dict[int, str]:
    lines = (folder / model / f"samples_{task}.jsonl").read_text().splitlines()
    return {json.loads(x)["doc_id"]: json.loads(x)["resps"][0][0] for x in lines}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", default="configs/reasoning.yaml")
    ap.add_argument("--limit", type=int, default=None, help="the recipe's first N prompts only (prompts.limit)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--stage", choices=["cache", "eval"], default="cache")
    ap.add_argument("--model", default="teacher", help="--stage eval: the model evaluated")
    ap.add_argument("--task", default="rg_chain_sum_3x2_validation", help="--stage eval: the task")
    ap.add_argument("--out", type=Path, default=Path("/tmp/dante-teacher-schedule"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.limit and args.stage == "cache":
        LIMIT.append(f"prompts.limit={args.limit}")
    rounds: list[dict[str, Any]] = []
    for k in range(args.rounds):
        order = SCHEDULES if k % 2 == 0 else SCHEDULES[::-1]
        done: dict[str, Any] = {}
        for schedule in order:
            folder = args.out / f"r{k}-{schedule}"
            if args.stage == "eval":
                done[schedule] = run_eval(args, folder, schedule)
            else:
                run = run_cache(args.recipe, folder, [f"teacher.hf.schedule={schedule}"], args.threads)
                done[schedule] = {**run, **summary(folder, run["seconds"])}
            print(f"round {k + 1} {schedule}: {done[schedule]}", flush=True)
        done["batch_over_refill"] = round(done["batch"]["seconds"] / done["refill"]["seconds"], 3)
        if args.stage == "eval":
            a, b = (responses(args.out / f"r{k}-{s}", args.model, args.task) for s in SCHEDULES)
            done["agreement"] = {"responses_compared": len(a), "same_response": sum(a[i] == b.get(i) for i in a)}
        else:
            done["agreement"] = compare(args.out / f"r{k}-batch", args.out / f"r{k}-refill")
        print(f"round {k + 1}: batch / refill {done['batch_over_refill']}, {done['agreement']}", flush=True)
        rounds.append(done)
    result = {
        "machine": machine(),
        "recipe": args.recipe,
        "stage": args.stage,
        **({"model": args.model, "task": args.task} if args.stage == "eval" else {}),
        "limit": args.limit,
        "threads": args.threads,
        "command": shlex.join(["python", "bench/teacher_schedule.py", *(argv if argv is not None else sys.argv[1:])]),
        "rounds": rounds,
        "median_batch_over_refill": statistics.median(r["batch_over_refill"] for r in rounds),
    }
    write_result(result, args.json)


if __name__ == "__main__":
    main()
