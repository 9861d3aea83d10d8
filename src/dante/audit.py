"""A pre-flight audit of the teacher/student tokenizer pair (``dante tokenizers RECIPE``): before
any model is loaded or any step is paid for, how much of the text the cross-tokenizer signal can
reach, and what to train with.

On the recipe's cached texts (the teacher's own tokens from their payloads where the cache has
them, else its tokenizer's; the prompts when there is no cache yet), with tokenizers only:

- the share of chunks (``dante.train.align``) that are one token on both sides, and of student
  tokens inside them (what token-level KD and the on-policy dense term reach), the chunk lengths,
  texts that cannot be aligned, by reason;
- how each side splits digits and whitespace, its BOS/EOS and chat template;
- whether the teacher engine can score a text (on-policy distillation needs it);
- a recommendation (SFT only, one-to-one token KD, on-policy) with its reason and the measured
  results it rests on (BENCHMARKS.md).
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from dante.config import Recipe
from dante.errors import DanteError
from dante.train.align import NotAligned, align

PROBES = {
    "digits": "1234567 2026",
    "spaces": "    return x",
    "newlines": "a\n\n\nb",
    "tab": "\tindent",
}
# what scores a given text (on-policy distillation, teacher.check_scoring)
SCORING = {
    "hf": "yes (the model's own logprobs)",
    "vllm": "yes (prompt_logprobs)",
    "openai": "only a server with echo + logprobs on /v1/completions (vLLM serve); probed before training",
    "llamacpp": "no (llama.cpp's server returns no logprobs of a given text); probed before training",
}


@dataclass
class PairStats:
    """What alignment gives over a set of texts."""

    texts: int = 0
    aligned: int = 0
    unaligned: Counter = field(default_factory=Counter)
    chunks: int = 0
    one_to_one: int = 0
    student_tokens: int = 0  # (a one-to-one chunk holds one student token: one_to_one of them are one to one)
    chunk_student_tokens: list[int] = field(default_factory=list)
    chunk_bytes: list[int] = field(default_factory=list)

    def add(self, teacher: list[bytes], student: list[bytes], text: bytes) -> None:
        self.texts += 1
        try:
            chunks = align(teacher, student, text)
        except NotAligned as exc:
            self.unaligned[exc.reason] += 1
            return
        self.aligned += 1
        self.chunks += len(chunks)
        self.student_tokens += sum(1 for s in student if s)
        for c in chunks:
            self.one_to_one += c.one_to_one
            self.chunk_student_tokens.append(c.s1 - c.s0)
            self.chunk_bytes.append(c.end - c.start)

    def as_dict(self) -> dict[str, Any]:
        def pct(xs: list[int], q: float) -> int | None:
            return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))] if xs else None

        return {
            "texts": self.texts,
            "aligned": self.aligned,
            "unaligned": dict(self.unaligned),
            "chunks": self.chunks,
            "one_to_one_chunk_share": self.one_to_one / self.chunks if self.chunks else None,
            "one_to_one_token_share": self.one_to_one / self.student_tokens if self.student_tokens else None,
            "student_tokens_per_chunk": {
                "mean": statistics.fmean(self.chunk_student_tokens) if self.chunk_student_tokens else None,
                "p50": pct(self.chunk_student_tokens, 0.5),
                "p90": pct(self.chunk_student_tokens, 0.9),
                "max": max(self.chunk_student_tokens, default=None),
            },
            "bytes_per_chunk": {"p50": pct(self.chunk_bytes, 0.5), "p90": pct(self.chunk_bytes, 0.9)},
        }


def side(tokenizer: Any, tb) -> dict[str, Any]:
    """One tokenizer's shape: vocabulary, BOS/EOS, chat template, how it splits the probes
    (``tb``: its ``dante.tokens.TokenBytes``)."""
    splits = {}
    for name, text in PROBES.items():
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        splits[name] = [tb(i).decode("utf-8", errors="replace") for i in ids]
    template = getattr(tokenizer, "chat_template", None)
    default_system = None
    if template:
        try:
            shown = tokenizer.apply_chat_template([{"role": "user", "content": "q"}], tokenize=False)
            default_system = "system" in shown.split("q")[0]
        except Exception:  # noqa: BLE001 - a template that needs more than one user turn: nothing to say
            default_system = None
    return {
        "vocab": len(tokenizer),
        "bos": tokenizer.bos_token,
        "eos": tokenizer.eos_token,
        "chat_template": bool(template),
        "template_adds_system_prompt": default_system,
        "splits": splits,
    }


def texts_of(recipe: Recipe, limit: int) -> tuple[str, list[tuple[str, list[bytes] | None]]]:
    """(source, [(text, the teacher's own token bytes or None)]): cached teacher texts (their
    payloads' tokens when stored; a thinking teacher's answer part), else the prompts."""
    from dante.cache.payload import decode
    from dante.cache.records import read_cache
    from dante.train.sources.kd_data import answer_payload

    try:
        folders = [f for f in recipe.cache_dirs if f.exists()]
    except DanteError:  # a glob that matches nothing yet
        folders = []
    if folders:
        out = []
        for rec in read_cache(folders, allow_duplicates=True)[:limit]:
            tokens = None
            if rec.token_logprobs is not None:
                tokens = list(answer_payload(decode(rec.token_logprobs), rec.reasoning_tokens).tokens)
            out.append((rec.teacher_text, tokens))
        if out:
            return "cache (teacher texts" + (", payload tokens)" if any(t for _, t in out) else ")"), out
    from dante.prompts import prompt_set

    return "prompts (no cache yet)", [(p.prompt, None) for p in prompt_set(recipe)[:limit]]


def audit(recipe: Recipe, limit: int = 500) -> dict[str, Any]:
    """The audit of the recipe's tokenizer pair (loads tokenizers only)."""
    from dante.models import load_tokenizer
    from dante.tokens import TokenBytes

    student_tok = load_tokenizer(recipe.student.model, trust_remote_code=recipe.student.trust_remote_code)
    teacher_tok = None
    if recipe.teacher.backend in ("hf", "vllm") and recipe.teacher.model:
        teacher_tok = load_tokenizer(recipe.teacher.model, trust_remote_code=recipe.teacher.trust_remote_code)
    source, texts = texts_of(recipe, limit)
    s_bytes = TokenBytes(student_tok)
    t_bytes = TokenBytes(teacher_tok) if teacher_tok is not None else None
    stats = PairStats()
    payloads = 0
    for text, tokens in texts:
        data = text.encode("utf-8")
        if tokens is None and teacher_tok is not None:
            tokens = [t_bytes(i) for i in teacher_tok(text, add_special_tokens=False)["input_ids"]]
        elif tokens is not None:
            payloads += 1
        if tokens is None:
            continue  # an API teacher without payloads: nothing to align against
        student = [s_bytes(i) for i in student_tok(text, add_special_tokens=False)["input_ids"]]
        stats.add(tokens, student, data)
    same = teacher_tok is not None and teacher_tok.get_vocab() == student_tok.get_vocab()
    report = {
        "teacher": {"model": recipe.teacher.model, "backend": recipe.teacher.backend},
        "student": {"model": recipe.student.model},
        "texts_from": source,
        "texts_with_payload": payloads,
        "same_vocabulary": same,
        "alignment": stats.as_dict(),
        "teacher_side": side(teacher_tok, t_bytes) if teacher_tok is not None else None,
        "student_side": side(student_tok, s_bytes),
        "teacher_can_score": SCORING.get(recipe.teacher.backend, "unknown"),
    }
    report["recommendation"] = recommend(report, recipe)
    return report


def recommend(report: dict[str, Any], recipe: Recipe) -> list[str]:
    """What to train with, each with its reason."""
    a = report["alignment"]
    share = a["one_to_one_token_share"]
    out = []
    if report["same_vocabulary"]:
        out.append(
            "token-level KD (train.loss.token_kd): the same vocabulary, so every chunk is one token on both sides and "
            "the KL is the exact top-K one"
        )
    elif share is None:
        out.append(
            "SFT only: no text could be aligned with the teacher's tokens (no payloads in the cache and no "
            "teacher tokenizer, or every text refused: see alignment.unaligned)"
        )
    elif share >= 0.5:
        out.append(
            f"one-to-one token KD reaches {share:.0%} of the student's tokens: usable (train.loss.token_kd, with "
            "teacher.store_logprobs), but it added nothing measurable over SFT where the teacher is confident "
            "(BENCHMARKS.md 6b, 6d); try it where the teacher hesitates"
        )
    else:
        out.append(
            f"SFT: one-to-one token KD would reach only {share:.0%} of the student's tokens (the rest of the text "
            "gets plain CE)"
        )
    if not report["same_vocabulary"] and a["aligned"]:
        out.append(
            f"the chunk term (train.loss.chunk_kd, with teacher.store_logprobs) reaches every chunk of the "
            f"{a['aligned']} aligned texts, multi-token chunks included; off by default: null on chain_sum, "
            "where the teacher is sure; on products, where it hesitates, +2.9 points over SFT on the test split "
            "but -1.2 on the validation split (3 replicates each), so no established effect (BENCHMARKS.md 15): "
            "where the teacher is unsure, measure it against SFT on your validation split before keeping it"
        )
    if a["unaligned"]:
        out.append(
            f"{sum(a['unaligned'].values())} of {a['texts']} texts cannot be aligned ({a['unaligned']}): they train "
            "on text alone"
        )
    scoring = report["teacher_can_score"]
    if scoring.startswith("yes"):
        out.append(
            "on-policy distillation (train.on_policy) is possible: the engine scores text; from an SFT student it "
            "matched SFT given the same steps on chain_sum (BENCHMARKS.md 6d, 6f); more cached answers did better"
        )
    else:
        out.append(f"on-policy distillation: the teacher engine scores text {scoring}")
    return out


def render(report: dict[str, Any]):
    """A rich table of the audit."""
    from rich.table import Table

    a = report["alignment"]
    t = Table(title="tokenizer pair audit", show_header=False)
    t.add_column("", style="bold")
    t.add_column("")
    fmt = lambda x: "n/a" if x is None else f"{x:.1%}"  # noqa: E731
    t.add_row("teacher", f"{report['teacher']['backend']}: {report['teacher']['model']}")
    t.add_row("student", report["student"]["model"])
    t.add_row("texts", f"{a['texts']} from {report['texts_from']}; {report['texts_with_payload']} with payload tokens")
    t.add_row("same vocabulary", str(report["same_vocabulary"]))
    t.add_row("one-to-one chunks", f"{fmt(a['one_to_one_chunk_share'])} of {a['chunks']} chunks")
    t.add_row("student tokens one to one", fmt(a["one_to_one_token_share"]))
    c = a["student_tokens_per_chunk"]
    t.add_row(
        "student tokens per chunk",
        "n/a" if c["mean"] is None else f"mean {c['mean']:.2f}, p50 {c['p50']}, p90 {c['p90']}, max {c['max']}",
    )
    t.add_row("not aligned", str(a["unaligned"] or "none"))
    for label, key in (("teacher", "teacher_side"), ("student", "student_side")):
        s = report[key]
        if s is None:
            t.add_row(label, "no tokenizer (an API teacher): its payload tokens are used")
            continue
        splits = "; ".join(f"{k} {v}" for k, v in s["splits"].items())
        t.add_row(
            label,
            f"vocab {s['vocab']}, bos {s['bos']!r}, eos {s['eos']!r}, chat template {s['chat_template']}"
            f" (adds a system prompt: {s['template_adds_system_prompt']}); {splits}",
        )
    t.add_row("teacher can score text", report["teacher_can_score"])
    for i, line in enumerate(report["recommendation"]):
        t.add_row("recommendation" if i == 0 else "", line)
    return t
