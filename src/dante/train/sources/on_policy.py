"""On-policy distillation across tokenizers as a batch source (stage 4, ``train.on_policy``):
each step the student writes completions of prompts from the recipe's prompt set, the teacher scores them in its own
tokenization (``Teacher.score``, any engine), and the student is trained on the chunk-level
reverse KL of its own samples (``losses.chunk_log_ratios`` / ``token_advantages``), optionally
with a dense top-K KL at the positions that are one token on both sides, mixed with the cached
off-policy records by ``fraction``.

The policy gradient goes through the same packed forward and chunked lm_head as the cached
records: its loss −Σ_j ρ_j·A_j / N (``losses.policy_gradient_sum``) has, at ρ = 1, the gradient
of Σ_j (A_j / N)·CE_j, so a sample is an ``Example`` whose per-token weights are its advantages.
ρ is 1 because each sample is written by the weights it trains and the step's update comes
after every micro-batch; the advantages use the logprobs the student wrote the sample with.

Scores go through a ``CacheWriter`` of their own (``<student_dir>/on_policy_scores/<key>``,
the key a hash of the teacher settings; a record per (prompt id, sha256 of the student text)),
so a repeated sample costs no teacher compute and a crash loses no score. Each sample is drawn
from its own generator seeded by (train.seed, step, prompt id, sample index)
(``student.RowSampler``): the same samples on one process or several, after a resume or not.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dante.cache.payload import decode, encode
from dante.cache.records import CacheRecord, iter_cache
from dante.cache.writer import CacheWriter
from dante.config import Recipe, resolved_dict, stable_hash
from dante.config.train import PolicyGradientSettings
from dante.errors import DanteError
from dante.prompts import Prompt, prompt_set
from dante.teacher import Teacher, make_teacher
from dante.tokens import TokenBytes, TokenLogprobs
from dante.train.align import Chunk, NotAligned, align
from dante.train.model.student import Written, eos_token_ids, unwrapped
from dante.train.objective.losses import IGNORE, chunk_log_ratios, chunk_returns, token_advantages
from dante.train.objective.targets import Span, TopK, top_k_spans
from dante.train.objective.terms import Term, recipe_folder, scales, source_terms
from dante.train.sources.base import Draw, rank_slice
from dante.train.sources.collate import collate
from dante.train.sources.examples import Example
from dante.train.sources.kd_data import StudentVocab
from dante.train.sources.records import empty_example
from dante.train.sources.render import render_prompt, use_chat

SCORES = "on_policy_scores"


@dataclass
class Sample:
    """One student sample, scored and aligned: what its policy-gradient term needs."""

    prompt_id: str
    prompt_ids: list[int]
    ids: list[int]  # the student's completion tokens (its end-of-sequence token included when written)
    logprobs: list[float]  # log p_S of each, under the weights that wrote it
    chunks: list[Chunk]  # the text cut where both tokenizations have a boundary
    score: TokenLogprobs  # the teacher's tokens of the text and their logprobs (and top-K)
    text_tokens: int  # the student tokens of the text (``ids`` less a trailing end of sequence)
    end_logprob: float | None = None  # the teacher's log p_T(end of turn) after the text, when scored
    log_ratios: list[float] = field(default_factory=list)  # r_c per chunk

    def __post_init__(self) -> None:
        self.log_ratios = chunk_log_ratios(
            self.chunks, self.score.tokens, self.score.logprobs, self.logprobs[: self.text_tokens]
        )

    @property
    def log_ratio(self) -> float:
        """log p_T(y) − log p_S(y) over the text (Σ_c r_c): minus the sample's reverse-KL estimate."""
        return sum(self.log_ratios)

    @property
    def end_log_ratio(self) -> float | None:
        """log p_T(end) − log p_S(end) of a sample the student ended and the teacher scored the end of."""
        if self.end_logprob is None or len(self.ids) == self.text_tokens:
            return None
        return self.end_logprob - self.logprobs[len(self.ids) - 1]

    def advantages(self, pg: PolicyGradientSettings, baseline: float = 0.0) -> list[float | None]:
        """Per completion token, β · G_c of its chunk (``token_advantages``: r_c at discount 0), and
        for the end-of-sequence token the end's log-ratio when it was scored, less ``baseline``;
        None for a token with no term (in no chunk, or in a chunk ``mask_above`` masks)."""
        raw = token_advantages(
            self.chunks,
            self.log_ratios,
            len(self.ids),
            coef=pg.kl_coef,
            end=self.end_log_ratio,
            discount=pg.discount,
            mask_above=pg.mask_above,
        )
        return [None if a is None else a - baseline for a in raw]

    def masked(self, pg: PolicyGradientSettings) -> int:
        """The chunks (and end) ``mask_above`` leaves without a term (``chunk_returns``'s Nones)."""
        if pg.mask_above is None:
            return 0
        returns, end = chunk_returns(self.log_ratios, self.end_log_ratio, mask_above=pg.mask_above)
        return returns.count(None) + (self.end_log_ratio is not None and end is None)

    def example(
        self, token_weight: float, pg: PolicyGradientSettings, dense: list[Span] | None = None, baseline: float = 0.0
    ) -> tuple[Example, list[float]]:
        """The sample as a training ``Example`` and its per-position weights (A_j − b) · token_weight;
        ``dense``: the top-K target's spans at completion token indices, moved to sequence positions."""
        n_prompt = len(self.prompt_ids)
        ids = self.prompt_ids + self.ids
        targets = [IGNORE] * (n_prompt - 1) + self.ids + [IGNORE]
        adv = [0.0 if a is None else a * token_weight for a in self.advantages(pg, baseline)]
        weights = [0.0] * (n_prompt - 1) + adv + [0.0]
        found = {TopK.name: [s.shifted(n_prompt - 1) for s in dense]} if dense else {}
        return Example(f"on-policy:{self.prompt_id}", ids, targets, len(self.ids), None, term_targets=found), weights


@dataclass
class OnPolicyStats:
    """Counted for the training manifest and the report (teacher compute next to the gain), and
    the wall time of each part of the on-policy work on this process."""

    samples: int = 0
    scored: int = 0  # samples the teacher scored now
    cache_hits: int = 0  # samples whose score was already in the score cache
    skipped_empty: int = 0
    skipped_not_text: int = 0  # the student's tokens are not valid UTF-8 (cut mid-character)
    skipped_not_round_trip: int = 0  # the teacher's tokenizer does not give the text back
    student_tokens: int = 0
    teacher_tokens_scored: int = 0
    dense_positions: int = 0  # student tokens one to one with a teacher token that has top-K targets
    teacher_seconds: float = 0.0
    sampling_seconds: float = 0.0
    update_seconds: float = 0.0  # the forward and backward passes of the samples

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def score_key(recipe: Recipe) -> str:
    """The teacher settings that decide a score (engine, model, rendering) and the top-K asked."""
    teacher = resolved_dict(recipe)["teacher"]
    keep = {k: teacher.get(k) for k in ("backend", "model", "revision", "dtype", "use_chat_template")}
    keep["api"] = (teacher.get("openai") or {}).get("api")
    if teacher.get("thinking", "auto") != "auto":  # the switch renders the prompt the teacher scores under
        keep["thinking"] = teacher["thinking"]
    return stable_hash({**keep, "top_k": recipe.train.loss.dense_kl.top_k})


class ScoreCache:
    """Teacher scores of student texts, exactly once on disk: each rank writes its own
    ``CacheWriter`` folder (``rank-<r>``) and reads every rank's at start, so a resumed run, on
    as many processes or another number, finds every score written before the crash."""

    def __init__(self, root: Path, rank: int) -> None:
        self.root = root
        self.scores: dict[str, TokenLogprobs] = {}
        folder = root / f"rank-{rank:05d}"
        self.writer: CacheWriter | None = CacheWriter(
            folder, shard_size=1000, flush_every=1, manifest={"format": "dante-scores/1"}
        )
        self.writer.open()  # recovers this rank's partial file first
        for f in sorted(root.glob("rank-*/shard-*.jsonl")) + sorted(root.glob("rank-*/.partial-*.jsonl")):
            # another rank may be appending to its file: a torn last line is skipped, not an error
            for _, _, rec, problems in iter_cache(f):
                if rec is not None and not problems:
                    self.scores[rec.id] = decode(rec.token_logprobs)

    @staticmethod
    def key(prompt: Prompt, text: str, end: bool = False) -> str:
        """(prompt id, sha256 of the text); a score that includes the end of turn has its own key."""
        data = text.encode("utf-8") + (b"\x00<end of turn>" if end else b"")
        return f"{prompt.id}-{hashlib.sha256(data).hexdigest()[:24]}"

    def get(self, prompt: Prompt, text: str, end: bool = False) -> TokenLogprobs | None:
        return self.scores.get(self.key(prompt, text, end))

    def put(self, prompt: Prompt, text: str, score: TokenLogprobs, k: int, end: bool = False) -> TokenLogprobs:
        """Keep a fresh score; returns it as the cache stores it (logprobs in float16, the payload's
        format), so a sample scores the same whether it is scored now or read back after a resume."""
        key, payload = self.key(prompt, text, end), encode(score, k)
        self.scores[key] = stored = decode(payload)
        if self.writer is not None:
            self.writer.add(CacheRecord(id=key, prompt=prompt.prompt, teacher_text=text, token_logprobs=payload))
        return stored

    def close(self, seal: bool = True) -> None:
        if self.writer is not None:
            self.writer.close(seal=seal)
            self.writer = None


@dataclass
class _Draft:
    """A written sample on its way to the teacher: its text, or why it has none."""

    prompt: Prompt
    prompt_ids: list[int]
    written: Written
    body: int  # student tokens of the text
    pieces: list[bytes]
    text: str

    @property
    def ended(self) -> bool:
        """The student wrote its end of sequence (the sample was not cut by max_new_tokens)."""
        return len(self.written.ids) > self.body


class OnPolicy:
    """The on-policy half of each step: prompts in a seeded order, the student's samples, their
    scores (cached), alignment and dense targets. One per rank; the prompts are split like records."""

    def __init__(self, recipe: Recipe, student, accelerator, teacher: Teacher | None = None) -> None:
        cfg = recipe.train.on_policy
        self.recipe, self.cfg, self.student, self.accelerator = recipe, cfg, student, accelerator
        self.pg, self.dense = recipe.train.loss.policy_gradient, recipe.train.loss.dense_kl  # the terms' settings
        check_unsharded(accelerator)
        self.prompts = prompt_set(recipe)
        if not self.prompts:
            raise DanteError("train.on_policy needs prompts", field="prompts.source")
        self.teacher = teacher or make_teacher(recipe.teacher)
        if accelerator.is_main_process:  # before training: an engine that cannot score says so now
            self.teacher.check_scoring(self.dense.top_k, end=self.pg.score_end)
        self.chat = use_chat(student.tokenizer, recipe.student, recipe.student.model)
        self.token_bytes = TokenBytes(student.tokenizer)
        self.vocab = StudentVocab(student.tokenizer) if self.dense.weight > 0 else None
        self.cache = ScoreCache(recipe.student_dir / SCORES / score_key(recipe), accelerator.process_index)
        self.stats = OnPolicyStats()
        self._orders: dict[int, list[int]] = {}
        self._prompt_ids: dict[str, list[int]] = {}

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
        """The scored, aligned samples of ``prompts`` (this rank's share): written in batches,
        scored by the teacher in one call for the texts the score cache does not hold."""
        cfg = self.cfg
        rows = [(p, j) for p in prompts for j in range(cfg.samples_per_prompt)]
        t0 = time.perf_counter()
        drafts: list[_Draft] = []
        for start in range(0, len(rows), cfg.generate_batch):
            part = rows[start : start + cfg.generate_batch]
            written = self.student.generate(
                model,
                [self.prompt_ids(p) for p, _ in part],
                max_new_tokens=cfg.max_new_tokens,
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                seeds=[_seed(self.recipe.train.seed, step, p.id, j) for p, j in part],
            )
            for (p, _), w in zip(part, written, strict=True):
                self.stats.samples += 1
                draft = self.draft(model, p, w)
                if draft is not None:
                    drafts.append(draft)
        self.stats.sampling_seconds += time.perf_counter() - t0
        scores = self.scores(drafts)
        out = []
        for d, score in zip(drafts, scores, strict=True):
            sample = self.aligned(d, score)
            if sample is not None:
                out.append(sample)
        return out

    def prompt_ids(self, p: Prompt) -> list[int]:
        if p.id not in self._prompt_ids:
            system = self.recipe.train.system_prompt
            tok = self.student.tokenizer
            self._prompt_ids[p.id] = render_prompt(p.prompt, p.system, p.messages, tok, self.chat, system=system)
        return self._prompt_ids[p.id]

    def draft(self, model, p: Prompt, written: Written) -> _Draft | None:
        """The sample's text (its end of sequence off, a character cut by max_new_tokens dropped),
        or None for a sample that has no text (counted)."""
        eos = {self.student.tokenizer.eos_token_id, *eos_token_ids(unwrapped(model), self.student.tokenizer)}
        ids = written.ids
        ended = bool(ids) and ids[-1] in eos
        body = ids[:-1] if ended else list(ids)
        pieces = [self.token_bytes(i) for i in body]
        text = _text(pieces)
        while text is None and pieces and _cut_at_end(pieces):  # max_new_tokens cut the last character
            pieces, body, ended = pieces[:-1], body[:-1], False
            text = _text(pieces)
        if text is None:
            self.stats.skipped_not_text += 1
            return None
        if not text:
            self.stats.skipped_empty += 1
            return None
        kept = ids if ended else body  # the end of sequence trains with the text it ends
        return _Draft(p, self.prompt_ids(p), Written(kept, written.logprobs[: len(kept)]), len(body), pieces, text)

    def scores(self, drafts: list[_Draft]) -> list[TokenLogprobs | None]:
        """The teacher's score of each draft: from the score cache, else in one teacher call for
        the distinct texts it does not hold."""
        keys = [ScoreCache.key(d.prompt, d.text, self.end_scored(d)) for d in drafts]
        out: dict[str, TokenLogprobs | None] = {
            k: self.cache.get(d.prompt, d.text, self.end_scored(d)) for k, d in zip(keys, drafts, strict=True)
        }
        todo = [k for k, s in out.items() if s is None]
        self.stats.cache_hits += sum(out[k] is not None for k in keys)
        first = dict(zip(reversed(keys), reversed(drafts), strict=True))  # one draft per key
        if todo:
            t0 = time.perf_counter()
            fresh = self.teacher.score(
                [first[k].prompt for k in todo],
                [first[k].text for k in todo],
                self.dense.top_k,
                ended=[self.end_scored(first[k]) for k in todo] if self.pg.score_end else None,
            )
            self.stats.teacher_seconds += time.perf_counter() - t0
            for k, score in zip(todo, fresh, strict=True):
                if score is not None:
                    self.stats.scored += 1
                    self.stats.teacher_tokens_scored += len(score)
                    d = first[k]
                    out[k] = self.cache.put(d.prompt, d.text, score, self.dense.top_k, self.end_scored(d))
        return [out[k] for k in keys]

    def end_scored(self, d: _Draft) -> bool:
        """The teacher scores the end of turn after this draft (``score_end`` and the student ended it)."""
        return self.pg.score_end and d.ended

    def aligned(self, d: _Draft, score: TokenLogprobs | None) -> Sample | None:
        end = None
        if score is not None and self.end_scored(d):  # the last token is the end of turn
            if not len(score) or score.tokens[-1] != b"":
                raise DanteError(
                    f"the teacher's score of a sample of prompt {d.prompt.id} has no end-of-turn token",
                    field="train.loss.policy_gradient.score_end",
                )
            end = score.logprobs[-1]
            score = TokenLogprobs(score.tokens[:-1], score.logprobs[:-1], score.top[:-1])
        try:
            chunks = None if score is None else align(score.tokens, d.pieces, d.text.encode("utf-8"))
        except NotAligned:  # the teacher's tokens do not spell the sample's text
            chunks = None
        if chunks is None:
            self.stats.skipped_not_round_trip += 1
            return None
        self.stats.student_tokens += len(d.written.ids)
        return Sample(d.prompt.id, d.prompt_ids, d.written.ids, d.written.logprobs, chunks, score, d.body, end)

    def dense_targets(self, sample: Sample) -> list[Span] | None:
        """The teacher's top-K at the sample's one-to-one positions (the dense term), or None."""
        if self.vocab is None or not sample.score.top:
            return None
        found = top_k_spans(sample.score.top, sample.chunks, self.vocab)
        self.stats.dense_positions += len(found)
        return found

    def close(self, seal: bool = True) -> None:
        """Release the score cache (sealed after a finished run) and the teacher."""
        self.cache.close(seal)
        self.teacher.close()


class OnPolicySamples:
    """The on-policy source: each step this rank's share of the next prompts of the seeded order,
    the student's samples of them (written by the weights being trained), scored by the teacher and
    aligned, as packed micro-batches whose per-token weights are the advantages over N, the student
    tokens of every rank's samples (so accumulation and DDP keep the objective: −Σ_j A_j·log p_S(y_j) / N,
    plus κ·Σ v·KL / N for the dense term). Its state: its cursor in the prompt order and the totals
    (``OnPolicyStats``), which a checkpoint keeps."""

    name = "on_policy"
    active = True
    older_keys = {"on_policy_cursor": "cursor", "on_policy_stats": "stats"}  # RunState's, before

    def __init__(
        self,
        on_policy: OnPolicy,
        cfg,
        terms: list[Term],
        *,
        prompts_per_step: int,
        model,
        accelerator,
        pad_id: int,
    ) -> None:
        self.on_policy, self.cfg, self.terms, self.share = on_policy, cfg, terms, cfg.on_policy.fraction
        self.prompts_per_step, self.model, self.accelerator = prompts_per_step, model, accelerator
        self.pad_id = pad_id
        self.cursor = 0  # position in the seeded prompt order

    @classmethod
    def from_recipe(cls, recipe: Recipe, student, accelerator, model, pad_id: int, prompts_per_step: int):
        """The student's samples as the run's on-policy source (its terms built before the teacher)."""
        cfg = recipe.train
        terms = source_terms(cls.name, cfg, recipe_folder(recipe))
        sampler = OnPolicy(recipe, student, accelerator)
        return cls(
            sampler, cfg, terms, prompts_per_step=prompts_per_step, model=model, accelerator=accelerator, pad_id=pad_id
        )

    def state_dict(self) -> dict[str, Any]:
        return {"cursor": self.cursor, "stats": self.on_policy.stats.as_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.cursor = int(state.get("cursor", 0))
        if state.get("stats") is not None:  # a resumed run keeps its totals
            self.on_policy.stats = OnPolicyStats(**state["stats"])

    def held_out_loss(self, forward) -> float | None:
        return None

    def manifest(self, accelerator) -> dict[str, Any]:
        """What the samples cost the teacher, summed over the ranks: tokens it scored and its
        seconds (this process's clock on each), and the source's totals (``OnPolicyStats``)."""
        stats = every_rank(self.on_policy.stats, accelerator)
        return {
            "teacher_compute": {
                "tokens_scored": stats.teacher_tokens_scored,
                "seconds_scoring": stats.teacher_seconds,
                "on_policy": stats.as_dict(),
            }
        }

    def draw(self, step: int) -> OnPolicyDraw:
        acc, sampler, cfg = self.accelerator, self.on_policy, self.cfg
        prompts, self.cursor = sampler.prompts_for(step, self.cursor, self.prompts_per_step)
        before = (sampler.stats.sampling_seconds, sampler.stats.teacher_seconds)
        samples = sampler.samples(self.model, rank_slice(prompts, acc.process_index, acc.num_processes), step)
        counts = torch.tensor([len(samples), sum(len(s.ids) for s in samples)], device=acc.device)
        every = acc.gather(counts).reshape(-1, 2)
        slots = math.ceil(int(every[:, 0].max()) / cfg.micro_batch_size)
        groups = [
            list(range(len(samples)))[j * cfg.micro_batch_size : (j + 1) * cfg.micro_batch_size] for j in range(slots)
        ]
        lams, kappas = scales(self.terms, step, cfg.steps)
        out = OnPolicyDraw(self, samples, groups, int(every[:, 1].sum()), lams, kappas)
        if cfg.loss.policy_gradient.baseline == "mean":  # the mean advantage over every rank's sampled tokens
            advs = [a for smp in samples for a in smp.advantages(cfg.loss.policy_gradient) if a is not None]
            local = torch.tensor([sum(advs), len(advs)], dtype=torch.float32, device=acc.device)  # one dtype on all
            total, count = acc.reduce(local, "sum").tolist()
            out.baseline = total / count if count else 0.0
        out.batches = [out.collate(g) for g in groups]
        out.sampling_s = sampler.stats.sampling_seconds - before[0]
        out.scoring_s = sampler.stats.teacher_seconds - before[1]
        return out

    def close(self, seal: bool = True) -> None:
        self.on_policy.close(seal)


class OnPolicyDraw(Draw):
    """One step's scored samples on this rank as micro-batches (every rank runs as many, padding
    with empty ones), and the on-policy terms the step logs."""

    def __init__(self, source: OnPolicySamples, samples: list[Sample], groups, tokens: int, lams, kappas) -> None:
        super().__init__(source.terms, lams, kappas, source.share, 1.0, source.accelerator.num_processes, len(groups))
        self.source, self.samples, self.groups = source, samples, groups
        self.tokens = tokens  # student tokens of every rank's samples: N
        self.baseline = 0.0  # train.loss.policy_gradient.baseline: subtracted from every token's advantage
        self.sampling_s = self.scoring_s = 0.0
        self.batches: list[dict[str, torch.Tensor]] = []

    def micro_batch(self, k: int) -> dict[str, torch.Tensor]:
        return self.batches[k]

    def collate(self, group: list[int]) -> dict[str, torch.Tensor]:
        """The samples of ``group`` as one packed micro-batch (an empty one for a rank with none)."""
        src = self.source
        pg, dense, packing = src.cfg.loss.policy_gradient, src.cfg.loss.dense_kl, src.cfg.packing
        if not group:
            return collate([empty_example(src.pad_id)], [0.0], packing=packing, pad_id=src.pad_id)
        per_token = 1.0 / max(1, self.tokens)
        examples, weights = [], []
        for i in group:
            smp = self.samples[i]
            ex, w = smp.example(per_token, pg, src.on_policy.dense_targets(smp), baseline=self.baseline)
            examples.append(ex)
            weights.append(w)
        kd_weights = [per_token] * len(examples) if dense.weight > 0 else None
        return collate(examples, weights, packing=packing, pad_id=src.pad_id, kd_weights=kd_weights)

    def log(self, accelerator) -> dict[str, Any]:
        """The logged on-policy terms, summed over ranks: the reverse-KL estimate per sample and
        per student token (−Σ_c r_c), the dense KL per token, and ``loss``, the value of the
        objective the gradient follows (β·KL per token + κ·dense KL)."""
        pg, dense_kl, sampler = (
            self.source.cfg.loss.policy_gradient,
            self.source.cfg.loss.dense_kl,
            self.source.on_policy,
        )
        ends = [s.end_log_ratio for s in self.samples if s.end_log_ratio is not None]
        extra = [-sum(s.log_ratio for s in self.samples), float(len(self.samples)), sum(ends), float(len(ends))]
        terms = sum(len(s.log_ratios) + (s.end_log_ratio is not None) for s in self.samples)
        extra += [float(sum(s.masked(pg) for s in self.samples)), float(terms)]
        dense, kl_sum, n, end_sum, n_end, masked, n_terms = self.reduced(accelerator, ["dense_kl"], extra)
        per_token = kl_sum / max(1, self.tokens)
        sampler.stats.update_seconds += self.seconds
        loss = pg.kl_coef * per_token + dense_kl.weight * dense
        return {
            "loss": loss,
            # log p_T(end) − log p_S(end) over the samples whose end was scored (train.loss.policy_gradient.score_end)
            "on_policy_end_log_ratio": end_sum / n_end if pg.score_end and n_end else None,
            "on_policy_baseline": self.baseline if pg.baseline != "none" else None,
            # the share of chunk (and end) terms train.loss.policy_gradient.mask_above left out
            "on_policy_masked": masked / n_terms if pg.mask_above is not None and n_terms else None,
            "on_policy_kl": kl_sum / n if n else None,
            "on_policy_kl_per_token": per_token if n else None,
            "on_policy_dense_kl": dense if dense_kl.weight > 0 else None,
            "on_policy_samples": int(n),
            "on_policy_tokens": self.tokens,
            "on_policy_loss": loss,
            # this process's seconds: writing the samples, the teacher scoring them, their forward and backward
            "on_policy_sampling_s": self.sampling_s,
            "on_policy_scoring_s": self.scoring_s,
            "on_policy_update_s": self.seconds,
        }


def on_policy_share(recipe: Recipe) -> int:
    """On-policy prompts per step: round(fraction · batch_sequences), at least 1 when on."""
    cfg = recipe.train
    if not cfg.on_policy.enabled:
        return 0
    if cfg.batch_sequences is None:
        raise DanteError(
            "on-policy training splits a batch of sequences between the student's samples and cached records",
            field="train.on_policy.fraction",
            hint="set train.batch_sequences instead of train.batch_tokens",
        )
    return max(1, round(cfg.on_policy.fraction * cfg.batch_sequences))


def warm_started(recipe: Recipe) -> Recipe:
    """``train.on_policy.warm_start``: the run's student starts from a trained one (e.g. SFT), its
    weights and tokenizer."""
    folder = recipe.train.on_policy.warm_start
    if not folder:
        return recipe
    check_warm_start(folder)
    return recipe.model_copy(update={"student": recipe.student.model_copy(update={"model": folder})})


def every_rank(stats: OnPolicyStats, accelerator) -> OnPolicyStats:
    """The on-policy counts and seconds summed over the ranks (each wrote and scored its share)."""
    names = list(stats.as_dict())
    total = accelerator.reduce(torch.tensor([float(getattr(stats, k)) for k in names], dtype=torch.float64), "sum")
    values = dict(zip(names, total.tolist(), strict=True))
    return OnPolicyStats(**{k: v if k.endswith("seconds") else int(round(v)) for k, v in values.items()})


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


def _seed(seed: int, step: int, prompt_id: str, sample: int) -> int:
    digest = hashlib.sha256(f"{seed}:{step}:{prompt_id}:{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**63 - 1)


def check_unsharded(accelerator) -> None:
    """The student writes with HF ``generate`` on its own weights: under FSDP or DeepSpeed ZeRO-3
    each rank holds a shard, and gathering them for generation is not done yet (not testable
    without GPUs): a clear error instead of a hang or wrong samples."""
    kind = str(getattr(accelerator, "distributed_type", "")).upper()
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    zero3 = plugin is not None and plugin.deepspeed_config.get("zero_optimization", {}).get("stage") == 3
    if "FSDP" in kind or zero3:
        raise DanteError(
            "on-policy training samples with generate on the student's weights, which FSDP and ZeRO-3 shard",
            field="train.on_policy.fraction",
            hint="run on-policy training under DDP (accelerate's multi-GPU config), or a LoRA student on one GPU",
        )


def check_warm_start(folder: str) -> None:
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise DanteError(
            "the warm start is not a model folder (no config.json)",
            file=path,
            field="train.on_policy.warm_start",
            hint="point it at a trained student's folder (e.g. an SFT run's <output_dir>/student)",
        )
