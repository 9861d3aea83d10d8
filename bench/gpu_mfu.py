"""GPU training efficiency of the DANTE step: SmolLM3-3B architecture from config (random weights,
no download), bf16 autocast over fp32 master weights, packed padding-free rows of ~4 096 tokens,
with and without gradient checkpointing. Reports tokens/s, MFU, peak memory, and the device-hours
this projects for the card's 2 000-step run (128 sequences per step) next to its 21 A100-hours.

    .venv/bin/pip install -e . && .venv/bin/python bench/gpu_mfu.py          # on a GPU machine
    .venv/bin/python bench/gpu_mfu.py --tiny                                  # CPU check, minutes
    .venv/bin/python bench/gpu_mfu.py --variants no-gc,no-gc-kd               # token-level KD off and on

Each variant is one `dante train` run (dante.train.loop.train, full DANTE loss, chunked CE,
fused AdamW) in a fresh process, timed from the end of warm-up step W to the end of step N.

    MFU = tokens/s · (6·N + 12·L·d·T) / peak          (dante.train.model.flops, docs/training.md)
N: parameters (the tied embedding counted once, as the lm_head); L layers; d hidden size; T the
mean record length (records attend only within themselves). Peak: bf16 dense, 989 TFLOP/s for
H100/H200 SXM, 312 for A100, or --peak-tflops.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import set_threads, thread_arg  # noqa: E402

if __name__ == "__main__":
    # --tiny runs on the shared CPU (1 thread, see bench/common.py); a GPU box gets all its cores
    set_threads(thread_arg(default=1 if "--tiny" in sys.argv else None))

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
from typing import Any  # noqa: E402

import common  # noqa: E402

# bf16 dense TFLOP/s by device name, most specific first (torch.cuda.get_device_name)
PEAKS = {
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.0,
    "H200": 989.0,
    "GH200": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "A10G": 125.0,
}
CARD = {
    "steps": 2000,
    "sequences": 128,
    "a100_hours": 21.0,
    "tokens_per_sequence": 525,
}  # card; 450-600 tokens/sample (the seed card)


def prepare(workdir: Path, args) -> dict[str, Any]:
    """Student folder (random weights, saved in bf16 for the 3B), tokenizer and synthetic cache."""
    import torch
    from transformers import AutoModelForCausalLM

    size = "tiny" if args.tiny else "3b"
    vocab = common.VOCAB if args.tiny else 128256
    config = common.smollm3_config(size, vocab_size=vocab)
    common.make_word_tokenizer(workdir / "student", vocab_size=vocab)  # saved next to the weights
    torch.manual_seed(args.seed)
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32 if args.tiny else torch.bfloat16)
    n_params = common.count_parameters(model)
    model.save_pretrained(workdir / "student")
    del model
    rows = common.synthetic_records(args.records, args.seed, vocab_words=vocab - 3)
    if any(v.endswith("kd") for v in args.variants.split(",")):
        common.add_payloads(rows, workdir / "student", args.seed)
    common.write_cache(workdir / "cache", rows)
    lengths = [len(r["prompt"].split()) + len(r["teacher_text"].split()) + 1 for r in rows]
    mean_len = sum(lengths) / len(lengths)
    micro = args.micro or max(1, round(args.row_tokens / mean_len))
    meta = {
        "student": str(workdir / "student"),
        "cache": str(workdir / "cache"),
        "size": size,
        "parameters": n_params,
        "layers": config.num_hidden_layers,
        "hidden": config.hidden_size,
        "vocab": vocab,
        "mean_record_tokens": mean_len,
        "micro": micro,
    }
    (workdir / "workload.json").write_text(json.dumps(meta))
    return meta


def child(args) -> None:
    """One variant in a fresh process; prints its result as one JSON line."""
    import torch

    from dante.config import load_recipe

    common.quiet()
    meta = json.loads((Path(args.workdir) / "workload.json").read_text())
    out = Path(tempfile.mkdtemp(prefix="mfu-run-"))
    cuda = torch.cuda.is_available() and not args.tiny
    recipe = load_recipe(
        data={
            "name": "bench-mfu",
            "output_dir": str(out),
            "cache": {"dir": meta["cache"]},
            "student": {"model": meta["student"], "use_chat_template": False, "attn_implementation": args.attn},
            "train": {
                "steps": args.steps,
                "batch_sequences": args.batch or 2 * meta["micro"],
                "micro_batch_size": meta["micro"],
                "max_length": 4096,
                "packing": True,
                "gradient_checkpointing": args.child.startswith("gc"),
                "loss": {"token_kd": {"weight": 1.0 if args.child.endswith("kd") else 0.0}},
                "mixed_precision": "bf16" if cuda else "no",
                "lr": 2e-5,
                "warmup_steps": 0,
                "lr_scheduler": "constant",
                "checkpoint_every": 10_000,
                "seed": args.seed,
            },
        }
    )
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    base = common.rss_bytes()
    try:
        res = common.timed_dante_train(recipe, args.warmup, name=args.child)
        result: dict[str, Any] = {
            "name": args.child,
            "tokens_per_s": res.tokens_per_s,
            "tokens": res.tokens,
            "positions": res.positions,
            "seconds": res.seconds,
            "steps": res.steps,
        }
    except torch.OutOfMemoryError as exc:
        result = {"name": args.child, "error": f"out of memory: {str(exc).splitlines()[0]}"}
    finally:
        shutil.rmtree(out, ignore_errors=True)
    if cuda:
        result.update(
            peak_allocated=torch.cuda.max_memory_allocated(),
            peak_reserved=torch.cuda.max_memory_reserved(),
            device=torch.cuda.get_device_name(),
        )
    else:
        result.update(peak_rss=common.peak_rss_bytes(), base_rss=base, device="cpu")
    print(json.dumps(result))


def peak_tflops(device: str, override: float | None) -> float | None:
    if override:
        return override
    for key, value in PEAKS.items():
        if key in device:
            return value
    return None


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--tiny",
        action="store_true",
        help="tiny SmolLM3-architecture model on CPU, fp32: checks the script, not a GPU figure",
    )
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument(
        "--row-tokens",
        type=int,
        default=4096,
        help="packed row length to aim for (records per micro-batch = row / mean record)",
    )
    p.add_argument("--micro", type=int, default=None, help="records per packed row (default: from --row-tokens)")
    p.add_argument("--batch", type=int, default=None, help="records per optimizer step (default: two rows)")
    p.add_argument("--records", type=int, default=512)
    p.add_argument(
        "--variants",
        default="no-gc,gc",
        help="no-gc, gc (gradient checkpointing), no-gc-kd, gc-kd (with train.loss.token_kd on a top-20 payload)",
    )
    p.add_argument(
        "--attn",
        default="sdpa",
        help="attn_implementation: sdpa (block-diagonal mask), flex_attention, flash_attention_2, ...",
    )
    p.add_argument(
        "--peak-tflops", type=float, default=None, help="bf16 dense peak of the device (default: from its name)"
    )
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--json", default=None)
    p.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    import torch

    if args.tiny:
        args.steps, args.warmup, args.row_tokens = min(args.steps, 3), min(args.warmup, 1), min(args.row_tokens, 1024)
        args.records = min(args.records, 128)
    elif not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU machine, or pass --tiny to check the script on CPU")
    workdir = Path(tempfile.mkdtemp(prefix="bench-mfu-"))
    try:
        meta = prepare(workdir, args)
        print(
            f"model: SmolLM3 architecture ({meta['size']}), {meta['parameters'] / 1e9:.3f}B parameters, "
            f"{meta['layers']} layers, "
            f"hidden {meta['hidden']}, vocab {meta['vocab']}; {meta['micro']} records per packed row "
            f"(~{meta['micro'] * meta['mean_record_tokens']:.0f} tokens), mean record "
            f"{meta['mean_record_tokens']:.0f} tokens; "
            f"{args.steps} steps, first {args.warmup} not timed"
        )
        flags = [
            "--workdir",
            str(workdir),
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
            "--attn",
            args.attn,
            "--seed",
            str(args.seed),
        ]
        flags += ["--tiny"] if args.tiny else []
        flags += ["--batch", str(args.batch)] if args.batch else []
        flags += ["--threads", str(args.threads)] if args.threads else []
        results = [
            common.run_child(Path(__file__), ["--child", v, *flags], timeout=3600)
            for v in args.variants.split(",")
            if v
        ]
        report(meta, results, args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def report(meta: dict[str, Any], results: list[dict[str, Any]], args) -> None:
    flops_per_token = 6.0 * meta["parameters"] + 12.0 * meta["layers"] * meta["hidden"] * meta["mean_record_tokens"]
    card_tokens = CARD["steps"] * CARD["sequences"] * CARD["tokens_per_sequence"]
    rows, out = [], []
    for r in results:
        if "error" in r:
            rows.append([r["name"], r["error"], "-", "-", "-", "-"])
            out.append(r)
            continue
        peak = peak_tflops(r["device"], args.peak_tflops)
        achieved = r["tokens_per_s"] * flops_per_token / 1e12
        mfu = achieved / peak if peak else None
        hours = card_tokens / r["tokens_per_s"] / 3600
        mem = (
            common.mib(r["peak_allocated"])
            if "peak_allocated" in r
            else f"{common.mib(r['peak_rss'] - r['base_rss'])} RSS"
        )
        rows.append(
            [
                r["name"],
                f"{r['tokens_per_s']:,.0f}",
                f"{achieved:.2f}",
                f"{mfu:.1%}" if mfu is not None else "n/a (no peak)",
                mem,
                f"{hours:,.1f}",
            ]
        )
        out.append({**r, "achieved_tflops": achieved, "mfu": mfu, "projected_device_hours": hours})
    device = results[0].get("device", "?")
    print(f"\ndevice: {device}; FLOPs/token = 6N + 12·L·d·T = {flops_per_token:.3e}")
    print(common.table(rows, ["variant", "tokens/s", "TFLOP/s", "MFU", "peak memory", "device-hours, card run"]))
    print(
        f"card run: {CARD['steps']} steps x {CARD['sequences']} sequences x {CARD['tokens_per_sequence']} "
        f"tokens = {card_tokens:.3e} tokens; "
        f"the card spent {CARD['a100_hours']} A100-hours"
    )
    for r in out:
        if r.get("mfu"):
            a100 = card_tokens * flops_per_token / (r["mfu"] * PEAKS["A100"] * 1e12) / 3600
            print(
                f"{r['name']}: {r['projected_device_hours']:.1f} device-hours on this GPU; at the same MFU on A100s "
                f"{a100:.1f} A100-hours ({CARD['a100_hours'] / a100:.1f}x fewer than the card)"
            )
    if args.tiny:
        print("--tiny: a CPU check of the script at a tiny size; these are not GPU figures")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"machine": common.machine(), "args": vars(args), "workload": meta, "results": out}, indent=1)
        )


if __name__ == "__main__":
    main()
