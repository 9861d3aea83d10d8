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
from dante.train.objective.terms import Tea, check_terms, recipe_folder
from dante.train.sources import build_sources, student_recipe
from dante.train.sources.base import BatchSource, Draw
from dante.train.sources.curriculum import EpochOrder
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
    sources: list[BatchSource]  # the run's batch sources, in the order a step draws them
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
    def has_held_out(self) -> bool:
        """A source holds records apart (the held-out loss before training was measured): it is logged."""
        return self.initial_eval is not None

    @property
    def drawing(self) -> list[BatchSource]:
        """The sources that give micro-batches each step (one may only hold data: held-out records)."""
        return [s for s in self.sources if s.active]

    def wall_time_s(self) -> float:
        """Training wall time over every segment of the run (resumes add up)."""
        return self.state.wall_time_s + time.perf_counter() - self.segment_start

    def held_out_loss(self) -> float | None:
        """The first held-out loss a source has (None: no source holds data apart)."""
        return next((x for x in (s.held_out_loss(self.forward) for s in self.sources) if x is not None), None)

    def checkpoint_state(self) -> dict[str, Any]:
        """What a checkpoint stores besides accelerate's files: the loop's state and each source's."""
        self.state.sources = {s.name: s.state_dict() for s in self.sources}
        return {**self.state.as_dict(), "wall_time_s": self.wall_time_s()}


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
            if run.has_held_out and ((cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps):
                row["eval_loss"] = run.held_out_loss()
            if step % cfg.log_every == 0 or step == cfg.steps or "eval_loss" in row:
                log_row(run, row)
            progress.update(task, completed=step, info=format_info(row))
            run.state.step, run.last_row = step, row
            if run.hooks.step_end is not None:
                run.hooks.step_end(row)
            if step % cfg.checkpoint_every == 0 and step < cfg.steps:
                save_checkpoint(run.accelerator, recipe.student_dir, step, run.checkpoint_state(), cfg.keep_checkpoints)


# -- set-up ------------------------------------------------------------------------------------


def setup(recipe: Recipe, resume: bool, hooks: Hooks | None = None) -> Run:
    """Everything the loop needs: the engine, the tokenized cache, the prepared model and
    optimizer, the batch sources and, on resume, the checkpoint's state; the held-out loss
    before training."""
    cfg, out, hooks = recipe.train, recipe.student_dir, hooks or Hooks()
    t_start = time.perf_counter()
    check_terms(cfg, recipe_folder(recipe))  # plugins, settings, names: before any model loads
    accelerator = make_accelerator(cfg, out)
    set_seed(cfg.seed)
    ckpt = checkpoint_to_resume(out, resume)
    recipe = student_recipe(recipe)  # a source may start the student from trained weights
    student = make_student(recipe)
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
    pad_id = student.tokenizer.pad_token_id if student.tokenizer.pad_token_id is not None else 0
    # the sources read the cache (and load an on-policy teacher) before anything of the run is written:
    # a bad record fails here, leaving an earlier run's files as they were
    sources = build_sources(recipe, student, accelerator, model, pad_id, hooks)

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
    for source in sources:  # each source continues where it stood (nothing to load on a fresh run)
        source.load_state_dict(state.source_state(source.name, source.older_keys))
    run = Run(
        recipe=recipe,
        accelerator=accelerator,
        student=student,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        forward=forward,
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
    else:
        run.initial_eval = run.held_out_loss()
        if run.initial_eval is not None:
            metrics.write({"step": 0, "eval_loss": run.initial_eval, "tokens": 0})
    run.segment_start = time.perf_counter()
    run.setup_time_s = run.segment_start - t_start
    return run


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
    draws: list[Draw] = [source.draw(step) for source in run.drawing]
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
    parts = [source.manifest(accelerator) for source in run.sources]  # every rank: a source may reduce
    for source in run.sources:
        source.close()
    manifest_path = out / STUDENT_MANIFEST
    if run.is_main:
        atomic_write_json(manifest_path, student_manifest(run, last, wall, parts))
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


def student_manifest(run: Run, last: dict[str, Any], wall: float, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """``dante_manifest.json``: what was trained on what, the headline losses, and where it ran;
    ``parts``, each source's entries (``BatchSource.manifest``), merged in."""
    recipe, state = run.recipe, run.state
    info = device_info(run.accelerator)
    trainable, total = run.parameters
    folders = [str(p) for p in recipe.cache_dirs]
    # what the student cost the teacher: tokens it generated for the cache records trained on, and
    # tokens it scored with the seconds it took (the sources add theirs)
    merged: dict[str, Any] = {"teacher_compute": {"tokens_generated": 0, "tokens_scored": 0, "seconds_scoring": 0.0}}
    for part in parts:
        merge_counts(merged, part)
    return {
        "name": recipe.name,
        "student": recipe.student.model,
        "cache_dir": folders if len(folders) > 1 else folders[0],
        "seed": recipe.train.seed,
        "steps": state.step,
        "tokens_seen": state.tokens,
        "records_seen": state.records,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "peft": run.student.manifest(),
        **merged,
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


def merge_counts(into: dict[str, Any], part: dict[str, Any]) -> None:
    """``part`` merged into ``into``: dicts key by key, numbers present in both added, the rest set."""
    for key, value in part.items():
        have = into.get(key)
        if isinstance(value, dict) and isinstance(have, dict):
            merge_counts(have, value)
        elif isinstance(value, int | float) and isinstance(have, int | float) and not isinstance(value, bool):
            into[key] = have + value
        else:
            into[key] = value
