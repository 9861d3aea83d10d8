"""What the CPU allows the teacher (issue 48 item 1): the machine's matrix-multiply throughput and
memory bandwidth, each offline teacher's FLOPs and weight bytes per token, and from them a lower
bound on the time of a teacher cache, beside the time the cache took.

    .venv/bin/python bench/teacher_bound.py                                   # machine + models
    .venv/bin/python bench/teacher_bound.py --cache reasoning=runs/reasoning/cache:qwen2.5-coder-1.5b-instruct:16:763

A forward pass costs about 2 FLOPs per weight per token (the lm_head included, the embedding
lookup not; attention over the context adds 4·layers·context·width, small at these lengths and
counted), prompt tokens included. A decode step also reads every weight once, whatever the
number of rows decoding together; so the decode of a batch is bound by the slower of its
arithmetic (at the rate of thin, decode-shaped products) and its weight traffic (bandwidth),
and the prefill by the arithmetic at the rate of large products. Each rate is the best measured
over the shapes the 1.5B teacher multiplies by, so the derived times are floors. Three schedules of the same
tokens are bounded: every generated token in a full batch (continuous batching), batches of
the cache's order that each run to their longest record (static batching, what a batched
``generate`` does), and one sequence at a time. Measured with 1 and 2 threads, fp32 and bf16.
Results: --json (default bench/results/teacher_bound.json) and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

MODELS = ("qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct")
BYTES = {"float32": 4, "bfloat16": 2}


def timed(fn, repeats: int) -> float:
    """Median seconds of ``fn`` over ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_rates(threads: list[int], repeats: int) -> list[dict[str, Any]]:
    """GFLOP/s of x (M × K) times a weight (N × K), as ``nn.Linear`` computes it, at a large and two
    decode-shaped M."""
    import torch

    # each rate is the best over the shapes a 1.5B teacher multiplies by (an MLP's up and down
    # projections, the lm_head), so the times derived from it are floors, not estimates
    kn = [(1536, 8960), (8960, 1536), (1536, 151936)]
    shapes = {"large": [(2048, 2048, 2048), *((1024, k, n) for k, n in kn)]}
    shapes.update({"decode M=16": [(16, k, n) for k, n in kn], "decode M=1": [(1, k, n) for k, n in kn]})
    out = []
    for t in threads:
        torch.set_num_threads(t)
        for dtype in ("float32", "bfloat16"):
            dt = getattr(torch, dtype)
            for label, group in shapes.items():
                best = 0.0
                for m, k, n in group:
                    # as a model's nn.Linear runs it: x (m, k) times a weight stored (n, k)
                    a, w = torch.randn(m, k, dtype=dt), torch.randn(n, k, dtype=dt)
                    with torch.inference_mode():
                        s = timed(lambda a=a, w=w: torch.nn.functional.linear(a, w), repeats if m > 16 else repeats * 4)
                    best = max(best, 2 * m * k * n / s / 1e9)
                out.append({"threads": t, "dtype": dtype, "shape": label, "gflops": best})
    return out


def bandwidth(threads: list[int], repeats: int, gib: float = 1.0) -> list[dict[str, Any]]:
    """GB/s of reading a ``gib`` GiB tensor (a sum) and of copying it (read + write)."""
    import torch

    n = int(gib * 2**30 // 4)
    a, b = torch.ones(n), torch.empty(n)
    out = []
    for t in threads:
        torch.set_num_threads(t)
        with torch.inference_mode():
            read = timed(lambda: a.sum(), repeats)
            copy = timed(lambda: b.copy_(a), repeats)
        out.append({"threads": t, "read_gbs": 4 * n / read / 1e9, "copy_gbs": 8 * n / copy / 1e9})
    return out


def model_cost(folder: Path) -> dict[str, Any]:
    """Weights of a converted offline model from its safetensors headers (no weights loaded):
    the weights a forward pass multiplies by (all but the embedding, plus the lm_head, the
    embedding itself when tied) and its shape for the attention term."""
    from safetensors import safe_open

    config = json.loads((folder / "config.json").read_text())
    total = embed = head = 0
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), "pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open has no iterator)
                size = 1
                for d in f.get_slice(name).get_shape():
                    size *= d
                total += size
                embed += size if "embed_tokens" in name else 0
                head += size if name.startswith("lm_head") else 0
    if not head:  # tied: the lm_head is the embedding
        head = embed
    matmul = total - embed + head
    width = config["num_attention_heads"] * config.get(
        "head_dim", config["hidden_size"] // config["num_attention_heads"]
    )
    return {
        "parameters": total,
        "matmul_parameters": matmul,
        "layers": config["num_hidden_layers"],
        "attention_width": width,
        "flops_per_token": 2 * matmul,
        "weight_bytes": {d: matmul * b for d, b in BYTES.items()},
    }


def cache_tokens(folder: Path, batch: int) -> dict[str, Any]:
    """A cache's prompt and generated tokens, and the decode steps of three schedules at ``batch``."""
    rows = []
    for shard in sorted(folder.glob("shard-*.jsonl")):
        for line in shard.read_text().splitlines():
            r = json.loads(line)
            rows.append((r.get("prompt_tokens") or 0, r.get("completion_tokens") or 0))
    generated = [c for _, c in rows]
    static = sum(max(generated[i : i + batch]) for i in range(0, len(generated), batch))
    return {
        "records": len(rows),
        "prompt_tokens": sum(p for p, _ in rows),
        "generated_tokens": sum(generated),
        "mean_context": statistics.mean(p + c / 2 for p, c in rows) if rows else 0.0,
        "steps": {"continuous": -(-sum(generated) // batch), "static": static, "one at a time": sum(generated)},
        "rows_per_step": {"continuous": batch, "static": batch, "one at a time": 1},
        "padding_share_static": 1 - sum(generated) / (static * batch) if static else 0.0,
    }


def bound(cost: dict, tokens: dict, rates: dict, bw: float, dtype: str) -> dict[str, float]:
    """Seconds: prefill at the large-product rate, then each schedule's decode at the slower of its
    arithmetic (decode-shaped rate) and one read of the weights per step."""
    attention = 4 * cost["layers"] * tokens["mean_context"] * cost["attention_width"]
    per_token = cost["flops_per_token"] + attention
    prefill = tokens["prompt_tokens"] * per_token / (rates["large"] * 1e9)
    out = {"prefill": prefill}
    for name, steps in tokens["steps"].items():
        rows = tokens["rows_per_step"][name]
        rate = rates["decode M=16"] if rows > 1 else rates["decode M=1"]
        arithmetic = steps * rows * per_token / (rate * 1e9)
        traffic = steps * cost["weight_bytes"][dtype] / (bw * 1e9)
        out[name] = prefill + max(arithmetic, traffic)
        out[f"{name} (arithmetic, traffic)"] = (arithmetic, traffic)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS), help="offline models (dante.offline names)")
    ap.add_argument(
        "--cache",
        action="append",
        default=[],
        help="NAME=FOLDER:MODEL:BATCH:SECONDS, a cache to bound (SECONDS: what it took; 0 if unknown)",
    )
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path, default=common.REPO / "bench" / "results" / "teacher_bound.json")
    args = ap.parse_args(argv)
    from dante.offline import models_dir

    threads = [int(t) for t in args.threads.split(",")]
    machine = common.machine() if hasattr(common, "machine") else ""
    mm, bwm = matmul_rates(threads, args.repeats), bandwidth(threads, args.repeats)
    costs = {m: model_cost(models_dir() / m) for m in args.models.split(",")}
    result: dict[str, Any] = {"machine": machine, "matmul": mm, "bandwidth": bwm, "models": costs, "caches": {}}
    print(f"machine: {machine}\n\n| threads | dtype | shape | GFLOP/s |\n|---:|---|---|---:|")
    for r in mm:
        print(f"| {r['threads']} | {r['dtype']} | {r['shape']} | {r['gflops']:.0f} |")
    print("\n| threads | read GB/s | copy GB/s |\n|---:|---:|---:|")
    for r in bwm:
        print(f"| {r['threads']} | {r['read_gbs']:.1f} | {r['copy_gbs']:.1f} |")
    print("\n| model | parameters | in matmuls | GFLOP per token | weight MB per step (bf16 / fp32) |")
    print("|---|---:|---:|---:|---|")
    for m, c in costs.items():
        wb = c["weight_bytes"]
        print(
            f"| {m} | {c['parameters'] / 1e6:.0f}M | {c['matmul_parameters'] / 1e6:.0f}M | "
            f"{c['flops_per_token'] / 1e9:.2f} | {wb['bfloat16'] / 1e6:.0f} / {wb['float32'] / 1e6:.0f} |"
        )
    for spec in args.cache:
        name, rest = spec.split("=", 1)
        folder, model, batch, seconds = rest.rsplit(":", 3)
        tokens = cache_tokens(Path(folder), int(batch))
        entry: dict[str, Any] = {"model": model, "batch": int(batch), "seconds": float(seconds), **tokens, "bounds": {}}
        print(
            f"\n{name}: {tokens['records']} records, {tokens['prompt_tokens']} prompt + {tokens['generated_tokens']} "
            f"generated tokens ({model}, batch {batch}; static batches pad {tokens['padding_share_static']:.0%} of "
            f"their decode rows); it took {float(seconds):.0f} s\n"
        )
        print("| threads | dtype | prefill s | continuous s | static s | one at a time s | took / static bound |")
        print("|---:|---|---:|---:|---:|---:|---:|")
        for t in threads:
            bw = next(r["read_gbs"] for r in bwm if r["threads"] == t)
            for dtype in ("float32", "bfloat16"):
                rates = {r["shape"]: r["gflops"] for r in mm if r["threads"] == t and r["dtype"] == dtype}
                b = bound(costs[model], tokens, rates, bw, dtype)
                entry["bounds"][f"{t}:{dtype}"] = b
                ratio = f"{float(seconds) / b['static']:.1f}x" if float(seconds) else ""
                print(
                    f"| {t} | {dtype} | {b['prefill']:.0f} | {b['continuous']:.0f} | {b['static']:.0f} | "
                    f"{b['one at a time']:.0f} | {ratio} |"
                )
        result["caches"][name] = entry
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten: {args.json}")


if __name__ == "__main__":
    main()
