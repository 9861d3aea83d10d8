"""Are two trainings of the same students the same? For a refactor that must not change behaviour
(BENCHMARKS.md section 13): the students of one replicate of the capability bench trained by two
checkouts, compared setting by setting: the weights byte for byte (sha256 of model.safetensors)
and every logged number of every step (metrics.jsonl) to a tolerance.

    # the earlier checkout, then this one, on the same teacher cache (copy r1/cache and r1/prompts across)
    (cd OLD && .venv/bin/python bench/capability_transfer.py --replicates 1 --train-only \\
        --settings sft,dante,sft-kd,sft-op-dense --out /tmp/before)
    .venv/bin/python bench/capability_transfer.py --replicates 1 --train-only \\
        --settings sft,dante,sft-kd,sft-op-dense --out /tmp/after
    .venv/bin/python bench/compare_students.py /tmp/before/r1 /tmp/after/r1 --settings sft,dante,sft-kd,sft-op-dense
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from pathlib import Path

TIMES = ("tokens_per_s", "on_policy_sampling_s", "on_policy_scoring_s", "on_policy_update_s")  # wall clock


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def rows(path: Path) -> dict[int, dict]:
    return {r["step"]: r for r in map(json.loads, path.read_text().splitlines()) if "step" in r}


def compare(before: Path, after: Path, tol: float) -> dict:
    """Weights identical or not; per logged key present in both runs, the largest relative
    difference over the steps; keys only one run logs (named, not compared)."""
    a, b = rows(before / "metrics.jsonl"), rows(after / "metrics.jsonl")
    worst: dict[str, float] = {}
    only: set[str] = set()
    for step in sorted(set(a) | set(b)):
        ra, rb = a.get(step, {}), b.get(step, {})
        only |= set(ra) ^ set(rb)
        for key in set(ra) & set(rb):
            x, y = ra[key], rb[key]
            if key in TIMES or not isinstance(x, int | float) or not isinstance(y, int | float) or x == y:
                continue
            worst[key] = max(worst.get(key, 0.0), abs(x - y) / max(abs(x), abs(y), 1e-12))
    same_weights = sha256(before / "model.safetensors") == sha256(after / "model.safetensors")
    loss_diff = worst.get("loss", 0.0)
    return {
        "steps": len(a),
        "steps_after": len(b),
        "weights_identical": same_weights,
        "max_rel_diff": worst,
        "only_in_one": sorted(only),
        "loss_equal": len(a) == len(b) and loss_diff <= tol and not math.isnan(loss_diff),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("before", type=Path, help="a replicate folder of the first checkout (…/r1)")
    ap.add_argument("after", type=Path, help="the same replicate of the second checkout")
    ap.add_argument("--settings", default="sft,dante,sft-kd,sft-op-dense")
    ap.add_argument("--tol", type=float, default=1e-6, help="largest relative difference of the loss allowed")
    args = ap.parse_args(argv)
    print("| setting | steps | weights byte-identical | largest relative difference (logged numbers) | logged by one |")
    print("|---|---|---|---|---|")
    ok = True
    for name in args.settings.split(","):
        r = compare(args.before / f"student-{name}", args.after / f"student-{name}", args.tol)
        ok &= r["loss_equal"]
        diff = ", ".join(f"{k} {v:.1e}" for k, v in sorted(r["max_rel_diff"].items())) or "none: every number equal"
        print(
            f"| {name} | {r['steps']} / {r['steps_after']} | {'yes' if r['weights_identical'] else 'no'} | {diff} "
            f"| {', '.join(r['only_in_one']) or '—'} |"
        )
    print(f"\nloss curves equal to {args.tol:g} on every setting: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
