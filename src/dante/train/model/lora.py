"""LoRA students through ``peft`` (stage 3 "init student", stage 5 "save"): the adapters on
the student, what the TEA anchor means with them, adapter-only checkpoints, and the adapter
and merged folders the run leaves.

TEA with LoRA. The anchor is ‖E − E₀‖²_F on the input embedding the student actually uses:
- embedding frozen (not in ``modules_to_save``, no adapter on it): E = E₀ for the whole run,
  the anchor is 0 and has no gradient, so it is switched off and the log says so;
- ``modules_to_save: [embed_tokens]``: peft trains a copy of the embedding (a tied head follows
  it, ``ensure_weight_tying``); the anchor holds that copy to its value at the start;
- an adapter on the embedding (``target_modules`` names it): E = E₀ + ΔE with ΔE = s·(BA)ᵀ, so
  the anchor is ‖ΔE‖²_F, computed from peft's own ``get_delta_weight`` inside the forward.
"""

# peft is imported only where a LoRA student is built or read: full fine-tuning never imports it
# (``is_peft`` and ``active_module`` check ``sys.modules`` for the same reason).

from __future__ import annotations

import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from dante.config import PeftConfig
from dante.errors import DanteError
from dante.layout import MERGED
from dante.models import load_causal_lm
from dante.train.model.anchor import TeaAnchor
from dante.train.model.modules import active_module, parameter_counts

# accelerate's name for the first model's weights in a save_state folder
CHECKPOINT_WEIGHTS = "model.safetensors"


def lora_config(cfg: PeftConfig, *, tied: bool = False):
    """peft's ``LoraConfig`` for ``student.peft``. For a model with tied embeddings that trains
    its embedding (``modules_to_save``), ``ensure_weight_tying`` keeps the head tied to the copy."""
    from peft import LoraConfig, TaskType

    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=cfg.target_modules,
        modules_to_save=list(cfg.modules_to_save) or None,
        ensure_weight_tying=tied and bool(cfg.modules_to_save),
    )


def base_dtype(cfg: PeftConfig, mixed_precision: str) -> str:
    """The frozen base's dtype: bf16 only under bf16 autocast (the adapters and any
    ``modules_to_save`` copy are fp32 master weights, their matmuls autocast like the base's)."""
    if cfg.base_dtype == "auto":
        return "bfloat16" if mixed_precision == "bf16" else "float32"
    if cfg.base_dtype == "bfloat16" and mixed_precision != "bf16":
        raise DanteError(
            "a bfloat16 base needs bf16 autocast, or fp32 adapters would meet bf16 activations",
            field="student.peft.base_dtype",
            hint="set train.mixed_precision=bf16, or student.peft.base_dtype=float32",
        )
    return cfg.base_dtype


def apply_lora(model: torch.nn.Module, cfg: PeftConfig) -> torch.nn.Module:
    """The student with LoRA adapters (a ``peft.PeftModel``); only adapters and
    ``modules_to_save`` require grad. A name that matches no module is an error naming the field."""
    from peft import get_peft_model
    from peft.tuners.lora import Embedding as LoraEmbedding

    tied = bool(getattr(model.config.get_text_config(), "tie_word_embeddings", False))
    try:
        with quiet_peft():
            wrapped = get_peft_model(model, lora_config(cfg, tied=tied))
    except ValueError as exc:
        raise DanteError(
            f"peft cannot put LoRA on this student: {exc}",
            field="student.peft.target_modules",
            hint="name modules the student has (e.g. q_proj, v_proj) or use 'all-linear'",
        ) from None
    for p in wrapped.parameters():  # trainable copies of a bf16 base (modules_to_save) train in fp32
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    if tied and isinstance(wrapped.get_input_embeddings(), LoraEmbedding):
        # the adapter changes the input embedding only; merged into the one tied matrix it would
        # change the head too, so the merged model would not be the trained one
        raise DanteError(
            "a LoRA adapter on the input embedding of a student with tied embeddings cannot be merged "
            "(the head shares the matrix but not the update)",
            field="student.peft.target_modules",
            hint="train the embedding in full instead: student.peft.modules_to_save=[embed_tokens]",
        )
    return wrapped


@contextmanager
def quiet_peft():
    """peft and transformers warn about a deprecated alias (is_gradient_checkpointing) that
    peft itself calls; that is not the user's concern."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        yield


def is_peft(model: torch.nn.Module) -> bool:
    if "peft" not in sys.modules:
        return False
    from peft import PeftModel

    return isinstance(model, PeftModel)


def core_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside a PeftModel (its config, forward signature, lm_head), or the model."""
    return model.get_base_model() if is_peft(model) else model


class LoraDeltaAnchor(TeaAnchor):
    """TEA for an embedding with a LoRA adapter: ‖ΔE‖²_F, ΔE = peft's ``get_delta_weight``, the
    whole drift of E from E₀ (the frozen base weight); no snapshot needed."""

    def __init__(self) -> None:
        super().__init__(None)

    def penalty(self, module: torch.nn.Module) -> torch.Tensor:
        delta = sum(module.get_delta_weight(a) for a in module.active_adapters)
        return delta.float().pow(2).sum()


def tea_anchor(model: torch.nn.Module, print_fn=print) -> TeaAnchor | None:
    """The TEA anchor of a LoRA student (see the module docstring), or None when the embedding is frozen."""
    from peft.tuners.lora import Embedding as LoraEmbedding

    embedding = model.get_input_embeddings()
    if isinstance(embedding, LoraEmbedding):
        print_fn("TEA: the input embedding has a LoRA adapter; the anchor is ‖ΔE‖² of its update")
        return LoraDeltaAnchor().attach(model, embedding)
    trained = active_module(embedding)
    if not trained.weight.requires_grad:
        print_fn(
            "TEA: off. With LoRA the input embedding is frozen (E = E₀ throughout, the anchor is 0); "
            "add embed_tokens to student.peft.modules_to_save to train and anchor it"
        )
        return None
    print_fn("TEA: anchoring the trained copy of the input embedding (student.peft.modules_to_save)")
    return TeaAnchor(trained.weight).attach(model, trained)


# -- checkpoints: only what trains ---------------------------------------------------------------


def trainable_keys(model: torch.nn.Module) -> set[str]:
    """State-dict names of the parameters that train (under DDP with its ``module.`` prefix)."""
    return {name for name, p in model.named_parameters() if p.requires_grad}


def adapter_only_checkpoints(accelerator, model: torch.nn.Module) -> None:
    """Checkpoints hold the trainable tensors only: accelerate's ``save_state`` would write the
    frozen base too (an 8B student: 32 GB of fp32 per checkpoint for a few MB of adapters). The
    frozen weights are the base model's, reloaded from it on resume. FSDP and DeepSpeed save
    through their own paths and keep their full state."""
    keys = trainable_keys(model)

    def keep_trainable(models, weights, output_dir) -> None:
        for i, state in enumerate(weights):
            weights[i] = {k: v for k, v in state.items() if k in keys}

    accelerator.register_save_state_pre_hook(keep_trainable)


def load_checkpoint(accelerator, model: torch.nn.Module, checkpoint: Path) -> None:
    """``accelerator.load_state`` of an adapter-only checkpoint: non-strict (the frozen base is
    not in it), then checked: the file must hold exactly the parameters that train."""
    weights = Path(checkpoint) / CHECKPOINT_WEIGHTS
    hint = "resume with the student.peft settings the run was started with"
    try:
        accelerator.load_state(str(checkpoint), strict=False)
    except RuntimeError as exc:  # shapes differ: another rank, other modules
        raise DanteError(
            f"checkpoint does not match this LoRA student: {str(exc)[:300]}",
            file=weights,
            field="student.peft",
            hint=hint,
        ) from None
    if not weights.is_file():  # FSDP / DeepSpeed layouts: loaded strictly by their own code
        return

    with safe_open(str(weights), framework="pt") as f:
        saved = set(f.keys())
    expected = trainable_keys(model)
    if saved != expected:
        missing, extra = sorted(expected - saved), sorted(saved - expected)
        raise DanteError(
            f"checkpoint does not match this LoRA student: missing {missing[:3]}, unexpected {extra[:3]}",
            file=weights,
            field="student.peft",
            hint=hint,
        )


# -- the saved student ---------------------------------------------------------------------------


def save_merged(student_dir: Path, base_ref, student, tokenizer) -> Path:
    """``<student_dir>/merged``: the base with the saved adapter merged in, a plain transformers
    folder. Built from the files just written (base reloaded on the CPU in fp32, the adapter from
    disk), so it is the same under DDP, FSDP or DeepSpeed and proves the adapter folder loads."""
    from peft import PeftModel

    base = load_causal_lm(
        base_ref,
        dtype="float32",
        trust_remote_code=student.trust_remote_code,
        revision=student.revision,
    )
    with quiet_peft():
        merged = PeftModel.from_pretrained(base, str(student_dir)).merge_and_unload()
    out = student_dir / MERGED
    merged.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def count_parameters(folder: str | Path, cfg: PeftConfig | None, *, trust_remote_code: bool = False) -> dict[str, Any]:
    """Total and trainable parameters of a local student, with or without ``student.peft``, built
    on the meta device from its config.json (no weights read): what `dante plan` prints."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    with torch.device("meta"):  # keeps tied weights tied (accelerate's init_empty_weights does not)
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
        if cfg is not None:
            model = apply_lora(model, cfg)
    trainable, total = parameter_counts(model)
    return {"total": total, "trainable": trainable}
