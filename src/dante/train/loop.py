"""`dante train`: fine-tune the student on the teacher cache with the DANTE objective (stages 3-5).

Read top to bottom: ``train`` sets up, loops and saves; ``steps`` is the loop (a step, the
held-out loss, the log, a checkpoint); ``setup`` loads the student and the cache and builds the
accelerator, the batch sources (``dante.train.sources``: cached records, the student's own
samples) and the objective's terms (``dante.train.objective.terms``); ``train_step`` is one
optimizer step (each source's micro-batches through the forward pass, TEA once, clip, step);
``save`` writes a ``from_pretrained`` folder with its manifest.
Runs on CPU, one GPU, or many through ``accelerate launch`` (DDP / FSDP / DeepSpeed).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accelerate.utils import set_seed
from transformers import get_scheduler

from dante.config import Recipe, resolved_dict
from dante.errors import DanteError
from dante.io import atomic_write_json
from dante.layout import CHECKPOINTS, METRICS, STUDENT_MANIFEST
from dante.train.checkpoint import latest_checkpoint, read_state, save_checkpoint
from dante.train.metrics import MetricsLog, finite, format_info, progress_bar
from dante.train.model.accelerator import build_optimizer, device_info, make_accelerator, package_versions
from dante.train.model.student import FullStudent, make_student
from dante.train.objective.forward import Forward
from dante.train.objective.terms import Tea, source_terms
from dante.train.sources.base import BatchSource, Draw
from dante.train.sources.curriculum import BatchStream, EpochOrder, run_positions
from dante.train.sources.data import DataStats
from dante.train.sources.on_policy import OnPolicy, OnPolicySamples, check_warm_start, every_rank
from dante.train.sources.records import CachedRecords, TrainData, held_out_loss, load_data
from dante.train.state import RunState


@dataclass
class Hooks:
    """Where a caller (a benchmark, a notebook) looks into or adjusts a run without patching it."""

    micro_batch: Callable[[dict[str, Any]], None] | None = None  # each collated micro-batch, before its forward
    step_end: Callable[[dict[str, Any]], None] | None = None  # each step's metrics row, after the update
    epoch_order: EpochOrder | None = None  # replaces the curriculum's epoch order of the cached records


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
class Run:
    """One training run between set-up and save: the engine, the batch sources, the objective's
    step-level term and the running state (``RunState``, what a checkpoint stores)."""

    recipe: Recipe
    accelerator: Any
    student: FullStudent  # the kind of student (full fine-tuning, LoRA): load, checkpoints, save
    model: Any  # as prepared by accelerate (DDP / FSDP / DeepSpeed wrapper, or the model)
    optimizer: Any
    scheduler: Any
    forward: Forward
    data: TrainData
    sources: list[BatchSource]  # what each step draws its micro-batches from, in this order
    tea: Tea | None  # the embedding anchor (a term on the model, once per step)
    metrics: MetricsLog
    pad_id: int
    state: RunState
    resumed_from: int | None
    parameters: tuple[int, int]  # (trainable, total), counted before FSDP shards them
    hooks: Hooks = field(default_factory=Hooks)
    last_row: dict[str, Any] = field(default_factory=dict)  # the last step's metrics
    initial_eval: float | None = None
    setup_time_s: float = 0.0
    segment_start: float = 0.0

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def on_policy(self) -> OnPolicy | None:
        """The on-policy source's sampler and scorer, when the run has one."""
        return next((s.on_policy for s in self.sources if isinstance(s, OnPolicySamples)), None)

    def wall_time_s(self) -> float:
        """Training wall time over every segment of the run (resumes add up)."""
        return self.state.wall_time_s + time.perf_counter() - self.segment_start

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


def train(recipe: Recipe, resume: bool = False, hooks: Hooks | None = None) -> TrainResult:
    """Train ``recipe.student`` on ``recipe.cache_dir``; write the model to ``recipe.student_dir``.

    resume=True continues from the newest complete checkpoint in ``<student_dir>/checkpoints``
    and produces the same later losses as an uninterrupted run. ``hooks``: see ``Hooks``.
    """
    run = setup(recipe, resume, hooks or Hooks())
    progress, task = progress_bar(run.is_main, recipe.train.steps, run.state.step)
    run.model.train()
    try:
        steps(run, progress, task)
    except BaseException:
        for source in run.sources:  # what they wrote stays durable; their locks are released for a resume
            source.close(seal=False)
        raise
    return save(run, run.last_row)


def steps(run: Run, progress, task) -> None:
    """The loop: a step, the held-out loss when due, the metrics row, a checkpoint when due."""
    recipe, cfg = run.recipe, run.recipe.train
    with progress:
        for step in range(run.state.step + 1, cfg.steps + 1):
            row = train_step(run, step)
            if run.data.eval_examples and ((cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps):
                row["eval_loss"] = run.held_out_loss()
            if step % cfg.log_every == 0 or step == cfg.steps or "eval_loss" in row:
                log_row(run, row)
            progress.update(task, completed=step, info=format_info(row))
            run.state.step, run.last_row = step, row
            if run.hooks.step_end is not None:
                run.hooks.step_end(row)
            if step % cfg.checkpoint_every == 0 and step < cfg.steps:
                state = {**run.state.as_dict(), "wall_time_s": run.wall_time_s()}
                save_checkpoint(run.accelerator, recipe.student_dir, step, state, cfg.keep_checkpoints)


# -- set-up ------------------------------------------------------------------------------------


def setup(recipe: Recipe, resume: bool, hooks: Hooks | None = None) -> Run:
    """Everything the loop needs: the engine, the tokenized cache, the prepared model and
    optimizer, the batch sources and, on resume, the checkpoint's state; the held-out loss
    before training."""
    cfg, out, hooks = recipe.train, recipe.student_dir, hooks or Hooks()
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
        order=hooks.epoch_order,
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

    state = RunState()
    if resume:
        student.resume(accelerator, model, ckpt)
        state = RunState.from_dict(read_state(ckpt))
        accelerator.print(f"resumed from {ckpt} (step {state.step})")
    resumed_from = state.step if resume else None
    metrics = MetricsLog(out / METRICS, enabled=accelerator.is_main_process, resume_step=resumed_from)
    if cfg.trackers:
        accelerator.init_trackers(
            recipe.name,
            config={k: v for k, v in cfg.model_dump(mode="json").items() if isinstance(v, int | float | str | bool)},
        )
    pad_id = student.tokenizer.pad_token_id if student.tokenizer.pad_token_id is not None else 0
    # the student's own samples first, then the cached records: GKD's mix λ = train.on_policy.fraction
    sources: list[BatchSource] = []
    if on_policy_prompts:
        sources.append(
            OnPolicySamples(
                OnPolicy(recipe, student, accelerator),
                cfg,
                source_terms("on_policy", cfg),
                prompts_per_step=on_policy_prompts,
                model=model,
                accelerator=accelerator,
                state=state,
                pad_id=pad_id,
            )
        )
    if stream.batch_tokens is not None or stream.batch_sequences:
        share = 1.0 - cfg.on_policy.fraction if on_policy_prompts else 1.0
        terms = source_terms("records", cfg)
        sources.append(
            CachedRecords(data, stream, cfg, terms, share=share, accelerator=accelerator, state=state, pad_id=pad_id)
        )
    run = Run(
        recipe=recipe,
        accelerator=accelerator,
        student=student,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        forward=forward,
        data=data,
        sources=sources,
        tea=Tea(cfg, anchor) if anchor is not None else None,
        metrics=metrics,
        pad_id=pad_id,
        state=state,
        resumed_from=resumed_from,
        parameters=parameters,
        hooks=hooks,
    )
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


# -- one optimizer step --------------------------------------------------------------------------


def train_step(run: Run, step: int) -> dict[str, Any]:
    """One optimizer update on the next global batch of every source; returns its metrics row.

    L = Σ_s share_s · Σ_k λ_k(t) · S_k / D_s + λ_TEA(t) · ‖E − E₀‖²: each source's draw says how
    its micro-batches are weighted (``sources.base.Draw.loss``), so the micro-batches' and ranks'
    gradients add up to the full-batch gradient of the whole objective; TEA runs once, in the
    step's last forward pass.
    """
    cfg, accelerator = run.recipe.train, run.accelerator
    t0 = time.perf_counter()
    draws: list[Draw] = [source.draw(step) for source in run.sources]
    total = sum(len(d) for d in draws)
    tea_lambda = run.tea.weight(step, cfg.steps) if run.tea is not None else 0.0
    tea_value, k = 0.0, 0
    for draw in draws:
        for i in range(len(draw)):
            t_micro = time.perf_counter()
            k += 1
            is_last = k == total
            accelerator.sync_gradients = is_last  # DeepSpeed steps inside backward only when True
            with accelerator.no_sync(run.model) if not is_last else nullcontext():
                anchored = run.tea is not None and is_last  # TEA once per step, identical on every rank
                if anchored:
                    run.tea.arm()
                batch = draw.micro_batch(i)
                if run.hooks.micro_batch is not None:
                    run.hooks.micro_batch(batch)
                with accelerator.autocast():
                    parts = run.forward.loss_sums(batch, draw.terms, draw.kappas)
                loss = draw.loss(parts)
                if anchored:
                    tea = run.tea.take()
                    loss = loss + tea_lambda * tea
                    tea_value = float(tea.detach())
                accelerator.backward(loss)
            draw.seconds += time.perf_counter() - t_micro
    grad_norm = accelerator.clip_grad_norm_(run.model.parameters(), cfg.grad_clip or math.inf)
    lr = run.scheduler.get_last_lr()[0]
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)

    terms: dict[str, Any] = {}
    loss_value = None
    for draw in draws:  # each source's terms, summed over ranks; the loss as the step mixes them
        logged = draw.log(accelerator)
        value = draw.share * logged.pop("loss")
        loss_value = value if loss_value is None else loss_value + value
        terms.update(logged)
    loss_value = (loss_value or 0.0) + tea_lambda * tea_value
    step_tokens = sum(d.tokens for d in draws)
    run.state.tokens += step_tokens
    run.state.records += sum(d.records for d in draws)
    dt = time.perf_counter() - t0
    return {
        "step": step,
        "loss": loss_value,
        **terms,
        "tea": tea_value,
        "lambda_tea": tea_lambda,
        "lr": lr,
        "grad_norm": finite(float(grad_norm)) if grad_norm is not None else None,
        "tokens": run.state.tokens,
        "records": run.state.records,
        "tokens_per_s": step_tokens / dt if dt > 0 else 0.0,
    }


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
    for source in run.sources:
        source.close()
    if run.on_policy is not None:
        run.on_policy.stats = every_rank(run.on_policy.stats, accelerator)
    manifest_path = out / STUDENT_MANIFEST
    if run.is_main:
        atomic_write_json(manifest_path, student_manifest(run, last, wall))
    if recipe.train.trackers:
        accelerator.end_training()
    accelerator.wait_for_everyone()
    return TrainResult(
        output_dir=out,
        steps=run.state.step,
        tokens_seen=run.state.tokens,
        records_seen=run.state.records,
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
        "steps": state.step,
        "tokens_seen": state.tokens,
        "records_seen": state.records,
        "epochs": state.cursor / len(run.data.examples) if run.data.examples else 0.0,
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
