"""Why a number moves between machines (issue 50 item 6): what the CPU's instruction set does to
the teacher's cache and to the trained student, against what the seed does, on `make demo`'s recipe.

    .venv/bin/python bench/numerics.py                        # ~40 min on 1 thread
    .venv/bin/python bench/numerics.py --json bench/results/numerics.json

On one machine dante's runs are deterministic and do not depend on the thread count (checked
first, on 3 training steps: the weights are compared bit for bit). Between machines the kernels
differ: oneDNN, MKL and ATen pick their code for the CPU at run time (AVX2, AVX-512, AMX), and a
different instruction set sums in a different order, so the last bits differ. Here the same
machine is made to run the AVX2 kernels (``ATEN_CPU_CAPABILITY=avx2``, ``ONEDNN_MAX_CPU_ISA=AVX2``,
``MKL_ENABLE_INSTRUCTIONS=AVX2``: the kernels of an AVX2-only CPU) against its own default, with
everything else held equal:

1. the teacher's cache (fp32 both times, so the dtype does not move with the ISA): how many of the
   300 greedy answers come out the same;
2. the student trained on one cache under each ISA (evaluated both under the default): the accuracy
   on the 300 test questions, and the questions each gets right that the other does not;
3. the yardstick: the same training with another ``train.seed`` (the data order).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "src"))

AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
RECIPE = ROOT / "configs" / "demo.yaml"
TASK = "rg_chain_sum_2x2"


def dante(args: list[str], isa: str, threads: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    if isa == "avx2":
        env.update(AVX2)
    cmd = [str(ROOT / ".venv" / "bin" / "dante"), *args]
    print("+", " ".join(cmd), f"({isa})", flush=True)
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)


def texts(folder: Path) -> dict[str, str]:
    from dante.cache.records import read_cache

    return {r.id: r.teacher_text for r in read_cache([folder])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "numerics")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    from common import machine
    from dante.eval.scores import correct_by_doc, mcnemar_exact

    out = args.out
    common = [f"output_dir={out}", "teacher.dtype=float32"]
    for isa in ("default", "avx2"):
        dante(["cache", str(RECIPE), *common, f"cache.dir={out / f'cache-{isa}'}"], isa, args.threads)
    a, b = texts(out / "cache-default"), texts(out / "cache-avx2")
    same = sum(a[k] == b.get(k) for k in a)
    print(f"teacher cache, fp32: {same} of {len(a)} answers the same under the AVX2 kernels", flush=True)

    arms = {"default": ("default", 42), "avx2": ("avx2", 42), "seed-43": ("default", 43)}
    for name, (isa, seed) in arms.items():
        run = out / name
        if not (run / "student" / "dante_manifest.json").is_file():
            dante(
                ["train", str(RECIPE), *common, f"output_dir={run}", f"cache.dir={out / 'cache-default'}",
                 f"train.seed={seed}"],
                isa,
                args.threads,
            )  # fmt: skip
        if not (run / "eval" / "student" / "scores.json").is_file():
            dante(["eval", str(RECIPE), f"output_dir={run}", "eval.models=[student]"], "default", args.threads)
    got = {n: correct_by_doc(out / n / "eval" / "student", TASK, "exact_match", "none") for n in arms}
    result = {
        "machine": machine(),
        "cache_same": same,
        "cache_records": len(a),
        "students": {n: sum(g.values()) / len(g) for n, g in got.items()},
        "vs_default": {n: mcnemar_exact(got["default"], got[n]) for n in arms if n != "default"},
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
