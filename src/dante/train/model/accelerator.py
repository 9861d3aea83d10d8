"""The training engine (stage 4 set-up): accelerate for CPU, one GPU, DDP, FSDP or DeepSpeed,
the mixed-precision choice, the AdamW optimizer, regional compilation, and where it all ran.
"""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from dante.config import TrainConfig


def resolve_mixed_precision(setting: str) -> str:
    """'auto' -> 'bf16' on a CUDA device with bf16 support, 'no' (fp32) elsewhere, CPU included."""
    if setting != "auto":
        return setting
    on_cpu = os.environ.get("ACCELERATE_USE_CPU", "false").lower() in ("1", "true", "yes")
    if not on_cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def make_accelerator(cfg: TrainConfig, project_dir: Path):
    """One accelerate engine for CPU, one GPU, DDP, FSDP or DeepSpeed (chosen by `accelerate launch`).

    Gradient accumulation is done by the loop (micro-batch count per step varies with
    batch_tokens), so the engine is built with gradient_accumulation_steps=1.
    """
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    return Accelerator(
        mixed_precision=resolve_mixed_precision(cfg.mixed_precision),
        log_with=list(cfg.trackers) or None,
        project_config=ProjectConfiguration(project_dir=str(project_dir), logging_dir=str(project_dir / "tracking")),
    )


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (card: β=(0.9, 0.95), ε=1e-8, wd=0.1). Weight decay on matrices (≥2-D: linear
    layers and embeddings, as nanoGPT does), none on biases and norm gains (1-D)."""
    params = [p for p in model.parameters() if p.requires_grad]
    seen, decay, no_decay = set(), [], []
    for p in params:
        if id(p) in seen:  # tied weights appear once
            continue
        seen.add(id(p))
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    kwargs = {"lr": cfg.lr, "betas": (cfg.adam_beta1, cfg.adam_beta2), "eps": cfg.adam_eps}
    try:  # one kernel per tensor, no temporaries (transformers' default too); same update as the loop
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, ValueError):  # a device or dtype without the fused kernel
        return torch.optim.AdamW(groups, **kwargs)


def compile_blocks(model: torch.nn.Module) -> int:
    """Regional compilation: ``torch.compile`` every block of the model's repeated-block list
    (the decoder layers) in place, with dynamic shapes so packed rows of any length reuse one
    graph; returns how many blocks were compiled. In place (``nn.Module.compile``) keeps the
    parameter names, so checkpoints, ``save_pretrained`` and accelerate's wrappers see the
    same module tree. The embeddings, final norm and lm_head (dante's chunked CE head) stay eager.
    """
    from accelerate.utils.other import is_repeated_blocks

    blocks = max((m for m in model.modules() if is_repeated_blocks(m)), key=len, default=None)
    if blocks is None:
        return 0
    for block in blocks:
        block.compile(dynamic=True)
    return len(blocks)


def device_info(accelerator) -> dict[str, Any]:
    dev = accelerator.device
    from dante.models import device_name

    return {
        "device_type": dev.type,
        "device_count": accelerator.num_processes,
        "device_name": device_name(dev),
        "distributed_type": str(accelerator.distributed_type).split(".")[-1],
        "mixed_precision": accelerator.mixed_precision,
    }


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("dante-distill", "torch", "transformers", "accelerate", "tokenizers", "safetensors"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out
