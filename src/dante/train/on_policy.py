"""On-policy distillation across tokenizers (stage 4, ``train.on_policy``): each step the student
writes completions of prompts from the recipe's prompt set, the teacher scores them in its own
tokenization (``Teacher.score``, any engine), and the student is trained on the chunk-level
reverse KL of its own samples (``losses.chunk_log_ratios`` / ``token_advantages`` /
``policy_gradient_sum``), mixed with the cached off-policy records by ``fraction``.

Scores go through a ``CacheWriter`` of their own (``<student_dir>/on_policy_scores/<key>``,
the key a hash of the teacher settings; a record per (prompt id, sha256 of the student text)),
so a repeated sample costs no teacher compute and a crash loses no score. Each prompt's samples
are drawn under a seed of (train.seed, step, prompt id), in a forked RNG: the same samples on
one process or several, after a resume or not, and the rest of training's randomness untouched.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dante.cache.payload import decode, encode
from dante.cache.records import CacheRecord, read_cache
from dante.cache.writer import CacheWriter
from dante.config import Recipe, resolved_dict, stable_hash
from dante.errors import DanteError
from dante.prompts import Prompt, prompt_set
from dante.teacher import Teacher, make_teacher
from dante.tokens import TokenBytes, TokenLogprobs
from dante.train.align import Chunk, align
from dante.train.data import render_record, use_chat
from dante.train.losses import chunk_log_ratios, token_advantages
from dante.train.student import eos_token_ids, unwrapped

SCORES = "on_policy_scores"


@dataclass
class Sample:
    """One student sample, scored and aligned: what its policy-gradient term needs. The student's
    own logprobs come from the training forward pass itself (``advantages``), not a second one."""

    prompt_ids: list[int]
    ids: list[int]  # the student's completion tokens (its end-of-sequence token included when written)
    chunks: list[Chunk]  # the text cut where both tokenizations have a boundary
    score: TokenLogprobs  # the teacher's tokens of the text and their logprobs
    text_tokens: int  # the student tokens of the text (``ids`` less a trailing end of sequence)
    log_ratio: float = 0.0  # log p_T(y) − log p_S(y) over the text, set by ``advantages``

    def advantages(self, student_logprobs: list[float], coef: float) -> list[float]:
        """Per completion token, coef · r_c of its chunk, from the student's logprobs of this step."""
        ratios = chunk_log_ratios(
            self.chunks, self.score.tokens, self.score.logprobs, student_logprobs[: self.text_tokens]
        )
        self.log_ratio = sum(ratios)
        return token_advantages(self.chunks, ratios, len(self.ids), coef=coef)


@dataclass
class OnPolicyStats:
    """Counted for the training manifest and the report (teacher compute next to the gain)."""

    samples: int = 0
    scored: int = 0  # samples the teacher scored now
    cache_hits: int = 0  # samples whose score was already in the score cache
    skipped_empty: int = 0
    skipped_not_text: int = 0  # the student's tokens are not valid UTF-8 (cut mid-character)
    skipped_not_round_trip: int = 0  # the teacher's tokenizer does not give the text back
    student_tokens: int = 0
    teacher_tokens_scored: int = 0
    teacher_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def score_key(recipe: Recipe) -> str:
    """The teacher settings that decide a score (engine, model, rendering) and the top-K asked."""
    teacher = resolved_dict(recipe)["teacher"]
    keep = {k: teacher.get(k) for k in ("backend", "model", "revision", "dtype", "use_chat_template")}
    keep["api"] = (teacher.get("openai") or {}).get("api")
    return stable_hash({**keep, "top_k": recipe.train.on_policy.top_k})


class ScoreCache:
    """Teacher scores of student texts, exactly once on disk (a ``CacheWriter`` folder)."""

    def __init__(self, folder: Path, enabled: bool) -> None:
        self.folder, self.enabled = folder, enabled
        self.scores: dict[str, TokenLogprobs] = {}
        self.writer: CacheWriter | None = None
        if not enabled:
            return
        self.writer = CacheWriter(folder, shard_size=1000, flush_every=1, manifest={"format": "dante-scores/1"})
        self.writer.open()
        for f in sorted(folder.glob("shard-*.jsonl")) + sorted(folder.glob(".partial-*.jsonl")):
            for rec in read_cache(f):
                self.scores[rec.id] = decode(rec.token_logprobs)

    @staticmethod
    def key(prompt: Prompt, text: str) -> str:
        return f"{prompt.id}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:24]}"

    def get(self, prompt: Prompt, text: str) -> TokenLogprobs | None:
        return self.scores.get(self.key(prompt, text))

    def put(self, prompt: Prompt, text: str, score: TokenLogprobs, k: int) -> TokenLogprobs:
        """Keep a fresh score; returns it as the cache stores it (logprobs in float16, the payload's
        format), so a sample scores the same whether it is scored now or read back after a resume."""
        key, payload = self.key(prompt, text), encode(score, k)
        self.scores[key] = stored = decode(payload)
        if self.writer is not None:
            self.writer.add(CacheRecord(id=key, prompt=prompt.prompt, teacher_text=text, token_logprobs=payload))
        return stored

    def close(self, seal: bool = True) -> None:
        if self.writer is not None:
            self.writer.close(seal=seal)
            self.writer = None


class OnPolicy:
    """The on-policy half of each step: prompts in a seeded order, the student's samples, their
    scores (cached), alignment and advantages. One per rank; the prompts are split like records."""

    def __init__(self, recipe: Recipe, student, accelerator, teacher: Teacher | None = None) -> None:
        cfg = recipe.train.on_policy
        self.recipe, self.cfg, self.student, self.accelerator = recipe, cfg, student, accelerator
        self.prompts = prompt_set(recipe)
        if not self.prompts:
            raise DanteError("train.on_policy needs prompts", field="prompts.source")
        self.teacher = teacher or make_teacher(recipe.teacher)
        if accelerator.is_main_process:
            self.teacher.check_scoring(cfg.top_k)  # before training: an engine that cannot score says so now
        self.chat = use_chat(student.tokenizer, recipe.student, recipe.student.model)
        self.token_bytes = TokenBytes(student.tokenizer)
        folder = recipe.student_dir / SCORES / score_key(recipe)
        self.cache = ScoreCache(folder, enabled=accelerator.is_main_process)
        self.stats = OnPolicyStats()
        self._orders: dict[int, list[int]] = {}

    def prompts_for(self, step: int, cursor: int, n: int) -> tuple[list[Prompt], int]:
        """The next ``n`` prompts of the epoch-wise seeded order; the new cursor."""
        out = []
        for i in range(cursor, cursor + n):
            epoch, pos = divmod(i, len(self.prompts))
            out.append(self.prompts[self.order(epoch)[pos]])
        return out, cursor + n

    def order(self, epoch: int) -> list[int]:
        """The seeded permutation of the prompts for ``epoch``, computed once."""
        if epoch not in self._orders:
            g = torch.Generator().manual_seed(self.recipe.train.seed * 1_000_003 + epoch)
            self._orders[epoch] = torch.randperm(len(self.prompts), generator=g).tolist()
        return self._orders[epoch]

    def samples(self, model, prompts: list[Prompt], step: int) -> list[Sample]:
        """The scored, aligned samples of ``prompts`` (this rank's share)."""
        out = []
        for p in prompts:
            prompt_ids = self.prompt_ids(p)
            with torch.random.fork_rng(devices=_cuda_devices(model)):
                torch.manual_seed(_seed(self.recipe.train.seed, step, p.id))
                (completions,) = self.student.generate(
                    model,
                    [prompt_ids],
                    max_new_tokens=self.cfg.max_new_tokens,
                    temperature=self.cfg.temperature,
                    top_p=self.cfg.top_p,
                    num_samples=self.cfg.samples_per_prompt,
                )
            for ids in completions:
                self.stats.samples += 1
                s = self.score(model, p, prompt_ids, ids)
                if s is not None:
                    out.append(s)
        return out

    def prompt_ids(self, p: Prompt) -> list[int]:
        rec = _PromptOnly(p.prompt, p.system, p.messages)
        return render_record(rec, self.student.tokenizer, self.chat)[0]

    def score(self, model, p: Prompt, prompt_ids: list[int], ids: list[int]) -> Sample | None:
        eos = {self.student.tokenizer.eos_token_id, *eos_token_ids(unwrapped(model), self.student.tokenizer)}
        body = ids[:-1] if ids and ids[-1] in eos else ids
        pieces = [self.token_bytes(i) for i in body]
        text = _text(pieces)
        while text is None and pieces and _cut_at_end(pieces):  # max_new_tokens cut the last character
            pieces, body, ids = pieces[:-1], body[:-1], body[:-1]
            text = _text(pieces)
        if text is None:
            self.stats.skipped_not_text += 1
            return None
        if not text:
            self.stats.skipped_empty += 1
            return None
        score = self.cache.get(p, text)
        if score is None:
            t0 = time.perf_counter()
            score = self.teacher.score([p], [text], self.cfg.top_k)[0]
            self.stats.teacher_seconds += time.perf_counter() - t0
            if score is None:
                self.stats.skipped_not_round_trip += 1
                return None
            self.stats.scored += 1
            self.stats.teacher_tokens_scored += len(score)
            score = self.cache.put(p, text, score, self.cfg.top_k)
        else:
            self.stats.cache_hits += 1
        offsets = _char_offsets(pieces)
        chunks = align(score.tokens, text, offsets)
        if chunks is None:
            self.stats.skipped_not_round_trip += 1
            return None
        self.stats.student_tokens += len(ids)
        return Sample(prompt_ids, list(ids), chunks, score, len(body))

    def close(self, seal: bool = True) -> None:
        """Release the score cache (sealed after a finished run) and the teacher."""
        self.cache.close(seal)
        self.teacher.close()


@dataclass
class _PromptOnly:
    """A prompt in the shape ``render_record`` reads (no completion)."""

    prompt: str
    system: str | None
    messages: list[dict[str, Any]] | None
    teacher_text: str = ""


def _char_offsets(pieces: list[bytes]) -> list[tuple[int, int]]:
    """The character span of each token of a text from its bytes; the tokens of one character
    (a byte-level tokenizer splits multi-byte characters) share that character's span."""
    spans, data = [], b""
    for piece in pieces:
        start = len(data.decode("utf-8", errors="ignore"))  # complete characters before the token
        data += piece
        end = len(data.decode("utf-8", errors="ignore"))
        spans.append((start, max(end, start + 1)))
    return spans


def _text(pieces: list[bytes]) -> str | None:
    try:
        return b"".join(pieces).decode("utf-8")
    except UnicodeDecodeError:
        return None


def _cut_at_end(pieces: list[bytes]) -> bool:
    """The bytes are valid UTF-8 but for a character cut at the end."""
    data = b"".join(pieces)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.end >= len(data) and exc.reason == "unexpected end of data"
    return False


def _seed(seed: int, step: int, prompt_id: str) -> int:
    digest = hashlib.sha256(f"{seed}:{step}:{prompt_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**63 - 1)


def _cuda_devices(model) -> list[int]:
    device = next(model.parameters()).device
    return [device.index or 0] if device.type == "cuda" else []


def check_warm_start(folder: str) -> None:
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise DanteError(
            "the warm start is not a model folder (no config.json)",
            file=path,
            field="train.on_policy.warm_start",
            hint="point it at a trained student's folder (e.g. an SFT run's <output_dir>/student)",
        )
