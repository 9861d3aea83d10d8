"""Training throughput of this checkout against an earlier revision, interleaved in one run: the
check that a change (a refactor, say) left `dante train` as fast as it was.

    .venv/bin/python bench/train_ab.py --base aa570d9 --model smollm2 --rounds 3

The base revision is checked out with `git worktree` into a temporary folder. Each round runs
`bench/train_throughput.py --settings dante --repeats 1` once per tree, in alternating order
(A B, B A, ...), each tree with its own bench script and its own `src/` first on PYTHONPATH, on
one shared workload folder (identical records and student). Prints tokens/s per run and the
median of the per-round ratios this/base; ``--json`` keeps them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_tree(tree: Path, args, workdir: Path, out: Path) -> float:
    """One `dante` setting of train_throughput.py in ``tree``; its non-padding tokens/s."""
    cmd = [
        sys.executable,
        str(tree / "bench" / "train_throughput.py"),
        "--model",
        args.model,
        "--settings",
        "dante",
        "--repeats",
        "1",
        "--no-memory",
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--threads",
        str(args.threads),
        "--workdir",
        str(workdir),
        "--json",
        str(out),
    ]
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    subprocess.run(cmd, cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)
    report = json.loads(out.read_text())["models"][args.model]
    if "skipped" in report:
        raise SystemExit(f"{args.model} skipped: {report['skipped']}")
    return report["summary"]["tokens_per_s"]["dante"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--base", required=True, help="the git revision to compare against (e.g. a commit before the change)"
    )
    p.add_argument("--model", default="smollm2", help="tiny or smollm2 (train_throughput.py --model)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="write the runs and ratios here")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="dante-ab-") as tmp:
        base = Path(tmp) / "base"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.base],
            check=True,
            capture_output=True,
        )
        try:
            trees = {"this": ROOT, "base": base}
            workdir = Path(tmp) / "workload"
            runs: dict[str, list[float]] = {"this": [], "base": []}
            for r in range(args.rounds):
                for name in ["this", "base"] if r % 2 == 0 else ["base", "this"]:
                    tps = run_tree(trees[name], args, workdir, Path(tmp) / f"{name}-{r}.json")
                    runs[name].append(tps)
                    print(f"round {r + 1}/{args.rounds} {name:<5} {tps:8.1f} tokens/s", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], capture_output=True)
    ratios = [a / b for a, b in zip(runs["this"], runs["base"], strict=True)]
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print(
        f"this ({head}) / base ({args.base}): per round "
        + " / ".join(f"{x:.3f}" for x in ratios)
        + f"; median {statistics.median(ratios):.3f}"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"base": args.base, "head": head, "runs": runs, "ratios": ratios}, indent=1)
        )


if __name__ == "__main__":
    main()
