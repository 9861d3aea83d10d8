"""What an on-policy step costs on CPU, split into its parts: the student writing its samples,
the teacher scoring them, and the update (their forward and backward), against an off-policy SFT
step of the same batch; then the same on-policy steps again with the score cache warm (the same
seed writes the same samples, so every score is read back instead of asked).

The demo's pair and task: teacher Qwen2.5-Coder-0.5B-Instruct, student SmolLM2-135M-Instruct
warm-started from the SFT student of the capability benchmark (bench/capability_transfer.py,
replicate 1, which also provides the teacher cache), 16 sequences a step, with the on-policy
setting chosen on validation there (sft-op-dense: the dense reverse KL on the teacher's top-20).

    .venv/bin/python bench/on_policy_cost.py                 # ~10 min, 1 thread
    .venv/bin/python bench/on_policy_cost.py --steps 8 --threads 2

Each setting is a fresh `dante train` run of ``--steps`` steps; the first step is not timed, the
rest are reported as medians. The runs go one after another (sft, cold, warm), so run it on an
otherwise idle machine: the ratios assume the load did not change between them.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import set_threads, thread_arg  # noqa: E402

if __name__ == "__main__":
    set_threads(thread_arg())

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def run(args, name: str, extra: list[str], scores_from: Path | None = None) -> list[dict]:
    """One training run; its metrics rows (step > 1)."""
    from dante.config import load_recipe
    from dante.train.loop import train

    out = Path(args.out) / name
    shutil.rmtree(out, ignore_errors=True)
    if scores_from is not None:  # the cold run's score cache: the same samples are read back
        shutil.copytree(scores_from, out / "on_policy_scores")
    base = Path(args.capability) / "r1"
    recipe = load_recipe(
        ROOT / "configs" / "demo.yaml",
        [
            f"output_dir={base}",
            f"cache.dir={base / 'cache'}",
            f"train.output_dir={out}",
            f"train.steps={args.steps}",
            "train.batch_sequences=16",
            "train.micro_batch_size=16",
            "train.checkpoint_every=1000",
            "train.loss.cwce.weighted=false",
            "train.loss.tea.enabled=false",
            "train.loss.cwce.schedule=false",
            "train.curriculum=shuffle",
            "train.seed=1",
            f"train.on_policy.warm_start={base / 'student-sft'}",
            *extra,
        ],
    )
    result = train(recipe)
    rows = [json.loads(x) for x in result.metrics_path.read_text().splitlines() if x.strip()]
    rows = [r for r in rows if "loss" in r]
    for prev, row in zip(rows, rows[1:], strict=False):
        row["step_s"] = (row["tokens"] - prev["tokens"]) / row["tokens_per_s"]
    return rows[1:]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--capability", default=str(ROOT / "runs" / "capability-chain_sum"))
    p.add_argument("--out", default=str(ROOT / "runs" / "on-policy-cost"))
    p.add_argument("--json", default=None)
    args = p.parse_args()

    from common import machine

    if not (Path(args.capability) / "r1" / "student-sft" / "dante_manifest.json").is_file():
        raise SystemExit(
            f"no SFT student in {args.capability}/r1: run bench/capability_transfer.py --settings sft first"
        )
    on_policy = [
        "train.on_policy.fraction=1.0",
        "train.on_policy.temperature=1.0",
        "train.on_policy.max_new_tokens=48",
        "train.loss.policy_gradient.kl_coef=0.0",  # the setting chosen on validation (sft-op-dense): the dense
        "train.loss.dense_kl.weight=1.0",  # reverse KL on the teacher's top-20 at one-to-one positions
        "train.loss.dense_kl.top_k=20",
        "train.lr=5e-5",
    ]
    results = {
        "sft": run(args, "sft", ["train.lr=5e-5"]),
        "on-policy": run(args, "cold", on_policy),
    }
    scores = Path(args.out) / "cold" / "on_policy_scores"
    results["on-policy, score cache warm"] = run(args, "warm", on_policy, scores_from=scores)
    base = statistics.median(r["step_s"] for r in results["sft"])
    print(f"machine: {machine()}")
    print("| setting | step (s) | sampling (s) | teacher scoring (s) | update (s) | rest (s) | step / SFT step |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    report = {"machine": machine(), "args": vars(args), "settings": {}}
    for name, rows in results.items():
        med = {k: statistics.median(r.get(k) or 0.0 for r in rows) for k in ("step_s",) + PARTS}
        rest = med["step_s"] - sum(med[k] for k in PARTS)
        report["settings"][name] = {**med, "rest_s": rest, "rows": rows}
        print(
            f"| {name} | {med['step_s']:.2f} | {med[PARTS[0]]:.2f} | {med[PARTS[1]]:.2f} | {med[PARTS[2]]:.2f} "
            f"| {rest:.2f} | {med['step_s'] / base:.2f}x |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


PARTS = ("on_policy_sampling_s", "on_policy_scoring_s", "on_policy_update_s")

if __name__ == "__main__":
    main()
