"""Shared pieces of the benchmarks in bench/: thread set-up, the synthetic teacher cache, the
tiny students built from configs, medians of interleaved runs, peak memory, and the tables.

Import ``set_threads`` and call it before anything imports torch (the scripts do this first).
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent


def set_threads(n: int | None) -> int:
    """Pin intra-op threads for torch/OpenMP/MKL; must run before ``import torch``."""
    n = n or os.cpu_count() or 1
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    assert "torch" not in sys.modules, "set_threads must run before torch is imported"
    return n


def thread_arg(default: int | None = 1, argv: Sequence[str] | None = None) -> int | None:
    """``--threads N`` read before argparse, so the count is set before torch loads.

    Default 1: the benchmark machine is shared; with more OpenMP threads than free cores every
    parallel region waits for a descheduled thread (measured here: generate 4-7x slower at 2).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return int(argv[i + 1])
        if a.startswith("--threads="):
            return int(a.split("=", 1)[1])
    return default


# -- synthetic data -----------------------------------------------------------------------------

VOCAB = 49152  # SmolLM2/SmolLM3-small size: the lm_head is the largest matmul of a small student
SPECIALS = ["<pad>", "</s>", "<unk>"]


def make_word_tokenizer(path: Path, vocab_size: int = VOCAB):
    """A word-level tokenizer whose words are ``w0 .. w{V-4}``: one word = one token, so the
    synthetic records have exactly the lengths we draw, and every row of the lm_head is used."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for i in range(vocab_size - len(SPECIALS)):
        vocab[f"w{i}"] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    path.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(path)
    return fast


def completion_length(rng: random.Random, cap: int = 512) -> int:
    """Teacher completion length in tokens: 15% stop at the cap (finish_reason=length), the rest
    log-normal with median 180 (a few to ~500 tokens), as greedy answers to chat/math prompts are."""
    if rng.random() < 0.15:
        return cap
    return int(min(cap - 1, max(4, rng.lognormvariate(math.log(180), 0.8))))


def prompt_length(rng: random.Random) -> int:
    """Short prompts: 16-96 tokens (log-normal, median 40)."""
    return int(min(96, max(16, rng.lognormvariate(math.log(40), 0.5))))


def synthetic_records(
    n: int,
    seed: int = 0,
    *,
    vocab_words: int = VOCAB - len(SPECIALS),
    cap: int = 512,
    word: Callable[[int], str] | None = None,
) -> list[dict[str, Any]]:
    """Cache records (the JSON the teacher stage writes) with drawn prompt/completion lengths.

    ``word(i)`` maps a random index to a word of the tokenizer in use (default ``w{i}``).
    The completion starts with a space so prompt + completion tokenizes as the two halves do.
    """
    rng = random.Random(seed)
    word = word or (lambda i: f"w{i}")
    rows = []
    for i in range(n):
        p, c = prompt_length(rng), completion_length(rng, cap)
        prompt = " ".join(word(rng.randrange(vocab_words)) for _ in range(p))
        text = " " + " ".join(word(rng.randrange(vocab_words)) for _ in range(c))
        entropy = round(rng.uniform(0.05, 3.0), 4)
        rows.append(
            {
                "id": f"bench-{seed}-{i:05d}",
                "prompt": prompt,
                "teacher_text": text,
                "output_entropy": entropy,
                "self_consistency": None,
                "difficulty_score": round(min(1.0, entropy / 3.0), 4),
                "completion_tokens": c,
                "finish_reason": "length" if c == cap else "stop",
            }
        )
    return rows


def add_payloads(rows: list[dict[str, Any]], tokenizer_dir: Path | str, seed: int, k: int = 20) -> None:
    """The top-20 payload a teacher with the student's own tokenizer would write (every position
    one to one, every alternative in the vocabulary): the most work train.loss.token_kd does."""
    import math
    import random

    from transformers import AutoTokenizer

    from dante.cache.payload import encode
    from dante.tokens import TokenBytes, TokenLogprobs

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tb, rng = TokenBytes(tok), random.Random(seed)
    vocab = [i for i in range(len(tok)) if tb(i)]
    for row in rows:
        ids = tok(row["teacher_text"], add_special_tokens=False)["input_ids"]
        top = [[(tb(i), math.log(0.6))] + [(tb(rng.choice(vocab)), math.log(0.02)) for _ in range(k - 1)] for i in ids]
        row["token_logprobs"] = encode(TokenLogprobs([tb(i) for i in ids], [math.log(0.6)] * len(ids), top), k)
        row["completion_tokens"] = len(ids)


def write_cache(directory: Path, rows: list[dict[str, Any]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "shard-00000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return directory


# -- students from configs ----------------------------------------------------------------------


def smollm3_config(size: str, vocab_size: int = VOCAB, **overrides):
    """SmolLM3 architecture (GQA, NoPE every 4th layer, tied embeddings) at a bench size.

    tiny: hidden 128, 4 layers (6.8M parameters, 6.3M of them the 49k x 128 embedding / lm_head)
    3b:   the SmolLM3-3B shape (hidden 2048, 36 layers, 16 heads, 4 KV heads, vocab 128 256)
    """
    from transformers import SmolLM3Config

    shapes = {
        "tiny": {
            "hidden_size": 128,
            "intermediate_size": 512,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
        },
        "small": {
            "hidden_size": 256,
            "intermediate_size": 768,
            "num_hidden_layers": 6,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
        },
        "3b": {
            "hidden_size": 2048,
            "intermediate_size": 11008,
            "num_hidden_layers": 36,
            "num_attention_heads": 16,
            "num_key_value_heads": 4,
        },
    }
    kw = dict(
        shapes[size],
        vocab_size=vocab_size,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
    )
    kw.update(overrides)
    return SmolLM3Config(**kw)


def save_student(path: Path, config, tokenizer, seed: int = 0) -> Path:
    """A random model from ``config`` saved with ``tokenizer`` as a from_pretrained folder."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def count_parameters(model) -> int:
    seen, n = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return n


# -- measurement --------------------------------------------------------------------------------


def quiet() -> None:
    """No per-file progress bars from transformers/datasets in the bench output."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:
        pass


def timed_dante_train(recipe, warmup: int, name: str = "dante") -> RunResult:
    """Run ``dante.train.loop.train(recipe)`` as a user does, timing steps warmup+1..N between
    the ends of steps (the trainer's ``step_end`` hook, after the loss was read back, so GPU work
    is finished), and counting the token positions it computed (its ``micro_batch`` hook; a rank's
    empty padding micro-batch, which has no target, is not counted)."""
    from dante.train.loop import Hooks, train

    marks: list[tuple[float, int, int]] = []
    positions = [0]

    def micro_batch(batch) -> None:
        if bool((batch["targets"] != -100).any()):
            positions[0] += batch["input_ids"].numel()

    def step_end(row) -> None:
        marks.append((time.perf_counter(), row["tokens"], positions[0]))

    train(recipe, hooks=Hooks(micro_batch=micro_batch, step_end=step_end))
    return window(name, marks, warmup)


def window(name: str, marks: list[tuple[float, int, int]], warmup: int) -> RunResult:
    """The timed steps: from the end of step ``warmup`` to the end of the last step."""
    (t0, k0, p0), (t1, k1, p1) = marks[warmup - 1], marks[-1]
    return RunResult(name, k1 - k0, p1 - p0, t1 - t0, len(marks) - warmup)


@dataclass
class RunResult:
    """One timed run of one setting."""

    name: str
    tokens: int  # non-padding tokens in the timed steps
    positions: int  # token positions the model computed in the timed steps (padding included)
    seconds: float
    steps: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def padding_fraction(self) -> float:
        return 1.0 - self.tokens / self.positions if self.positions else 0.0


def interleaved(
    settings: dict[str, Callable[[], RunResult]], repeats: int, log: Callable[[str], None] = print
) -> dict[str, list[RunResult]]:
    """Run every setting once per round, rotating the order each round (A B C, B C A, ...),
    so slow periods of a shared machine hit every setting alike."""
    names = list(settings)
    out: dict[str, list[RunResult]] = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            res = settings[name]()
            out[name].append(res)
            log(
                f"  round {r + 1}/{repeats} {name:<24} {res.tokens_per_s:9.1f} tok/s  padding "
                f"{res.padding_fraction:5.1%}  ({res.seconds:.1f}s, {res.steps} steps)"
            )
    return out


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def paired_ratios(a: list[RunResult], b: list[RunResult]) -> list[float]:
    """Per-round ratios a/b of tokens/s (rounds pair runs made close in time)."""
    return [x.tokens_per_s / y.tokens_per_s for x, y in zip(a, b) if y.tokens_per_s > 0]


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """This process's RSS high-water mark (VmHWM; ru_maxrss would carry the parent's over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def run_child(script: Path, args: list[str], timeout: float = 1800) -> dict[str, Any]:
    """Run ``script args`` in a fresh interpreter (clean peak RSS); it prints one JSON line last."""
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{script.name} {' '.join(args)} failed:\n{proc.stderr[-4000:]}")
    last = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1]
    return json.loads(last)


def write_result(result: dict[str, Any], path: Path | None) -> None:
    """Print ``result`` without its per-round detail, and write all of it to ``path`` (if given)."""
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=2))
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")


def machine() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    import torch

    from dante.models import cpu_name

    cpu = cpu_name()

    versions = {}
    for pkg in ("torch", "transformers", "accelerate", "trl"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = "-"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
        **versions,
    }


def table(rows: list[list[str]], header: list[str]) -> str:
    """A GitHub-markdown table (pasted into BENCHMARKS.md as printed)."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"
