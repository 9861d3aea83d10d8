"""`teacher.dispatch: ray` against the local engine (BENCHMARKS.md section 11).

    .venv/bin/pip install -e '.[ray]' && .venv/bin/python bench/cache_ray.py

1. overhead: an instant teacher (a canned completion per prompt, no model), N prompts, through
   `run_cache` with the local engine and with the Ray pool (R replicas on a local cluster); the
   records/s of each and the per-record overhead of the Ray path. The writer and the dispatch
   must sustain >= 5 000 records/s on this 2-core machine, so they never limit a GPU pool.
2. real teacher: a small hf teacher (SmolLM2-135M-Instruct, offline package; tiny random model
   with --tiny), P prompts, on the same 2 cores: 2 Ray replicas of one torch thread each against
   one local process with two torch threads (equal cores and threads: what a user without Ray
   runs) and against one local process with one thread (the earlier baseline, kept for
   comparison); the cluster start and model loads counted apart, rounds interleaved.
Records are checked: every prompt exactly once in each cache.
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
import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import common  # noqa: E402
from dante.teacher import Generation, Teacher  # noqa: E402


class InstantTeacher(Teacher):
    """A canned completion per prompt: what is left is dante's own work per record."""

    name = "instant"

    def generate(self, prompts, sampling):
        return [[Generation(f"The answer to {p.id} is 42.", 8, "stop", [0.5] * 8, 12)] for p in prompts]

    def device_info(self):
        return {"device_type": "cpu", "device_count": 1}


def _prompts(folder: Path, n: int) -> Path:
    path = folder / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Question {i}: what is {i} plus {i}?"}) + "\n" for i in range(n)))
    return path


def _recipe(folder: Path, prompts: Path, teacher: dict, engine: str, replicas: int, batch: int):
    from dante.config import load_recipe

    return load_recipe(
        data={
            "name": "bench-ray",
            "output_dir": str(folder),
            "prompts": {"source": str(prompts)},
            "teacher": {
                "batch_size": batch,
                **teacher,
                "dispatch": engine,
                "ray": {"replicas": replicas, "cpus_per_replica": 1, "batches_in_flight": 4},
            },
            "cache": {"shard_size": 10_000},
        }
    )


def _run(recipe, factory=None) -> dict:
    from dante.cache.records import read_cache
    from dante.cache.run import run_cache

    t0 = time.perf_counter()
    engine = None
    if recipe.teacher.dispatch == "ray":
        from dante.teacher.ray_pool import RayTeacherPool

        engine = RayTeacherPool(recipe.teacher, recipe.teacher.ray, factory)
    else:
        from dante.teacher.dispatch import make_engine

        engine = make_engine(recipe.teacher, factory)
    started = time.perf_counter()
    try:
        summary = run_cache(recipe, teacher=engine)
    finally:
        engine.close()
    done = time.perf_counter()
    records = read_cache(recipe.cache_dir)
    assert len(records) == len({r.id for r in records}) == summary.prompts, "not every prompt exactly once"
    return {"start_s": started - t0, "run_s": done - started, "records": summary.written}


def overhead(args, work: Path) -> dict:
    import ray

    prompts = _prompts(work, args.records)
    teacher = {"backend": "hf", "model": "instant", "top_logprobs": 0}
    out = {}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    try:
        for rnd in range(args.repeats):
            for engine in ("local", "ray") if rnd % 2 == 0 else ("ray", "local"):
                folder = work / f"over-{engine}-{rnd}"
                r = _run(_recipe(folder, prompts, teacher, engine, args.replicas, args.batch), InstantTeacher)
                out.setdefault(engine, []).append(r)
                print(
                    f"  round {rnd + 1} {engine:<5} {r['records'] / r['run_s']:>9,.0f} records/s ({r['run_s']:.2f} s)"
                )
                shutil.rmtree(folder)
    finally:
        ray.shutdown()
    rate = {e: common.median([r["records"] / r["run_s"] for r in rs]) for e, rs in out.items()}
    per_record_us = 1e6 * (1 / rate["ray"] - 1 / rate["local"])
    print(
        f"instant teacher, {args.records} prompts, batches of {args.batch}: local {rate['local']:,.0f} records/s, "
        f"ray ({args.replicas} replicas) {rate['ray']:,.0f} records/s; Ray's overhead {per_record_us:.1f} µs per record"
        f" (target: ray >= 5,000 records/s: {'met' if rate['ray'] >= 5000 else 'MISSED'})"
    )
    return {"runs": out, "records_per_s": rate, "overhead_us_per_record": per_record_us}


def real_teacher(args, work: Path) -> dict:
    import ray

    if args.tiny:
        sys.path.insert(0, str(common.REPO / "tests"))
        import tiny

        model = str(tiny.make_teacher_dir(work / "teacher"))
    else:
        from dante.models import resolve_model

        model = resolve_model("pypi:smollm2-135m-instruct").path
    prompts = _prompts(work, args.prompts)
    teacher = {"backend": "hf", "model": model, "hf": {"device": "cpu"}, "max_new_tokens": args.max_new_tokens}
    teacher.update(top_logprobs=5, dtype="float32")
    os.environ["OMP_NUM_THREADS"] = "1"  # each replica one thread, like the local process
    out = {}
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    cluster_s = time.perf_counter() - t0
    import torch

    engines = ("local-2t", "ray", "local")
    try:
        for rnd in range(args.repeats):
            for engine in engines[rnd % 3 :] + engines[: rnd % 3]:
                folder = work / f"real-{engine}-{rnd}"
                torch.set_num_threads(2 if engine == "local-2t" else 1)
                try:
                    recipe = _recipe(folder, prompts, teacher, engine.removesuffix("-2t"), 2, args.teacher_batch)
                    r = _run(recipe)
                finally:
                    torch.set_num_threads(1)
                out.setdefault(engine, []).append(r)
                print(
                    f"  round {rnd + 1} {engine:<5} {r['records'] / r['run_s']:.2f} records/s "
                    f"(generation {r['run_s']:.1f} s, start {r['start_s']:.1f} s)"
                )
                shutil.rmtree(folder)
    finally:
        ray.shutdown()
    rate = {e: common.median([r["records"] / r["run_s"] for r in rs]) for e, rs in out.items()}

    def ratio(base: str) -> float:  # per round, then the median: rounds share the machine's state
        pairs = zip(out[base], out["ray"], strict=True)
        return common.median([(b["records"] / b["run_s"]) / (a["records"] / a["run_s"]) for a, b in pairs])

    speedup, speedup_1t = ratio("local-2t"), ratio("local")
    print(
        f"hf teacher {Path(model).name}, {args.prompts} prompts, {args.max_new_tokens} new tokens, 2 cores: "
        f"2 Ray replicas x 1 thread {rate['ray']:.2f} records/s, 1 local process x 2 threads "
        f"{rate['local-2t']:.2f} records/s: {speedup:.2f}x at equal cores and threads "
        f"(1 local process x 1 thread {rate['local']:.2f} records/s: {speedup_1t:.2f}x); "
        f"cluster start {cluster_s:.1f} s, replica start median "
        f"{common.median([r['start_s'] for r in out['ray']]):.1f} s, not counted"
    )
    return {
        "runs": out,
        "records_per_s": rate,
        "speedup": speedup,
        "speedup_vs_one_thread": speedup_1t,
        "cluster_start_s": cluster_s,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=20_000, help="prompts for the overhead run")
    p.add_argument("--batch", type=int, default=64, help="prompts per Ray task in the overhead run")
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--prompts", type=int, default=48, help="prompts for the real-teacher run")
    p.add_argument("--teacher-batch", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tiny", action="store_true", help="a tiny random teacher instead of SmolLM2-135M")
    p.add_argument("--skip-real", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    common.quiet()
    report = {"machine": common.machine(), "args": vars(args)}
    print(f"machine: {report['machine']}")
    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    try:
        print("\n[1] overhead: instant teacher")
        report["overhead"] = overhead(args, work)
        if not args.skip_real:
            print("\n[2] real teacher: 1 local process vs 2 Ray replicas")
            report["real"] = real_teacher(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
