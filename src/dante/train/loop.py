"""`dante train`: fine-tune the student on the teacher cache with the DANTE objective (stages 3-5).

Read top to bottom: ``setup`` loads the student and the cache and builds the engine; ``train``
runs the loop; ``train_step`` is one optimizer step (the next global batch of the curriculum,
its packed micro-batches, the TEA anchor once, clip, step); ``save`` writes a
``from_pretrained`` folder with its manifest. The formulas are in ``dante.train.losses``.
Runs on CPU, one GPU, or many through ``accelerate launch`` (DDP / FSDP / DeepSpeed).
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import set_seed
from transformers import get_scheduler

from dante.cache.manifest import mixed_settings
from dante.cache.records import read_cache
from dante.config import Recipe, resolved_dict
from dante.errors import DanteError
from dante.io import atomic_write_json
from dante.layout import CHECKPOINTS, METRICS, STUDENT_MANIFEST
from dante.train.checkpoint import latest_checkpoint, read_state, save_checkpoint
from dante.train.curriculum import NEEDS_ENTROPY, BatchStream, check_entropies, micro_batches, rank_slice, run_positions
from dante.train.data import DataStats, Example, build_examples, collate, filter_records, split_heldout
from dante.train.engine import build_optimizer, device_info, make_accelerator, package_versions
from dante.train.forward import Forward, empty_example, held_out_loss
from dante.train.kd_data import KDStats, StudentVocab
from dante.train.losses import (
    LossParts,
    TeaAnchor,
    batch_weights,
    micro_batch_loss,
    step_lambdas,
    step_terms,
)
from dante.train.metrics import MetricsLog, finite, format_info, progress_bar
from dante.train.on_policy import OnPolicy, OnPolicyStats, Sample, check_warm_start
from dante.train.student import FullStudent, make_student


@dataclass
class TrainResult:
    """What a finished run left on disk and its headline numbers."""

    output_dir: Path
    steps: int
    tokens_seen: int
    records_seen: int
    final_loss: float | None
    eval_loss: float | None
    initial_eval_loss: float | None
    wall_time_s: float
    metrics_path: Path
    manifest_path: Path
    resumed_from_step: int | None = None
    is_main_process: bool = True

    def __str__(self) -> str:
        ev = "" if self.eval_loss is None else f", held-out loss {self.initial_eval_loss:.4f} -> {self.eval_loss:.4f}"
        return (
            f"trained {self.steps} steps, {self.tokens_seen} tokens, final loss {self.final_loss}{ev}; "
            f"model at {self.output_dir}"
        )


@dataclass
class TrainData:
    """The cache as the student's examples (``load_data``)."""

    examples: list[Example]  # the training records, tokenized
    eval_examples: list[Example]  # the held-out records (train.eval_fraction)
    stats: DataStats


@dataclass
class Run:
    """One training run between set-up and save: the engine, the data and the running state.

    ``state`` is what a checkpoint stores besides accelerate's files: the step, the
    curriculum cursor, the tokens and records seen, and the wall time of earlier segments.
    """

    recipe: Recipe
    accelerator: Any
    student: FullStudent  # the kind of student (full fine-tuning, LoRA): load, checkpoints, save
    model: Any  # as prepared by accelerate (DDP / FSDP / DeepSpeed wrapper, or the model)
    optimizer: Any
    scheduler: Any
    forward: Forward
    anchor: TeaAnchor | None
    data: TrainData
    stream: BatchStream
    metrics: MetricsLog
    pad_id: int
    state: dict[str, Any]
    resumed_from: int | None
    parameters: tuple[int, int]  # (trainable, total), counted before FSDP shards them
    on_policy: OnPolicy | None = None  # train.on_policy: the student writes, the teacher scores
    on_policy_prompts: int = 0  # on-policy prompts per step (the rest of the batch is cached records)
    last_row: dict[str, Any] = field(default_factory=dict)  # the last step's metrics
    initial_eval: float | None = None
    setup_time_s: float = 0.0
    segment_start: float = 0.0

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def examples(self) -> list[Example]:
        return self.data.examples

    @property
    def off_policy_records(self) -> bool:
        """Whether a step takes cached records (all of it unless on-policy prompts fill the batch)."""
        return self.stream.batch_tokens is not None or bool(self.stream.batch_sequences)

    def wall_time_s(self) -> float:
        """Training wall time over every segment of the run (resumes add up)."""
        return self.state["wall_time_s"] + time.perf_counter() - self.segment_start

    def held_out_loss(self) -> float | None:
        cfg = self.recipe.train
        return held_out_loss(
            self.forward,
            self.data.eval_examples,
            self.accelerator,
            micro_batch_size=cfg.micro_batch_size,
            packing=cfg.packing,
            pad_id=self.pad_id,
        )


def train(recipe: Recipe, resume: bool = False) -> TrainResult:
    """Train ``recipe.student`` on ``recipe.cache_dir``; write the model to ``recipe.student_dir``.

    resume=True continues from the newest complete checkpoint in ``<student_dir>/checkpoints``
    and produces the same later losses as an uninterrupted run.
    """
    run = setup(recipe, resume)
    cfg = recipe.train
    progress, task = progress_bar(run.is_main, cfg.steps, run.state["step"])
    run.model.train()
    try:
        steps(run, progress, task)
    except BaseException:
        if run.on_policy is not None:  # scores made so far stay durable; the lock is released for a resume
            run.on_policy.close(seal=False)
        raise
    return save(run, run.last_row)


def steps(run: Run, progress, task) -> None:
    """The loop: a step, the held-out loss when due, the metrics row, a checkpoint when due."""
    recipe, cfg = run.recipe, run.recipe.train
    with progress:
        for step in range(run.state["step"] + 1, cfg.steps + 1):
            row = train_step(run, step)
            if run.data.eval_examples and ((cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps):
                row["eval_loss"] = run.held_out_loss()
            if step % cfg.log_every == 0 or step == cfg.steps or "eval_loss" in row:
                log_row(run, row)
            progress.update(task, completed=step, info=format_info(row))
            run.state["step"], run.last_row = step, row
            if step % cfg.checkpoint_every == 0 and step < cfg.steps:
                state = {**run.state, "wall_time_s": run.wall_time_s()}
                save_checkpoint(run.accelerator, recipe.student_dir, step, state, cfg.keep_checkpoints)


# -- set-up ------------------------------------------------------------------------------------


def setup(recipe: Recipe, resume: bool) -> Run:
    """Everything the loop needs: the engine, the tokenized cache, the prepared model and
    optimizer, and, on resume, the checkpoint's state; the held-out loss before training."""
    cfg, out = recipe.train, recipe.student_dir
    t_start = time.perf_counter()
    accelerator = make_accelerator(cfg, out)
    set_seed(cfg.seed)
    ckpt = checkpoint_to_resume(out, resume)
    on_policy_prompts = on_policy_share(recipe)
    if cfg.on_policy.warm_start:  # start from a trained student (e.g. SFT), its weights and tokenizer
        check_warm_start(cfg.on_policy.warm_start)
        recipe = recipe.model_copy(
            update={"student": recipe.student.model_copy(update={"model": cfg.on_policy.warm_start})}
        )
    student = make_student(recipe)
    off_policy = None if cfg.batch_sequences is None else cfg.batch_sequences - on_policy_prompts
    if off_policy == 0 and not any(p.exists() for p in recipe.cache_dirs):  # on-policy alone needs no cache
        data = TrainData([], [], DataStats())
    else:
        data = load_data(recipe, student.tokenizer, accelerator)
    stream = BatchStream(
        data.examples,
        cfg.curriculum,
        cfg.seed,
        batch_sequences=off_policy,
        batch_tokens=cfg.batch_tokens,
        run_positions=run_positions(cfg.steps, data.examples, off_policy, cfg.batch_tokens),
        pacing=cfg.pacing,
    )
    model, anchor = student.load(accelerator)
    parameters = student.parameter_counts(model)
    optimizer = build_optimizer(model, cfg)
    scheduler = get_scheduler(
        cfg.lr_scheduler, optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=cfg.steps
    )
    core = student.core(model)  # the transformers model under peft's wrapper, if any
    if accelerator.state.deepspeed_plugin is not None:  # no dataloader to infer it from
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = cfg.micro_batch_size
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)  # not prepared: accelerate would step it once per process
    forward = Forward(model, core, accelerator, chunked_ce=cfg.loss.chunked_ce, packed_attention=cfg.packing)
    student.prepare_checkpoints(accelerator, model)

    state: dict[str, Any] = {"step": 0, "cursor": 0, "tokens": 0, "records": 0, "wall_time_s": 0.0}
    if on_policy_prompts:
        state["on_policy_cursor"] = 0
    if resume:
        student.resume(accelerator, model, ckpt)
        state.update(read_state(ckpt))
        accelerator.print(f"resumed from {ckpt} (step {state['step']})")
    resumed_from = state["step"] if resume else None
    metrics = MetricsLog(out / METRICS, enabled=accelerator.is_main_process, resume_step=resumed_from)
    if cfg.trackers:
        accelerator.init_trackers(
            recipe.name,
            config={k: v for k, v in cfg.model_dump(mode="json").items() if isinstance(v, int | float | str | bool)},
        )
    pad_id = student.tokenizer.pad_token_id if student.tokenizer.pad_token_id is not None else 0
    run = Run(
        recipe=recipe,
        accelerator=accelerator,
        student=student,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        forward=forward,
        anchor=anchor,
        data=data,
        stream=stream,
        metrics=metrics,
        pad_id=pad_id,
        state=state,
        resumed_from=resumed_from,
        parameters=parameters,
        on_policy=OnPolicy(recipe, student, accelerator) if on_policy_prompts else None,
        on_policy_prompts=on_policy_prompts,
    )
    if run.on_policy is not None and "on_policy_stats" in state:
        run.on_policy.stats = OnPolicyStats(**state["on_policy_stats"])
    if resume:
        run.initial_eval = next((r.get("eval_loss") for r in metrics.rows() if r.get("step") == 0), None)
    elif data.eval_examples:
        run.initial_eval = run.held_out_loss()
        metrics.write({"step": 0, "eval_loss": run.initial_eval, "tokens": 0})
    run.segment_start = time.perf_counter()
    run.setup_time_s = run.segment_start - t_start
    return run


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


def checkpoint_to_resume(out: Path, resume: bool) -> Path | None:
    """The newest complete checkpoint when resuming (an error if there is none); None for a fresh
    run (an error if the folder already holds a run's checkpoints)."""
    ckpt = latest_checkpoint(out)
    if resume and ckpt is None:
        raise DanteError(
            "no complete checkpoint to resume from", file=out / CHECKPOINTS, hint="run without --resume to start fresh"
        )
    if not resume and ckpt is not None:
        raise DanteError(
            "output already holds checkpoints of a run",
            file=ckpt,
            hint="pass --resume to continue it, or delete the folder to start over",
        )
    return ckpt if resume else None


def load_data(recipe: Recipe, tokenizer, accelerator) -> TrainData:
    """The cache (``recipe.cache_dirs``), filtered and split, as the student's examples."""
    cfg, student = recipe.train, recipe.student
    folders = recipe.cache_dirs
    source = str(folders[0]) if len(folders) == 1 else ", ".join(map(str, folders))
    check_mixed_caches(folders, cfg.allow_mixed_caches, accelerator)
    records, filtered = filter_records(read_cache(folders), cfg.filter, source)
    train_records, eval_records = split_heldout(records, cfg.eval_fraction, cfg.seed)
    kd = None
    if cfg.loss.token_kd > 0:
        kd = (StudentVocab(tokenizer), KDStats())
        if not any(r.token_logprobs is not None for r in train_records):
            raise DanteError(
                "train.loss.token_kd needs the teacher's per-token logprobs in the cache, and no record has them",
                file=source,
                field="train.loss.token_kd",
                hint="write the cache with teacher.store_logprobs (e.g. 20), or set train.loss.token_kd=0",
            )
    examples, stats = build_examples(
        train_records, tokenizer, student, cfg.max_length, source=source, model_ref=student.model, kd=kd
    )
    stats.teacher_tokens = sum(r.completion_tokens or 0 for r in train_records)
    if kd is not None:
        stats.token_kd = kd[1].as_dict()
        if accelerator.is_main_process:
            k = stats.token_kd
            accelerator.print(
                f"data: token_kd on {k['aligned']} of {k['records']} records ({k['positions']} positions, "
                f"{k['one_to_one_share'] or 0:.0%} of their tokens one to one with a teacher token); skipped "
                f"{k['records'] - k['with_payload']} without payload, {k['not_joining']} whose teacher tokens do not "
                f"join to the text, {k['template_changed']} changed by the chat template"
            )
    eval_examples = (
        build_examples(eval_records, tokenizer, student, cfg.max_length, source=source)[0] if eval_records else []
    )
    if cfg.curriculum in NEEDS_ENTROPY:
        check_entropies(examples, source, cfg.curriculum)
    stats.filter = filtered.as_dict()
    if accelerator.is_main_process and filtered.kept < filtered.read:
        accelerator.print(
            f"data: train.filter kept {filtered.kept} of {filtered.read} records, dropped {filtered.dropped}"
        )
    no_entropy = sum(ex.entropy is None for ex in examples)
    if accelerator.is_main_process and cfg.loss.cwce and no_entropy:
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


# -- one optimizer step --------------------------------------------------------------------------


def train_step(run: Run, step: int) -> dict[str, Any]:
    """One optimizer update on the next global batch; returns its metrics row.

    L = λ_CE(t) · Σ_t u_t·CE_t / D + λ_KD(t) · Σ_t u_t·KL_t / D + λ_TEA(t) · ‖E − E₀‖²: D
    covers the whole global batch, so the micro-batches' and ranks' gradients add up to the
    full-batch gradient (``losses.micro_batch_loss``); the logged terms are ``losses.step_terms``.
    """
    cfg, accelerator = run.recipe.train, run.accelerator
    world, device = accelerator.num_processes, accelerator.device
    t0 = time.perf_counter()
    batch_idx: list[int] = []
    if run.off_policy_records:
        batch_idx, run.state["cursor"] = run.stream.next_batch(run.state["cursor"])
    batch = [run.examples[i] for i in batch_idx]
    u, denom = batch_weights([ex.entropy for ex in batch], [ex.n_completion for ex in batch], cfg.loss)
    weight_of = dict(zip(batch_idx, u))
    lambdas = step_lambdas(step, cfg.steps, cfg.loss)
    groups = (
        micro_batches(
            rank_slice(batch_idx, accelerator.process_index, world), len(batch_idx), world, cfg.micro_batch_size
        )
        if batch
        else []
    )
    on = OnPolicyStep.collect(run, step) if run.on_policy is not None else None
    n_on = len(on.groups) if on is not None else 0
    off_share = 1.0 - cfg.on_policy.fraction if on is not None else 1.0  # GKD's mixture: (1 − λ)·off + λ·on
    sums = LossParts(*(torch.zeros((), device=device) for _ in LossParts._fields))
    tea_value = torch.zeros((), device=device)
    for k in range(n_on + len(groups)):
        t_micro = time.perf_counter()
        is_last = k == n_on + len(groups) - 1
        accelerator.sync_gradients = is_last  # DeepSpeed steps inside backward only when True
        with accelerator.no_sync(run.model) if not is_last else nullcontext():
            anchored = run.anchor is not None and is_last  # TEA once per step, identical on every rank
            if anchored:
                run.anchor.arm()
            if k < n_on:  # the student's own samples first (dante.train.on_policy)
                loss = on.loss(run, k) * world
            else:
                group = groups[k - n_on]
                micro = collate(
                    [run.examples[i] for i in group] or [empty_example(run.pad_id)],
                    [weight_of[i] for i in group] or [0.0],
                    packing=cfg.packing,
                    pad_id=run.pad_id,
                )
                with accelerator.autocast():
                    parts = run.forward.loss_sums(micro, kd_scale=lambdas.kd_scale)
                loss = off_share * micro_batch_loss(parts, lambdas, denom, world)
                sums = LossParts(*(s + p.detach() for s, p in zip(sums, parts, strict=True)))
            if anchored:
                tea = run.anchor.take()
                loss = loss + lambdas.tea * tea
                tea_value = tea.detach()
            accelerator.backward(loss)
            if k < n_on:
                on.seconds += time.perf_counter() - t_micro
    grad_norm = accelerator.clip_grad_norm_(run.model.parameters(), cfg.grad_clip or math.inf)
    lr = run.scheduler.get_last_lr()[0]
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)

    reduced = accelerator.reduce(torch.stack(list(sums)), "sum").tolist()  # one collective for every part
    terms = step_terms(
        dict(zip(LossParts._fields, reduced, strict=True)),
        lambdas,
        denom or 1.0,
        sum(ex.n_completion for ex in batch),
        float(tea_value),
    )
    if on is not None:
        terms.update(on.terms(accelerator, cfg.on_policy))
        run.on_policy.stats.update_seconds += on.seconds
        run.state["on_policy_stats"] = run.on_policy.stats.as_dict()  # checkpointed: totals survive a resume
        terms["loss"] = off_share * terms["loss"] + cfg.on_policy.fraction * terms["on_policy_loss"]
    step_tokens = sum(len(ex) for ex in batch) + (on.tokens if on is not None else 0)
    run.state["tokens"] += step_tokens
    run.state["records"] += len(batch)
    dt = time.perf_counter() - t0
    return {
        "step": step,
        **terms,
        "lr": lr,
        "grad_norm": finite(float(grad_norm)) if grad_norm is not None else None,
        "tokens": run.state["tokens"],
        "records": run.state["records"],
        "epoch": run.stream.epoch_of(run.state["cursor"]),
        "tokens_per_s": step_tokens / dt if dt > 0 else 0.0,
    }


class OnPolicyStep:
    """This rank's on-policy samples of one step as packed micro-batches of ``Example``s whose
    per-token weights are the advantages over N, the student tokens of every rank's samples (so
    accumulation and DDP keep the objective: −Σ_j A_j·log p_S(y_j) / N, plus κ·Σ v·KL / N for
    the dense term). Every rank runs the same number of micro-batches, padding with empty ones."""

    def __init__(self, samples: list[Sample], groups: list[list[int]], tokens: int, device) -> None:
        self.samples, self.groups, self.tokens, self.device = samples, groups, tokens, device
        self.baseline = 0.0  # train.on_policy.baseline: subtracted from every token's advantage
        self.parts = LossParts(*(torch.zeros((), device=device) for _ in LossParts._fields))
        self.seconds = 0.0  # forward and backward of the samples (set by the loop)
        self.sampling_s = self.scoring_s = 0.0
        self.batches: list[dict[str, torch.Tensor]] = []

    @classmethod
    def collect(cls, run: Run, step: int) -> OnPolicyStep:
        acc, op, cfg = run.accelerator, run.on_policy, run.recipe.train
        prompts, run.state["on_policy_cursor"] = op.prompts_for(
            step, run.state.get("on_policy_cursor", 0), run.on_policy_prompts
        )
        before = (op.stats.sampling_seconds, op.stats.teacher_seconds)
        samples = op.samples(run.model, rank_slice(prompts, acc.process_index, acc.num_processes), step)
        counts = torch.tensor([len(samples), sum(len(s.ids) for s in samples)], device=acc.device)
        every = acc.gather(counts).reshape(-1, 2)
        slots = math.ceil(int(every[:, 0].max()) / cfg.micro_batch_size)
        groups = [
            list(range(len(samples)))[j * cfg.micro_batch_size : (j + 1) * cfg.micro_batch_size] for j in range(slots)
        ]
        on = cls(samples, groups, int(every[:, 1].sum()), acc.device)
        if cfg.on_policy.baseline == "mean":  # the mean advantage over every rank's sampled tokens
            advs = [a for smp in samples for a in smp.advantages(cfg.on_policy.kl_coef) if a is not None]
            local = torch.tensor([sum(advs), len(advs)], dtype=torch.float32, device=acc.device)  # one dtype on all
            total, count = acc.reduce(local, "sum").tolist()
            on.baseline = total / count if count else 0.0
        on.batches = [on.micro_batch(run, g) for g in groups]
        on.sampling_s, on.scoring_s = op.stats.sampling_seconds - before[0], op.stats.teacher_seconds - before[1]
        return on

    def micro_batch(self, run: Run, group: list[int]) -> dict[str, torch.Tensor]:
        """The samples of ``group`` as one packed micro-batch (an empty one for a rank with none)."""
        cfg = run.recipe.train.on_policy
        if not group:
            return collate([empty_example(run.pad_id)], [0.0], packing=run.recipe.train.packing, pad_id=run.pad_id)
        per_token = 1.0 / max(1, self.tokens)
        examples, weights = [], []
        for i in group:
            smp = self.samples[i]
            ex, w = smp.example(per_token, cfg.kl_coef, run.on_policy.dense_targets(smp), baseline=self.baseline)
            examples.append(ex)
            weights.append(w)
        kd_weights = [per_token] * len(examples) if cfg.dense_kl > 0 else None
        return collate(examples, weights, packing=run.recipe.train.packing, pad_id=run.pad_id, kd_weights=kd_weights)

    def loss(self, run: Run, k: int) -> torch.Tensor:
        """Micro-batch k's share of λ·(policy gradient + κ·dense KL), λ = train.on_policy.fraction."""
        cfg = run.recipe.train.on_policy
        with run.accelerator.autocast():
            parts = run.forward.loss_sums(
                self.batches[k], kd_scale=cfg.dense_kl, reverse_kd=cfg.dense_direction == "reverse"
            )
        self.parts = LossParts(*(s + p.detach() for s, p in zip(self.parts, parts, strict=True)))
        return cfg.fraction * parts.objective

    def terms(self, accelerator, cfg) -> dict[str, Any]:
        """The logged on-policy terms, summed over ranks: the reverse-KL estimate per sample and
        per student token (−Σ_c r_c), the dense KL per token, and ``on_policy_loss``, the value of
        the objective the gradient follows (β·KL per token + κ·dense KL)."""
        ends = [s.end_log_ratio for s in self.samples if s.end_log_ratio is not None]
        local = [-sum(s.log_ratio for s in self.samples), float(len(self.samples)), float(self.parts.token_kd)]
        local += [sum(ends), float(len(ends))]
        local_t = torch.tensor(local, dtype=torch.float32, device=self.device)
        kl_sum, n, dense, end_sum, n_end = accelerator.reduce(local_t, "sum").tolist()
        per_token = kl_sum / max(1, self.tokens)
        return {
            # log p_T(end) − log p_S(end) over the samples whose end was scored (train.on_policy.score_end)
            "on_policy_end_log_ratio": end_sum / n_end if cfg.score_end and n_end else None,
            "on_policy_baseline": self.baseline if cfg.baseline != "none" else None,
            "on_policy_kl": kl_sum / n if n else None,
            "on_policy_kl_per_token": per_token if n else None,
            "on_policy_dense_kl": dense if cfg.dense_kl > 0 else None,
            "on_policy_samples": int(n),
            "on_policy_tokens": self.tokens,
            "on_policy_loss": cfg.kl_coef * per_token + cfg.dense_kl * dense,
            # this process's seconds: writing the samples, the teacher scoring them, their forward and backward
            "on_policy_sampling_s": self.sampling_s,
            "on_policy_scoring_s": self.scoring_s,
            "on_policy_update_s": self.seconds,
        }


def every_rank(stats: OnPolicyStats, accelerator) -> OnPolicyStats:
    """The on-policy counts and seconds summed over the ranks (each wrote and scored its share)."""
    names = list(stats.as_dict())
    total = accelerator.reduce(torch.tensor([float(getattr(stats, k)) for k in names], dtype=torch.float64), "sum")
    values = dict(zip(names, total.tolist(), strict=True))
    return OnPolicyStats(**{k: v if k.endswith("seconds") else int(round(v)) for k, v in values.items()})


def log_row(run: Run, row: dict[str, Any]) -> None:
    """A metrics row to metrics.jsonl and to the configured trackers."""
    run.metrics.write(row)
    if run.recipe.train.trackers:
        run.accelerator.log({k: v for k, v in row.items() if v is not None and k != "step"}, step=row["step"])


# -- save ----------------------------------------------------------------------------------------


def save(run: Run, last: dict[str, Any]) -> TrainResult:
    """The finished student (``FullStudent.save``: a ``from_pretrained`` folder, or a LoRA
    adapter folder with ``merged/``) and its manifest; every rank takes part (FSDP / ZeRO-3
    gather the weights), the main one writes."""
    recipe, accelerator, out = run.recipe, run.accelerator, run.recipe.student_dir
    wall = run.wall_time_s()
    accelerator.wait_for_everyone()
    run.student.save(accelerator, run.model, out)
    if run.on_policy is not None:
        run.on_policy.close()
        run.on_policy.stats = every_rank(run.on_policy.stats, accelerator)
    manifest_path = out / STUDENT_MANIFEST
    if run.is_main:
        atomic_write_json(manifest_path, student_manifest(run, last, wall))
    if recipe.train.trackers:
        accelerator.end_training()
    accelerator.wait_for_everyone()
    return TrainResult(
        output_dir=out,
        steps=run.state["step"],
        tokens_seen=run.state["tokens"],
        records_seen=run.state["records"],
        final_loss=last.get("loss"),
        eval_loss=last.get("eval_loss"),
        initial_eval_loss=run.initial_eval,
        wall_time_s=wall,
        metrics_path=out / METRICS,
        manifest_path=manifest_path,
        resumed_from_step=run.resumed_from,
        is_main_process=run.is_main,
    )


def student_manifest(run: Run, last: dict[str, Any], wall: float) -> dict[str, Any]:
    """``dante_manifest.json``: what was trained on what, the headline losses, and where it ran."""
    recipe, state = run.recipe, run.state
    info = device_info(run.accelerator)
    trainable, total = run.parameters
    folders = [str(p) for p in recipe.cache_dirs]
    return {
        "name": recipe.name,
        "student": recipe.student.model,
        "cache_dir": folders if len(folders) > 1 else folders[0],
        "seed": recipe.train.seed,
        "steps": state["step"],
        "tokens_seen": state["tokens"],
        "records_seen": state["records"],
        "epochs": run.stream.epoch_of(state["cursor"]),
        "trainable_parameters": trainable,
        "total_parameters": total,
        "peft": run.student.manifest(),
        "train_records": len(run.data.examples),
        "heldout_records": len(run.data.eval_examples),
        "data": run.data.stats.as_dict(),
        "teacher_compute": teacher_compute(run),
        "final_loss": last.get("loss"),
        "final_cwce": last.get("cwce"),
        "initial_eval_loss": run.initial_eval,
        "eval_loss": last.get("eval_loss"),
        "wall_time_s": wall,
        "setup_time_s": run.setup_time_s,
        **info,
        "device_hours": wall * info["device_count"] / 3600.0,
        "resumed_from_step": run.resumed_from,
        "metrics_file": METRICS,
        "versions": package_versions(),
        "config": resolved_dict(recipe),
    }


def teacher_compute(run: Run) -> dict[str, Any]:
    """What the student cost the teacher: tokens it generated for the cache (the records trained
    on, counted in the teacher's tokens), and with on-policy training the tokens it scored and the
    seconds it took (this process)."""
    stats = run.data.stats
    generated = stats.teacher_tokens or sum(ex.n_completion for ex in run.data.examples)  # older caches: none kept
    out: dict[str, Any] = {"tokens_generated": generated, "tokens_scored": 0, "seconds_scoring": 0.0}
    if run.on_policy is not None:
        stats = run.on_policy.stats
        out.update(
            tokens_scored=stats.teacher_tokens_scored, seconds_scoring=stats.teacher_seconds, on_policy=stats.as_dict()
        )
    return out
