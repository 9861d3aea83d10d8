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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dante.config import Recipe, resolved_dict, save_resolved
from dante.errors import DanteError
from dante.io import atomic_write_json
from dante.layout import CHECKPOINTS, MERGED, METRICS, STUDENT_MANIFEST
from dante.train import lora
from dante.train.checkpoint import latest_checkpoint, read_state, save_checkpoint
from dante.train.curriculum import BatchStream, check_entropies, micro_batches, rank_slice
from dante.train.data import DataStats, Example, build_examples, collate, filter_records, split_heldout
from dante.train.engine import build_optimizer, compile_blocks, device_info, make_accelerator, package_versions
from dante.train.forward import Forward, empty_example, held_out_loss
from dante.train.losses import TeaAnchor, batch_weights, lambda_ce, lambda_kd, lambda_tea
from dante.train.metrics import MetricsLog, finite, format_info, progress_bar


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
    """One training run between set-up and save: the engine, the data and the running state.

    ``state`` is what a checkpoint stores besides accelerate's files: the step, the
    curriculum cursor, the tokens and records seen, and the wall time of earlier segments.
    """

    recipe: Recipe
    accelerator: Any
    model: Any  # as prepared by accelerate (DDP / FSDP / DeepSpeed wrapper, or the model)
    optimizer: Any
    scheduler: Any
    forward: Forward
    anchor: TeaAnchor | None
    tokenizer: Any
    examples: list[Example]
    eval_examples: list[Example]
    data_stats: DataStats
    stream: BatchStream
    metrics: MetricsLog
    pad_id: int
    state: dict[str, Any]
    resumed_from: int | None
    initial_eval: float | None
    setup_time_s: float
    segment_start: float
    student_ref: Any = None  # the resolved base model (LoRA's merged folder is rebuilt from it)
    parameters: tuple[int, int] = (0, 0)  # (trainable, total), counted before FSDP shards them

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def wall_time_s(self) -> float:
        """Training wall time over every segment of the run (resumes add up)."""
        return self.state["wall_time_s"] + time.perf_counter() - self.segment_start

    def held_out_loss(self) -> float | None:
        cfg = self.recipe.train
        return held_out_loss(
            self.forward,
            self.eval_examples,
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
    cfg, last = recipe.train, {}
    progress, task = progress_bar(run.is_main, cfg.steps, run.state["step"])
    run.model.train()
    with progress:
        for step in range(run.state["step"] + 1, cfg.steps + 1):
            row = train_step(run, step)
            if run.eval_examples and ((cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps):
                row["eval_loss"] = run.held_out_loss()
            if step % cfg.log_every == 0 or step == cfg.steps or "eval_loss" in row:
                log_row(run, row)
            progress.update(task, completed=step, info=format_info(row))
            run.state["step"], last = step, row
            if step % cfg.checkpoint_every == 0 and step < cfg.steps:
                state = {**run.state, "wall_time_s": run.wall_time_s()}
                save_checkpoint(run.accelerator, recipe.student_dir, step, state, cfg.keep_checkpoints)
    return save(run, last)


# -- set-up ------------------------------------------------------------------------------------


def setup(recipe: Recipe, resume: bool) -> Run:
    """Everything the loop needs: the engine, the tokenized cache, the prepared model and
    optimizer, and, on resume, the checkpoint's state; the held-out loss before training."""
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    cfg, out = recipe.train, recipe.student_dir
    t_start = time.perf_counter()
    accelerator = make_accelerator(cfg, out)
    set_seed(cfg.seed)
    ckpt = checkpoint_to_resume(out, resume)
    student_ref, tokenizer, examples, eval_examples, stats = load_data(recipe, accelerator)
    stream = BatchStream(
        examples, cfg.curriculum, cfg.seed, batch_sequences=cfg.batch_sequences, batch_tokens=cfg.batch_tokens
    )
    model, anchor = load_student(recipe, student_ref, accelerator)
    parameters = lora.parameter_counts(model)
    optimizer = build_optimizer(model, cfg)
    scheduler = get_scheduler(
        cfg.lr_scheduler, optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=cfg.steps
    )
    base_model = lora.core_model(model)  # the transformers model under peft's wrapper, if any
    if accelerator.state.deepspeed_plugin is not None:  # no dataloader to infer it from
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = cfg.micro_batch_size
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)  # not prepared: accelerate would step it once per process
    forward = Forward(model, base_model, accelerator, chunked_ce=cfg.loss.chunked_ce, packed_attention=cfg.packing)
    peft = recipe.student.peft is not None
    if peft:
        lora.adapter_only_checkpoints(accelerator, model)

    state: dict[str, Any] = {"step": 0, "cursor": 0, "tokens": 0, "records": 0, "wall_time_s": 0.0}
    if resume:
        if peft:
            lora.load_checkpoint(accelerator, model, ckpt)
        else:
            accelerator.load_state(str(ckpt))
        state.update(read_state(ckpt))
        accelerator.print(f"resumed from {ckpt} (step {state['step']})")
    resumed_from = state["step"] if resume else None
    metrics = MetricsLog(out / METRICS, enabled=accelerator.is_main_process, resume_step=resumed_from)
    if cfg.trackers:
        accelerator.init_trackers(
            recipe.name,
            config={k: v for k, v in cfg.model_dump(mode="json").items() if isinstance(v, int | float | str | bool)},
        )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    run = Run(recipe, accelerator, model, optimizer, scheduler, forward, anchor, tokenizer, examples,
              eval_examples, stats, stream, metrics, pad_id, state, resumed_from,
              initial_eval=None, setup_time_s=0.0, segment_start=0.0,
              student_ref=student_ref, parameters=parameters)  # fmt: skip
    if resume:
        run.initial_eval = next((r.get("eval_loss") for r in metrics.rows() if r.get("step") == 0), None)
    elif eval_examples:
        run.initial_eval = run.held_out_loss()
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


def load_data(recipe: Recipe, accelerator) -> tuple[Any, Any, list[Example], list[Example], DataStats]:
    """The student's tokenizer and the cache as examples: (model ref, tokenizer, train, held-out, stats)."""
    from dante.cache.records import read_cache
    from dante.models import load_tokenizer, resolve_model

    cfg, student = recipe.train, recipe.student
    student_ref = resolve_model(student.model, student.gguf_file)
    tokenizer = load_tokenizer(student_ref, trust_remote_code=student.trust_remote_code, revision=student.revision)
    folders = recipe.cache_dirs
    source = str(folders[0]) if len(folders) == 1 else ", ".join(map(str, folders))
    check_mixed_caches(folders, cfg.allow_mixed_caches, accelerator)
    records, filtered = filter_records(read_cache(folders), cfg.filter, source)
    train_records, eval_records = split_heldout(records, cfg.eval_fraction, cfg.seed)
    kd = None
    if cfg.loss.token_kd > 0:
        from dante.train.kd_data import KDStats, StudentVocab

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
    if cfg.curriculum == "entropy":
        check_entropies(examples, source)
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
    return student_ref, tokenizer, examples, eval_examples, stats


def check_mixed_caches(folders: list[Path], allowed: bool, accelerator) -> None:
    """Several cache folders written with different teacher/prompt settings: refused (one
    student, one teacher), unless train.allow_mixed_caches; either way the differences are said."""
    from dante.cache.manifest import mixed_settings

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


def load_student(recipe: Recipe, student_ref, accelerator) -> tuple[torch.nn.Module, TeaAnchor | None]:
    """The student in fp32 master weights (mixed precision is autocast; a LoRA student's frozen
    base may be bf16, ``student.peft.base_dtype``), with gradient
    checkpointing, LoRA adapters (``student.peft``) and regional compilation as configured,
    and its TEA anchor (``dante.train.lora`` says what TEA means with LoRA)."""
    from dante.models import load_causal_lm

    cfg, student = recipe.train, recipe.student
    model = load_causal_lm(
        student_ref,
        dtype="float32" if student.peft is None else lora.base_dtype(student.peft, accelerator.mixed_precision),
        trust_remote_code=student.trust_remote_code,
        revision=student.revision,
        attn_implementation=student.attn_implementation,
    )
    model.config.use_cache = False
    if cfg.gradient_checkpointing:  # later transformers 5.x rename it activation_checkpointing_enable
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    anchor = None
    if student.peft is not None:  # after checkpointing (peft wraps the prepared layers), before compile
        model = lora.apply_lora(model, student.peft)
        trainable, total = lora.parameter_counts(model)
        accelerator.print(
            f"LoRA: training {trainable:,} of {total:,} parameters ({trainable / total:.2%}), "
            f"frozen base in {str(model.get_base_model().dtype).removeprefix('torch.')}"
        )
        anchor = lora.tea_anchor(model, accelerator.print) if cfg.loss.tea else None
    elif cfg.loss.tea:
        anchor = TeaAnchor(model.get_input_embeddings().weight).attach(model)
    if cfg.compile:
        n_blocks = compile_blocks(model)
        if accelerator.is_main_process:
            accelerator.print(
                f"compile: {n_blocks} decoder blocks compiled on first use"
                if n_blocks
                else "compile: no repeated blocks found; running eager"
            )
    return model, anchor


# -- one optimizer step --------------------------------------------------------------------------


def train_step(run: Run, step: int) -> dict[str, Any]:
    """One optimizer update on the next global batch; returns its metrics row.

    L = λ_CE(t) · Σ_t u_t·CE_t / D + λ_KD(t) · Σ_t u_t·KL_t / D + λ_TEA(t) · ‖E − E₀‖²: D
    covers the whole global batch, so the micro-batches' and ranks' gradients add up to the
    full-batch gradient. The KL sum rides in the CE kernel with weights v_t = (λ_KD/λ_CE)·u_t.
    """
    cfg, loss_cfg, accelerator = run.recipe.train, run.recipe.train.loss, run.accelerator
    world, device = accelerator.num_processes, accelerator.device
    t0 = time.perf_counter()
    batch_idx, run.state["cursor"] = run.stream.next_batch(run.state["cursor"])
    batch = [run.examples[i] for i in batch_idx]
    u, denom = batch_weights([ex.entropy for ex in batch], [ex.n_completion for ex in batch], loss_cfg)
    weight_of = dict(zip(batch_idx, u))
    lam_ce, lam_tea = lambda_ce(step, loss_cfg), lambda_tea(step, cfg.steps, loss_cfg)
    lam_kd = lambda_kd(step, loss_cfg)
    groups = micro_batches(
        rank_slice(batch_idx, accelerator.process_index, world), len(batch_idx), world, cfg.micro_batch_size
    )
    cwce_sum, ce_sum, kd_sum, tea_value = (torch.zeros((), device=device) for _ in range(4))
    for k, group in enumerate(groups):
        is_last = k == len(groups) - 1
        micro = collate(
            [run.examples[i] for i in group] or [empty_example(run.pad_id)],
            [weight_of[i] for i in group] or [0.0],
            packing=cfg.packing,
            pad_id=run.pad_id,
        )
        accelerator.sync_gradients = is_last  # DeepSpeed steps inside backward only when True
        with accelerator.no_sync(run.model) if not is_last else nullcontext():
            anchored = run.anchor is not None and is_last  # TEA once per step, identical on every rank
            if anchored:
                run.anchor.arm()
            with accelerator.autocast():
                weighted, plain, kl = run.forward.loss_sums(micro, kd_scale=lam_kd / lam_ce)
            loss = lam_ce * (weighted / denom) * world  # × world: DDP/FSDP average gradients, the objective sums them
            if anchored:
                tea = run.anchor.take()
                loss = loss + lam_tea * tea
                tea_value = tea.detach()
            accelerator.backward(loss)
        cwce_sum += (weighted.detach() - kl) / denom
        kd_sum += kl / denom
        ce_sum += plain.detach()
    grad_norm = accelerator.clip_grad_norm_(run.model.parameters(), cfg.grad_clip or math.inf)
    lr = run.scheduler.get_last_lr()[0]
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)

    cwce = float(accelerator.reduce(cwce_sum, "sum"))
    token_kd = float(accelerator.reduce(kd_sum, "sum")) * lam_ce / lam_kd if lam_kd > 0 else None
    ce = float(accelerator.reduce(ce_sum, "sum")) / max(1, sum(ex.n_completion for ex in batch))
    step_tokens = sum(len(ex) for ex in batch)
    run.state["tokens"] += step_tokens
    run.state["records"] += len(batch)
    dt = time.perf_counter() - t0
    return {
        "step": step,
        "loss": lam_ce * cwce + lam_kd * (token_kd or 0.0) + lam_tea * float(tea_value),
        "cwce": cwce,
        **({"token_kd": token_kd, "lambda_kd": lam_kd} if lam_kd > 0 else {}),
        "ce": ce,
        "tea": float(tea_value),
        "lambda_ce": lam_ce,
        "lambda_tea": lam_tea,
        "lr": lr,
        "grad_norm": finite(float(grad_norm)) if grad_norm is not None else None,
        "tokens": run.state["tokens"],
        "records": run.state["records"],
        "epoch": run.stream.epoch_of(run.state["cursor"]),
        "tokens_per_s": step_tokens / dt if dt > 0 else 0.0,
    }


def log_row(run: Run, row: dict[str, Any]) -> None:
    """A metrics row to metrics.jsonl and to the configured trackers."""
    run.metrics.write(row)
    if run.recipe.train.trackers:
        run.accelerator.log({k: v for k, v in row.items() if v is not None and k != "step"}, step=row["step"])


# -- save ----------------------------------------------------------------------------------------


def save(run: Run, last: dict[str, Any]) -> TrainResult:
    """The student as a ``from_pretrained`` folder (safetensors, tokenizer, resolved recipe) and
    its manifest; every rank takes part (FSDP / ZeRO-3 gather the weights), the main one writes."""
    recipe, accelerator, out = run.recipe, run.accelerator, run.recipe.student_dir
    wall = run.wall_time_s()
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(run.model)
    manifest_path = out / STUDENT_MANIFEST
    peft = recipe.student.peft
    if run.is_main:  # a LoRA student saves its adapter (peft's folder), the merged model next to it by a setting
        card = out / "README.md"
        had_card = card.exists()
        accelerator.unwrap_model(run.model).save_pretrained(out, state_dict=state_dict, safe_serialization=True)
        if peft is not None and not had_card:
            card.unlink(missing_ok=True)  # peft's placeholder card; `dante report` writes the real one
        run.tokenizer.save_pretrained(out)
        if peft is not None and peft.save_merged:
            merged = lora.save_merged(out, run.student_ref, recipe.student, run.tokenizer)
            save_resolved(recipe, merged)
        save_resolved(recipe, out)
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
        "peft": None
        if recipe.student.peft is None
        else {
            "method": recipe.student.peft.method,
            "adapter": ".",
            "merged": MERGED if recipe.student.peft.save_merged else None,
        },
        "train_records": len(run.examples),
        "heldout_records": len(run.eval_examples),
        "data": run.data_stats.as_dict(),
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
