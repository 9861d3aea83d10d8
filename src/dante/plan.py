"""`dante plan`: what a recipe will do (prompts, teacher tokens, student steps, tokens,
FLOPs and device-hours) computed from the recipe and the data on disk, loading no model.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Group
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table

from dante.config import Recipe, resolved_dict
from dante.errors import DanteError

# Rough characters per token for English text with modern BPE tokenizers; used only when
# neither a cache nor token counts exist yet, and said so in the plan.
CHARS_PER_TOKEN = 4.0


@dataclass
class Plan:
    prompts: int | None
    prompts_note: str
    teacher_completions: int | None
    teacher_tokens_max: int | None
    cached_records: int
    mean_record_tokens: float
    record_tokens_source: str
    student_steps: int
    sequences_per_step: int | None
    tokens_per_step: int | None
    student_tokens: float
    epochs: float | None
    training: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _count_prompts(recipe: Recipe) -> tuple[int | None, str, float | None]:
    """Number of prompts and their mean length in characters, or why it is unknown; for a
    curated set, the counts of each curation step."""
    if not recipe.prompts.source and not recipe.prompts.sources:
        return None, "no prompts.source set", None
    try:
        if recipe.prompts.curated:
            prompts, note = _curated(recipe)
        else:
            from dante.prompts import load_prompts

            base_dir = Path(recipe.source_file).parent if recipe.source_file else None
            prompts, note = load_prompts(recipe.prompts, base_dir=base_dir), recipe.prompts.source
    except Exception as exc:  # noqa: BLE001 - the plan reports what it cannot read
        return None, f"could not read prompts: {exc}", None
    if not prompts:
        return 0, "prompt source is empty", None
    mean_chars = sum(len(p.prompt) + len(p.system or "") for p in prompts) / len(prompts)
    return len(prompts), note, mean_chars


def _curated(recipe: Recipe):
    """The curated set (as built, or computed now without writing) and its step counts."""
    from dante.prompts import build_prompt_set
    from dante.prompts.build import built_prompt_set

    built = built_prompt_set(recipe)
    if built is not None:
        where = f"curated set in {recipe.prompts_dir}"
    else:
        built = build_prompt_set(recipe, write=False)
        where = "curated set, computed now (dante prompts build writes it)"
    steps = ", ".join(f"{s['step']} -{s['removed']}" for s in built.manifest["steps"][1:] if s["removed"])
    return built.prompts, f"{where}: {built.manifest['read']} read" + (f", {steps}" if steps else "")


def _cache_lengths(recipe: Recipe) -> tuple[int, float | None]:
    """Records already in the cache and their mean (prompt + completion) teacher tokens."""
    from dante.cache.records import cache_files

    try:
        folders = [f for f in recipe.cache_dirs if f.exists()]
    except DanteError:  # a glob that matches nothing yet
        return 0, None
    if not folders:
        return 0, None
    n, total, counted = 0, 0, 0
    for f in cache_files(folders):
        with open(f, "rb") as fh:
            for raw in fh:
                try:
                    rec = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue
                n += 1
                if rec.get("prompt_tokens") is not None and rec.get("completion_tokens") is not None:
                    total += rec["prompt_tokens"] + rec["completion_tokens"]
                    counted += 1
    return n, (total / counted if counted else None)


def make_plan(recipe: Recipe) -> Plan:
    t = recipe.teacher
    n_prompts, note, mean_chars = _count_prompts(recipe)
    samples = 1 + t.consistency_samples
    consistency_tokens = t.consistency_max_new_tokens or t.max_new_tokens
    teacher_tokens = None
    if n_prompts is not None:
        teacher_tokens = n_prompts * (t.max_new_tokens + t.consistency_samples * consistency_tokens)

    cached, mean_cached = _cache_lengths(recipe)
    if mean_cached is not None:
        mean_tokens, source = mean_cached, f"measured on {cached} cached records (teacher tokens)"
    else:
        prompt_tokens = (mean_chars or 200.0) / CHARS_PER_TOKEN
        mean_tokens = prompt_tokens + t.max_new_tokens / 2
        source = f"estimate: prompt chars/{CHARS_PER_TOKEN:g} + max_new_tokens/2 (no cache yet)"
    mean_tokens = min(mean_tokens, recipe.train.max_length)

    tr = recipe.train
    steps = tr.steps
    if tr.batch_tokens is not None:
        tokens_per_step, seqs = tr.batch_tokens, None
        student_tokens = float(steps * tr.batch_tokens)
        records_seen = student_tokens / mean_tokens
    else:
        seqs = tr.batch_sequences
        tokens_per_step = int(round(seqs * mean_tokens))
        student_tokens = float(steps * seqs * mean_tokens)
        records_seen = float(steps * seqs)
    dataset = cached or n_prompts
    epochs = records_seen / dataset if dataset else None

    training = _training_estimate(recipe, student_tokens, mean_tokens)
    return Plan(
        prompts=n_prompts,
        prompts_note=note,
        teacher_completions=None if n_prompts is None else n_prompts * samples,
        teacher_tokens_max=teacher_tokens,
        cached_records=cached,
        mean_record_tokens=round(mean_tokens, 1),
        record_tokens_source=source,
        student_steps=steps,
        sequences_per_step=seqs,
        tokens_per_step=tokens_per_step,
        student_tokens=student_tokens,
        epochs=None if epochs is None else round(epochs, 2),
        training=training,
    )


def _model_shape(recipe: Recipe) -> dict[str, Any]:
    """Parameter count, layers and hidden size from a local config.json, or the recipe's hint."""
    st = recipe.student
    shape: dict[str, Any] = {"num_parameters": st.num_parameters, "n_layers": st.num_layers, "hidden": st.hidden_size}
    path = _local_folder(recipe.student.model)
    cfg_file = path / "config.json"
    if cfg_file.is_file():
        cfg = json.loads(cfg_file.read_text())
        cfg = cfg.get("text_config", cfg)
        shape["n_layers"] = shape["n_layers"] or cfg.get("num_hidden_layers")
        shape["hidden"] = shape["hidden"] or cfg.get("hidden_size")
        if shape["num_parameters"] is None:
            shape["num_parameters"] = _params_from_config(cfg)
    return shape


def _local_folder(ref: str) -> Path:
    """The folder a model reference loads from, without loading or converting anything:
    a packaged ``pypi:NAME`` model's converted folder (when it exists), else the path itself."""
    if ref.startswith("pypi:"):
        from dante.offline import models_dir

        return models_dir() / ref.removeprefix("pypi:")
    return Path(ref)


def _params_from_config(cfg: dict[str, Any]) -> int | None:
    """Dense decoder parameter count from config fields (embeddings + layers + lm_head if untied)."""
    try:
        v, h, i, n = cfg["vocab_size"], cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    except KeyError:
        return None
    heads = cfg.get("num_attention_heads", 1)
    kv = cfg.get("num_key_value_heads", heads)
    head_dim = cfg.get("head_dim") or h // heads
    attn = h * heads * head_dim + 2 * h * kv * head_dim + heads * head_dim * h
    if cfg.get("attention_bias") or cfg.get("model_type") == "qwen2":  # q/k/v projection biases
        attn += (heads + 2 * kv) * head_dim
    mlp = 3 * h * i
    layer = attn + mlp + 2 * h
    embed = v * h
    lm_head = 0 if cfg.get("tie_word_embeddings", True) else v * h
    return int(embed + n * layer + h + lm_head)


def _training_estimate(recipe: Recipe, student_tokens: float, mean_tokens: float) -> dict[str, Any]:
    shape = _model_shape(recipe)
    if not shape["num_parameters"]:
        return {"note": "set student.num_parameters (or use a local student) for FLOPs and device-hours"}
    try:
        from dante.train.model.flops import estimate_training
    except ImportError:
        flops = 6.0 * shape["num_parameters"] * student_tokens
        return {"num_parameters": shape["num_parameters"], "flops": flops, "note": "6*N*tokens only"}
    trainable, total, note = _trainable_parameters(recipe, shape["num_parameters"])
    out = estimate_training(
        recipe,
        num_parameters=total,
        n_layers=shape["n_layers"],
        hidden=shape["hidden"],
        mean_tokens_per_record=mean_tokens,
        trainable_parameters=trainable,
        frozen_bytes=_frozen_bytes(recipe),
    )
    if note:
        out["trainable_note"] = note
    return out


def _frozen_bytes(recipe: Recipe) -> int:
    """Bytes per frozen weight: a LoRA base in bf16 (``student.peft.base_dtype``; 'auto' under
    bf16 mixed precision, resolved for this machine when that is 'auto' too), else fp32."""
    peft = recipe.student.peft
    if peft is None:
        return 4
    from dante.train.model.accelerator import resolve_mixed_precision
    from dante.train.model.lora import base_dtype

    mixed = resolve_mixed_precision(recipe.train.mixed_precision)
    dtype = peft.base_dtype if peft.base_dtype != "auto" else base_dtype(peft, mixed)  # the trainer's rule for auto
    return 2 if dtype == "bfloat16" else 4


def _trainable_parameters(recipe: Recipe, total: int) -> tuple[int | None, int, str | None]:
    """(trainable, total, note): full fine-tuning trains all of them; with ``student.peft`` both
    are counted exactly by building the LoRA student (adapters included) on the meta device from
    a local config.json, reading no weights."""
    peft = recipe.student.peft
    if peft is None:
        return total, total, None
    folder = _local_folder(recipe.student.model)
    if not (folder / "config.json").is_file():
        return None, total, "LoRA: trainable parameters are counted from a local student's config.json (not here yet)"
    from dante.train.model.lora import count_parameters

    try:
        counts = count_parameters(folder, peft, trust_remote_code=recipe.student.trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - the plan reports what it cannot count
        return None, total, f"LoRA: cannot count trainable parameters: {exc}"
    return counts["trainable"], counts["total"], None


def _fmt(x: float | int | None, unit: str = "") -> str:
    if x is None:
        return "unknown"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    for div, suffix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.2f}{suffix}{unit}"
    return f"{x:g}{unit}" if isinstance(x, float) else f"{x}{unit}"


def batch_layout(recipe: Recipe, nodes: int = 1, gpus_per_node: int = 1, mean_tokens: float | None = None) -> dict:
    """How one optimizer step splits over ``nodes`` × ``gpus_per_node`` processes, as the
    trainer splits it (``dante.train.sources.base``): a contiguous share of the global batch per
    process, in micro-batches of ``train.micro_batch_size``, the same count on every process."""
    from dante.train.sources.base import micro_batches

    tr = recipe.train
    world = nodes * gpus_per_node
    if tr.batch_tokens is not None:
        per_token = tr.batch_tokens / world
        records = tr.batch_tokens / max(mean_tokens or 1.0, 1.0)
    else:
        records = float(tr.batch_sequences)
        per_token = records * (mean_tokens or 0.0) / world
    micro = len(micro_batches([], math.ceil(records), world, tr.micro_batch_size))  # the trainer's own count
    out = {
        "world_size": world,
        "nodes": nodes,
        "gpus_per_node": gpus_per_node,
        "sequences_per_step": records,
        "sequences_per_node": records / nodes,
        "sequences_per_gpu": records / world,
        "micro_batches_per_gpu": micro,
        "tokens_per_gpu": per_token,
    }
    if records < world:
        out["note"] = f"only {records:g} sequences per step for {world} processes: some take none (padding steps)"
    elif records % world:
        out["note"] = f"{records:g} sequences do not split evenly over {world} processes (shares differ by one)"
    return out


def render_plan(recipe: Recipe, nodes: int = 1, gpus_per_node: int = 1):
    """A rich renderable: the resolved recipe, then the plan table (with the per-node and
    per-GPU split of a step when the run spans several processes)."""
    plan = make_plan(recipe)
    text = yaml.safe_dump(resolved_dict(recipe), sort_keys=False, allow_unicode=True)
    table = Table(title=f"plan: {recipe.name}", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    t = recipe.teacher
    table.add_row("teacher", f"{t.backend}: {t.model or '(unset)'}")
    table.add_row("prompts", f"{_fmt(plan.prompts)}  ({plan.prompts_note})")
    table.add_row(
        "teacher completions", f"{_fmt(plan.teacher_completions)} (1 greedy + {t.consistency_samples} samples each)"
    )
    table.add_row("teacher tokens (max)", _fmt(plan.teacher_tokens_max))
    d = recipe.cache.dir
    where = ", ".join(map(str, d)) if isinstance(d, list) else str(d or recipe.cache_dir)
    table.add_row("already cached", f"{plan.cached_records} records in {where}")
    table.add_row("student", recipe.student.model or "(unset)")
    table.add_row("student steps", str(plan.student_steps))
    batch = f"{plan.sequences_per_step} sequences" if plan.sequences_per_step else f"{plan.tokens_per_step} tokens"
    table.add_row("batch per step", batch)
    table.add_row("tokens per record", f"{plan.mean_record_tokens} ({plan.record_tokens_source})")
    table.add_row("student tokens", _fmt(plan.student_tokens))
    table.add_row("epochs over cache", _fmt(plan.epochs))
    op, end = recipe.train.on_policy, recipe.train.loss.policy_gradient.score_end
    if op.enabled and recipe.train.batch_sequences:
        prompts = max(1, round(op.fraction * recipe.train.batch_sequences))
        written = recipe.train.steps * prompts * op.samples_per_prompt
        table.add_row(
            "on-policy",
            f"λ = {op.fraction:g}: {prompts} prompts × {op.samples_per_prompt} samples a step written by the student "
            f"({_fmt(written)} in all, ≤ {op.max_new_tokens} tokens each), scored by the teacher "
            f"(≤ {_fmt(written * (op.max_new_tokens + end))} teacher tokens"
            + (", each ended sample's end of turn included" if end else "")
            + "; repeated texts come from the score cache)",
        )
    if nodes * gpus_per_node > 1:
        lay = batch_layout(recipe, nodes, gpus_per_node, plan.mean_record_tokens)
        table.add_row("processes", f"{lay['world_size']} ({nodes} nodes × {gpus_per_node} GPUs)")
        table.add_row(
            "per node / per GPU",
            f"{lay['sequences_per_node']:g} / {lay['sequences_per_gpu']:g} sequences per step, "
            f"{lay['micro_batches_per_gpu']} micro-batches of ≤ {recipe.train.micro_batch_size} per GPU, "
            f"~{_fmt(lay['tokens_per_gpu'])} tokens per GPU",
        )
        if "note" in lay:
            table.add_row("note", lay["note"])
    for key, value in plan.training.items():
        if key.startswith("flops") and isinstance(value, int | float):
            shown = f"{value:.3g} FLOP"  # 1.45e+18, not an SI prefix that reads like a unit
        elif key.endswith("_bytes") and isinstance(value, int | float):
            shown = _fmt(value, "B")
            key = key.removesuffix("_bytes")
        elif key == "trainable_parameters" and isinstance(value, int | float):
            total = plan.training.get("num_parameters") or value
            shown = f"{_fmt(value)} ({value / total:.2%} of {_fmt(total)})"
        else:
            shown = _fmt(value) if isinstance(value, int | float) else str(value)
        table.add_row(key.replace("_", " "), shown)
    return Group(Panel(Syntax(text, "yaml", word_wrap=True), title="resolved recipe"), table)
