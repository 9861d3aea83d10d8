"""The cached records as a batch source (stage 4): the teacher cache read, filtered, split and
tokenized (``load_data``), ordered by the curriculum (``curriculum.BatchStream``), weighted by
CWCE (``losses.batch_weights``) and cut into this rank's packed micro-batches; and the held-out
loss over the records kept apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dante.cache.manifest import mixed_settings
from dante.cache.records import read_cache
from dante.config import Recipe, TrainConfig
from dante.errors import DanteError
from dante.train.objective.losses import IGNORE, batch_weights
from dante.train.objective.targets import targets_of
from dante.train.objective.terms import CrossEntropy, Term, recipe_folder, scales, source_terms
from dante.train.sources.base import Draw, micro_batches, rank_slice
from dante.train.sources.collate import collate
from dante.train.sources.curriculum import NEEDS_ENTROPY, BatchStream, check_entropies, run_positions
from dante.train.sources.examples import DataStats, Example, build_examples
from dante.train.sources.kd_data import KDStats, StudentVocab, TargetBuild
from dante.train.sources.splits import filter_records, split_heldout


@dataclass
class TrainData:
    """The cache as the student's examples (``load_data``)."""

    examples: list[Example]  # the training records, tokenized
    eval_examples: list[Example]  # the held-out records (train.eval_fraction)
    stats: DataStats


class CachedRecords:
    """The records source: each step the next global batch of the curriculum's stream, this rank's
    contiguous part of it as packed micro-batches, every token weighted by u_t (CWCE) over the
    global batch's D. Its state is the stream position (``cursor``); it also holds the held-out
    records and writes the cache's counts into the manifest. ``active``: it draws each step (not
    when the student's samples take the whole batch)."""

    name = "records"
    older_keys = {"cursor": "cursor"}  # RunState.cursor, before the sources kept their own state

    def __init__(
        self,
        data: TrainData,
        stream: BatchStream,
        cfg: TrainConfig,
        terms: list[Term],
        *,
        share: float,
        accelerator,
        pad_id: int,
        active: bool = True,
    ) -> None:
        self.data, self.stream, self.cfg, self.terms, self.share = data, stream, cfg, terms, share
        self.accelerator, self.pad_id, self.active = accelerator, pad_id, active
        self.cursor = 0  # position in the curriculum's stream

    @classmethod
    def from_recipe(cls, recipe: Recipe, student, accelerator, pad_id: int, on_policy_prompts: int, hooks=None):
        """The cache as the run's records source; ``on_policy_prompts`` of each step's sequences go
        to the student's samples (none: the records take the whole batch)."""
        cfg = recipe.train
        terms = source_terms(cls.name, cfg, recipe_folder(recipe))
        off_policy = None if cfg.batch_sequences is None else cfg.batch_sequences - on_policy_prompts
        if off_policy == 0 and not any(p.exists() for p in recipe.cache_dirs):  # on-policy alone needs no cache
            data = TrainData([], [], DataStats())
        else:
            data = load_data(recipe, student.tokenizer, accelerator, terms)
        stream = BatchStream(
            data.examples,
            cfg.curriculum,
            cfg.seed,
            batch_sequences=off_policy,
            batch_tokens=cfg.batch_tokens,
            run_positions=run_positions(cfg.steps, data.examples, off_policy, cfg.batch_tokens),
            pacing=cfg.pacing,
            order=getattr(hooks, "epoch_order", None),
        )
        share = 1.0 - cfg.on_policy.fraction if on_policy_prompts else 1.0
        active = stream.batch_tokens is not None or bool(stream.batch_sequences)
        return cls(data, stream, cfg, terms, share=share, accelerator=accelerator, pad_id=pad_id, active=active)

    def draw(self, step: int) -> RecordsDraw:
        cfg, acc = self.cfg, self.accelerator
        batch_idx, self.cursor = self.stream.next_batch(self.cursor)
        batch = [self.data.examples[i] for i in batch_idx]
        token_weight, denom = batch_weights([ex.entropy for ex in batch], [ex.n_completion for ex in batch], cfg.loss)
        groups = micro_batches(
            rank_slice(batch_idx, acc.process_index, acc.num_processes),
            len(batch_idx),
            acc.num_processes,
            cfg.micro_batch_size,
        )
        lams, kappas = scales(self.terms, step, cfg.steps)
        out = RecordsDraw(self, groups, dict(zip(batch_idx, token_weight, strict=True)), lams, kappas, denom)
        out.tokens, out.records = sum(len(ex) for ex in batch), len(batch)
        out.completion_tokens = sum(ex.n_completion for ex in batch)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"cursor": self.cursor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.cursor = int(state.get("cursor", 0))

    def held_out_loss(self, forward) -> float | None:
        cfg = self.cfg
        return held_out_loss(
            forward,
            self.data.eval_examples,
            self.accelerator,
            micro_batch_size=cfg.micro_batch_size,
            packing=cfg.packing,
            pad_id=self.pad_id,
        )

    def manifest(self, accelerator) -> dict[str, Any]:
        """The cache's part of the manifest: epochs, records trained on and held out, what
        tokenization and the filters did, and the teacher tokens those records cost."""
        examples, stats = self.data.examples, self.data.stats
        generated = stats.teacher_tokens or sum(ex.n_completion for ex in examples)  # older caches: none kept
        return {
            "epochs": self.cursor / len(examples) if examples else 0.0,
            "train_records": len(examples),
            "heldout_records": len(self.data.eval_examples),
            "data": stats.as_dict(),
            "teacher_compute": {"tokens_generated": generated},
        }

    def close(self, seal: bool = True) -> None:
        pass


class RecordsDraw(Draw):
    """A step's records on this rank: collated one micro-batch at a time, as the loop asks."""

    def __init__(self, source: CachedRecords, groups, weight_of, lams, kappas, denom) -> None:
        super().__init__(source.terms, lams, kappas, source.share, denom, source.accelerator.num_processes, len(groups))
        self.source, self.groups, self.weight_of = source, groups, weight_of
        self.completion_tokens = 0

    def micro_batch(self, k: int) -> dict[str, torch.Tensor]:
        src, group = self.source, self.groups[k]
        return collate(
            [src.data.examples[i] for i in group] or [empty_example(src.pad_id)],
            [self.weight_of[i] for i in group] or [0.0],
            packing=src.cfg.packing,
            pad_id=src.pad_id,
        )

    def log(self, accelerator) -> dict[str, Any]:
        """Each term's value over the step (its reduced sum / D), the plain mean token CE, and the
        source's loss Σ_k λ_k·value_k."""
        names = [t.name for t in self.terms] + ["ce"]
        reduced = dict(zip(names, self.reduced(accelerator, names), strict=True))
        denom = self.denom or 1.0
        out: dict[str, Any] = {}
        loss = None
        for term, kappa, lam in zip(self.terms, self.kappas, self.lams, strict=True):
            if kappa == 0.0:  # λ(t) = 0 this step: not computed, not logged
                continue
            value = reduced[term.name] / denom
            loss = lam * value if loss is None else loss + lam * value
            out.update(term.log(value, lam))
        out["ce"] = reduced["ce"] / max(1, self.completion_tokens)
        out["epoch"] = self.source.stream.epoch_of(self.source.cursor)
        return {"loss": loss, **out}


def empty_example(pad_id: int) -> Example:
    """A one-token example with no target, for a rank whose share of a micro-batch is empty."""
    return Example("<empty>", [pad_id], [IGNORE], 0, None)


@torch.no_grad()
def held_out_loss(forward, examples: list[Example], accelerator, *, micro_batch_size: int, packing: bool, pad_id: int):
    """Plain mean token CE (no CWCE weights) over the held-out records, summed across ranks."""
    if not examples:
        return None
    order = list(range(len(examples)))
    local = rank_slice(order, accelerator.process_index, accelerator.num_processes)
    ce_sum = torch.zeros((), device=accelerator.device)
    forward.model.eval()
    for mb in micro_batches(local, len(order), accelerator.num_processes, micro_batch_size):
        group = [examples[i] for i in mb] or [empty_example(pad_id)]
        with accelerator.autocast():
            batch = collate(group, [1.0] * len(group), packing=packing, pad_id=pad_id)
            ce_sum += forward.loss_sums(batch, [CrossEntropy()], [1.0])["ce"]
    forward.model.train()
    ce_sum = accelerator.reduce(ce_sum, "sum")
    return float(ce_sum) / sum(ex.n_completion for ex in examples)


def load_data(recipe: Recipe, tokenizer, accelerator, terms: list[Term] | None = None) -> TrainData:
    """The cache (``recipe.cache_dirs``), filtered and split, as the student's examples, with the
    targets ``terms`` read (``Term.targets``) built from each record's teacher payload."""
    cfg, student = recipe.train, recipe.student
    folders = recipe.cache_dirs
    source = str(folders[0]) if len(folders) == 1 else ", ".join(map(str, folders))
    check_mixed_caches(folders, cfg.allow_mixed_caches, accelerator)
    records, filtered = filter_records(read_cache(folders), cfg.filter, source)
    train_records, eval_records = split_heldout(records, cfg.eval_fraction, cfg.seed)
    build = None
    wanting = [t for t in terms or [] if t.targets]
    if wanting:
        build = TargetBuild(StudentVocab(tokenizer), KDStats(), targets_of(wanting))
        name = wanting[0].name
        if not any(r.token_logprobs is not None for r in train_records):
            raise DanteError(
                f"train.loss.{name} needs the teacher's per-token logprobs in the cache, and no record has them",
                file=source,
                field=f"train.loss.{name}",
                hint=f"write the cache with teacher.store_logprobs (e.g. 20), or switch train.loss.{name} off",
            )
    examples, stats = build_examples(
        train_records,
        tokenizer,
        student,
        cfg.max_length,
        source=source,
        model_ref=student.model,
        targets=build,
        reasoning=cfg.reasoning,
        system=cfg.system_prompt,
    )
    stats.teacher_tokens = sum(r.completion_tokens or 0 for r in train_records)
    if build is not None:
        stats.token_kd = build.stats.as_dict()
        if accelerator.is_main_process:
            k = stats.token_kd
            found = ", ".join(f"{n} {key}" for key, n in build.stats.counts.items() if key != "mapped_mass")
            accelerator.print(
                f"data: {', '.join(t.name for t in wanting)} on {k['aligned']} of {k['records']} records "
                f"({found or 'no targets'}); skipped "
                f"{k['records'] - k['with_payload']} without payload, {k['template_changed']} changed by the chat "
                f"template, not aligned: {k['unaligned'] or 'none'}"
            )
    eval_examples = (
        build_examples(
            eval_records,
            tokenizer,
            student,
            cfg.max_length,
            source=source,
            reasoning=cfg.reasoning,
            system=cfg.system_prompt,
        )[0]
        if eval_records
        else []
    )
    if cfg.curriculum in NEEDS_ENTROPY:
        check_entropies(examples, source, cfg.curriculum)
    stats.filter = filtered.as_dict()
    if accelerator.is_main_process and filtered.kept < filtered.read:
        accelerator.print(
            f"data: train.filter kept {filtered.kept} of {filtered.read} records, dropped {filtered.dropped}"
        )
    if accelerator.is_main_process and (stats.reasoning or stats.reasoning_too_long):
        accelerator.print(
            f"data: {stats.reasoning} records with the teacher's reasoning ({stats.reasoning_template} format); "
            f"{stats.reasoning_too_long} dropped, reasoning and answer longer than max_length={cfg.max_length}"
        )
    no_entropy = sum(ex.entropy is None for ex in examples)
    if accelerator.is_main_process and cfg.loss.cwce.weighted and no_entropy:
        accelerator.print(f"data: {no_entropy} records have no output_entropy; CWCE gives them weight 1.0")
    if accelerator.is_main_process and (stats.truncated or stats.dropped):
        accelerator.print(
            f"data: {stats.truncated} completions truncated to max_length={cfg.max_length}, "
            f"{stats.dropped} records dropped (prompt too long): {stats.dropped_ids}"
        )
    return TrainData(examples, eval_examples, stats)


def check_mixed_caches(folders: list[Path], allowed: bool, accelerator) -> None:
    """Several cache folders written with different teacher/prompt settings: refused (one
    student, one teacher), unless train.allow_mixed_caches; either way the differences are said."""
    lines = mixed_settings(folders)
    if not lines:
        return
    if not allowed:
        raise DanteError(
            "the cache folders were written with different teacher/prompt settings: " + " | ".join(lines[:3]),
            field="cache.dir",
            hint="train on folders of one teacher, or set train.allow_mixed_caches=true to mix them on purpose",
        )
    accelerator.print(
        "data: mixing cache folders of different settings (train.allow_mixed_caches): " + " | ".join(lines)
    )
