"""`dante train`: fine-tune the student on the teacher cache with the DANTE objective (stages 3-5).

One loop, top to bottom: load the student and the cache, tokenize, then for each step take the
next global batch of the curriculum, run its micro-batches (packed, padding-free), add the TEA
anchor once, clip, step, log, checkpoint; at the end save a ``from_pretrained`` folder with a
manifest. Runs on CPU, one GPU, or many through ``accelerate launch`` (DDP / FSDP / DeepSpeed).
"""

from __future__ import annotations

import inspect
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dante.config import Recipe, resolved_dict, save_resolved
from dante.errors import DanteError
from dante.io import atomic_write_json
from dante.train import runtime
from dante.train.attention import NAME as PACKED_SDPA
from dante.train.attention import has_sliding_window, record_bounds, use_packed_sdpa
from dante.train.checkpoint import latest_checkpoint, read_state, save_checkpoint
from dante.train.curriculum import BatchStream, check_entropies, micro_batches, rank_slice
from dante.train.data import IGNORE, Example, block_diagonal_causal_mask, build_examples, collate
from dante.train.losses import ChunkedCEHead, TeaAnchor, cwce_weight, lambda_ce, lambda_tea, token_weights, weighted_ce_sum

METRICS_FILE = "metrics.jsonl"
MANIFEST_FILE = "dante_manifest.json"


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
        return f"trained {self.steps} steps, {self.tokens_seen} tokens, final loss {self.final_loss}{ev}; model at {self.output_dir}"


class Forward:
    """Runs the student on one micro-batch and returns logits aligned with its targets.

    Packed rows: an SDPA student runs attention record by record (``dante.train.attention``,
    the record boundaries passed as ``cu_seq_lens_q``); eager gets a block-diagonal causal mask;
    flash-attention and flex use ``position_ids`` (transformers detects the packed records).
    Only positions with a target get logits (``logits_to_keep``), so prompts cost no lm_head.
    ``loss_sums`` gives the weighted CE sums; with chunked_ce (and a plain linear head) the
    lm_head computes them chunk by chunk and the (tokens × vocab) logits are never built.
    """

    def __init__(self, model, base_model, accelerator, *, chunked_ce: bool = False, packed_attention: bool = False) -> None:
        self.model, self.device = model, accelerator.device
        if packed_attention:
            use_packed_sdpa(base_model)
        self.attn = getattr(base_model.config, "_attn_implementation", None) or "eager"
        self.sliding = has_sliding_window(base_model.config)
        self.mask_dtype = next(base_model.parameters()).dtype
        self.keep_logits = "logits_to_keep" in inspect.signature(base_model.forward).parameters
        self.head = ChunkedCEHead(base_model) if chunked_ce and ChunkedCEHead.supports(base_model) else None

    def loss_sums(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(Σ u_t·CE_t, Σ CE_t) of one micro-batch (see ``weighted_ce_sum``)."""
        if self.head is None:
            return weighted_ce_sum(*self(batch))
        kwargs, targets, weights = self._inputs(batch)
        self.head.arm(targets, weights)
        self.model(**kwargs)
        return self.head.take()

    def __call__(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        kwargs, targets, weights = self._inputs(batch)
        return self.model(**kwargs).logits, targets, weights

    def _inputs(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
        bounds = record_bounds(batch["segment_ids"]) if self.attn == PACKED_SDPA and "segment_ids" in batch else None
        batch = {k: v.to(self.device) for k, v in batch.items()}
        kwargs: dict[str, Any] = {"input_ids": batch["input_ids"], "use_cache": False}
        if "segment_ids" in batch:
            kwargs["position_ids"] = batch["position_ids"]
            if bounds is not None:
                kwargs["cu_seq_lens_q"] = bounds  # stays on the CPU
            elif self.attn in ("sdpa", "eager") and not self.sliding:  # else transformers' mask from position_ids keeps the windows
                kwargs["attention_mask"] = block_diagonal_causal_mask(batch["segment_ids"], as_bool=self.attn == "sdpa", dtype=self.mask_dtype)
        else:
            kwargs["attention_mask"] = batch["attention_mask"]
        targets, weights = batch["targets"], batch["weights"]
        if self.keep_logits:
            keep = (targets != IGNORE).any(dim=0).nonzero().flatten()
            if keep.numel() == 0:
                keep = torch.zeros(1, dtype=torch.long, device=self.device)
            kwargs["logits_to_keep"] = keep
            targets, weights = targets[:, keep], weights[:, keep]
        return kwargs, targets, weights


def _dummy(pad_id: int) -> Example:
    """A one-token example with no target, for a rank whose share of a micro-batch is empty."""
    return Example("<empty>", [pad_id], [IGNORE], 0, None)


def _normaliser(examples: list[Example], weights: list[float], normalise: str) -> float:
    """D of the global batch (see dante.train.losses): Σ u_t over every target token, or N for 'card'."""
    if normalise == "card":
        return float(len(examples))
    return float(sum(u * ex.n_completion for ex, u in zip(examples, weights)))


@torch.no_grad()
def held_out_loss(forward: Forward, examples: list[Example], accelerator, *, micro_batch_size: int, packing: bool, pad_id: int) -> float | None:
    """Plain mean token CE (no CWCE weights) over the held-out records, summed across ranks."""
    if not examples:
        return None
    order = list(range(len(examples)))
    local = rank_slice(order, accelerator.process_index, accelerator.num_processes)
    ce_sum = torch.zeros((), device=accelerator.device)
    forward.model.eval()
    for mb in micro_batches(local, len(order), accelerator.num_processes, micro_batch_size):
        exs = [examples[i] for i in mb] or [_dummy(pad_id)]
        with accelerator.autocast():
            ce_sum += forward.loss_sums(collate(exs, [1.0] * len(exs), packing=packing, pad_id=pad_id))[1]
    forward.model.train()
    ce_sum = accelerator.reduce(ce_sum, "sum")
    return float(ce_sum) / sum(ex.n_completion for ex in examples)


def train(recipe: Recipe, resume: bool = False) -> TrainResult:
    """Train ``recipe.student`` on ``recipe.cache_dir``; write the model to ``recipe.student_dir``.

    resume=True continues from the newest complete checkpoint in ``<student_dir>/checkpoints``
    and produces the same later losses as an uninterrupted run.
    """
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    from dante.cache.records import read_cache
    from dante.models import load_causal_lm, load_tokenizer, resolve_model

    cfg, lcfg, out = recipe.train, recipe.train.loss, recipe.student_dir
    t_start = time.perf_counter()
    accelerator = runtime.make_accelerator(cfg, out)
    main, rank, world = accelerator.is_main_process, accelerator.process_index, accelerator.num_processes
    set_seed(cfg.seed)
    ckpt = latest_checkpoint(out)
    if resume and ckpt is None:
        raise DanteError("no complete checkpoint to resume from", file=out / "checkpoints", hint="run without --resume to start fresh")
    if not resume and ckpt is not None:
        raise DanteError("output already holds checkpoints of a run", file=ckpt, hint="pass --resume to continue it, or delete the folder to start over")

    # -- data -------------------------------------------------------------------------------
    student_ref = resolve_model(recipe.student.model, recipe.student.gguf_file)
    tokenizer = load_tokenizer(student_ref, trust_remote_code=recipe.student.trust_remote_code, revision=recipe.student.revision)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    source = str(recipe.cache_dir)
    records = read_cache(recipe.cache_dir)
    train_records, eval_records = runtime.split_heldout(records, cfg.eval_fraction, cfg.seed)
    examples, stats = build_examples(train_records, tokenizer, recipe.student, cfg.max_length, source=source, model_ref=recipe.student.model)
    eval_examples = build_examples(eval_records, tokenizer, recipe.student, cfg.max_length, source=source)[0] if eval_records else []
    if cfg.curriculum == "entropy":
        check_entropies(examples, source)
    stream = BatchStream(examples, cfg.curriculum, cfg.seed, batch_sequences=cfg.batch_sequences, batch_tokens=cfg.batch_tokens)
    no_entropy = sum(ex.entropy is None for ex in examples)
    if main and lcfg.cwce and no_entropy:
        accelerator.print(f"data: {no_entropy} records have no output_entropy; CWCE gives them weight 1.0")
    if main and (stats.truncated or stats.dropped):
        accelerator.print(f"data: {stats.truncated} completions truncated to max_length={cfg.max_length}, {stats.dropped} records dropped (prompt too long): {stats.dropped_ids}")

    # -- model, optimizer, schedule -----------------------------------------------------------
    model = load_causal_lm(
        student_ref, dtype="float32", trust_remote_code=recipe.student.trust_remote_code,
        revision=recipe.student.revision, attn_implementation=recipe.student.attn_implementation,
    )  # fp32 master weights; mixed precision is autocast
    model.config.use_cache = False
    if cfg.gradient_checkpointing:  # later transformers 5.x rename it activation_checkpointing_enable
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.compile:
        n_blocks = runtime.compile_blocks(model)
        if main:
            accelerator.print(f"compile: {n_blocks} decoder blocks compiled on first use" if n_blocks else "compile: no repeated blocks found; running eager")
    anchor = TeaAnchor(model.get_input_embeddings().weight).attach(model) if lcfg.tea else None
    optimizer = runtime.build_optimizer(model, cfg)
    scheduler = get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=cfg.steps)
    base_model = model
    if accelerator.state.deepspeed_plugin is not None:  # no dataloader to infer it from
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = cfg.micro_batch_size
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)  # not prepared: accelerate would step it once per process
    forward = Forward(model, base_model, accelerator, chunked_ce=lcfg.chunked_ce, packed_attention=cfg.packing)

    state: dict[str, Any] = {"step": 0, "cursor": 0, "tokens": 0, "records": 0, "wall_time_s": 0.0}
    if resume:
        accelerator.load_state(str(ckpt))
        state.update(read_state(ckpt))
        accelerator.print(f"resumed from {ckpt} (step {state['step']})")
    resumed_from = state["step"] if resume else None
    metrics = runtime.MetricsLog(out / METRICS_FILE, enabled=main, resume_step=resumed_from)
    if cfg.trackers:
        accelerator.init_trackers(recipe.name, config={k: v for k, v in cfg.model_dump(mode="json").items() if isinstance(v, int | float | str | bool)})

    eval_kw = {"micro_batch_size": cfg.micro_batch_size, "packing": cfg.packing, "pad_id": pad_id}
    initial_eval = next((r.get("eval_loss") for r in metrics.rows() if r.get("step") == 0), None) if resume else None
    if eval_examples and not resume:
        initial_eval = held_out_loss(forward, eval_examples, accelerator, **eval_kw)
        metrics.write({"step": 0, "eval_loss": initial_eval, "tokens": 0})
    delay = float(os.environ.get("DANTE_TRAIN_STEP_DELAY_S", "0") or 0)  # tests: make a step slow enough to kill
    segment_start, last = time.perf_counter(), {}
    progress, task = runtime.progress_bar(main, cfg.steps, state["step"])
    model.train()

    # -- the loop ----------------------------------------------------------------------------
    with progress:
        for step in range(state["step"] + 1, cfg.steps + 1):
            t0 = time.perf_counter()
            batch_idx, state["cursor"] = stream.next_batch(state["cursor"])
            global_examples = [examples[i] for i in batch_idx]
            record_w = [float(cwce_weight(ex.entropy, lcfg)) if lcfg.cwce and ex.entropy is not None else 1.0 for ex in global_examples]
            u = [token_weights(w, ex.n_completion, lcfg.normalise) for w, ex in zip(record_w, global_examples)]
            denom = _normaliser(global_examples, u, lcfg.normalise)
            u_of = dict(zip(batch_idx, u))
            lam_ce, lam_tea = lambda_ce(step, lcfg), lambda_tea(step, cfg.steps, lcfg)
            local = rank_slice(batch_idx, rank, world)
            groups = micro_batches(local, len(batch_idx), world, cfg.micro_batch_size)
            cwce_sum = torch.zeros((), device=accelerator.device)
            ce_sum = torch.zeros((), device=accelerator.device)
            tea_value = torch.zeros((), device=accelerator.device)
            for k, group in enumerate(groups):
                is_last = k == len(groups) - 1
                exs = [examples[i] for i in group] or [_dummy(pad_id)]
                batch = collate(exs, [u_of[i] for i in group] or [0.0], packing=cfg.packing, pad_id=pad_id)
                accelerator.gradient_state._set_sync_gradients(is_last)  # DeepSpeed steps inside backward only when True
                with accelerator.no_sync(model) if not is_last else nullcontext():
                    if anchor is not None and is_last:
                        anchor.arm()
                    with accelerator.autocast():
                        wsum, cesum = forward.loss_sums(batch)
                    # × world: DDP/FSDP average gradients over ranks, the objective sums them
                    loss = lam_ce * (wsum / denom) * world
                    if anchor is not None and is_last:
                        tea = anchor.take()  # once per optimizer step, identical on every rank
                        loss = loss + lam_tea * tea
                        tea_value = tea.detach()
                    accelerator.backward(loss)
                cwce_sum += wsum.detach() / denom
                ce_sum += cesum.detach()
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip or math.inf)
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            cwce = float(accelerator.reduce(cwce_sum, "sum"))
            ce = float(accelerator.reduce(ce_sum, "sum")) / max(1, sum(ex.n_completion for ex in global_examples))
            step_tokens = sum(len(ex) for ex in global_examples)
            state["tokens"] += step_tokens
            state["records"] += len(global_examples)
            if delay:
                time.sleep(delay)
            dt = time.perf_counter() - t0
            row = {
                "step": step, "loss": lam_ce * cwce + lam_tea * float(tea_value), "cwce": cwce, "ce": ce,
                "tea": float(tea_value), "lambda_ce": lam_ce, "lambda_tea": lam_tea, "lr": lr,
                "grad_norm": runtime.finite(float(grad_norm)) if grad_norm is not None else None,
                "tokens": state["tokens"], "records": state["records"], "epoch": stream.epoch_of(state["cursor"]),
                "tokens_per_s": step_tokens / dt if dt > 0 else 0.0,
            }
            if eval_examples and ((cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps):
                row["eval_loss"] = held_out_loss(forward, eval_examples, accelerator, **eval_kw)
            last = row
            if step % cfg.log_every == 0 or step == cfg.steps or "eval_loss" in row:
                metrics.write(row)
                if cfg.trackers:
                    accelerator.log({k: v for k, v in row.items() if v is not None and k != "step"}, step=step)
            progress.update(task, completed=step, info=runtime.format_info(row))
            state["step"] = step
            if step % cfg.checkpoint_every == 0 and step < cfg.steps:
                elapsed = state["wall_time_s"] + time.perf_counter() - segment_start
                save_checkpoint(accelerator, out, step, {**state, "wall_time_s": elapsed}, cfg.keep_checkpoints)

    # -- save ---------------------------------------------------------------------------------
    wall = state["wall_time_s"] + time.perf_counter() - segment_start
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(model)
    manifest_path = out / MANIFEST_FILE
    if main:
        accelerator.unwrap_model(model).save_pretrained(out, state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(out)
        save_resolved(recipe, out)
        info = runtime.device_info(accelerator)
        atomic_write_json(manifest_path, {
            "name": recipe.name, "student": recipe.student.model, "cache_dir": source, "seed": cfg.seed,
            "steps": state["step"], "tokens_seen": state["tokens"], "records_seen": state["records"],
            "epochs": stream.epoch_of(state["cursor"]), "train_records": len(examples), "heldout_records": len(eval_examples),
            "data": stats.as_dict(), "final_loss": last.get("loss"), "final_cwce": last.get("cwce"),
            "initial_eval_loss": initial_eval, "eval_loss": last.get("eval_loss"),
            "wall_time_s": wall, "setup_time_s": segment_start - t_start, **info,
            "device_hours": wall * info["device_count"] / 3600.0, "resumed_from_step": resumed_from,
            "metrics_file": METRICS_FILE, "versions": runtime.package_versions(), "config": resolved_dict(recipe),
        })
    if cfg.trackers:
        accelerator.end_training()
    accelerator.wait_for_everyone()
    return TrainResult(
        output_dir=out, steps=state["step"], tokens_seen=state["tokens"], records_seen=state["records"],
        final_loss=last.get("loss"), eval_loss=last.get("eval_loss"), initial_eval_loss=initial_eval,
        wall_time_s=wall, metrics_path=out / METRICS_FILE, manifest_path=manifest_path,
        resumed_from_step=resumed_from, is_main_process=main,
    )
