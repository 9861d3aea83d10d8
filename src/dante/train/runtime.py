"""Set-up pieces the train loop (train/loop.py) calls once: the accelerate engine, the optimizer,
the held-out split, the metrics file, the progress bar and the manifest.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
from pathlib import Path
from typing import Any

import torch

from dante.config import TrainConfig
from dante.io import atomic_write_text


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


def split_heldout(records: list, fraction: float, seed: int) -> tuple[list, list]:
    """(train, held-out): a fixed share of records chosen by a seeded hash of their id, so the
    split does not depend on file order and stays put when records are added."""
    if fraction <= 0 or len(records) < 2:
        return list(records), []
    n_eval = min(len(records) - 1, max(1, round(fraction * len(records))))
    key = {id(r): hashlib.sha256(f"{seed}:{r.id}".encode()).hexdigest() for r in records}
    chosen = {id(r) for r in sorted(records, key=lambda r: key[id(r)])[:n_eval]}
    return [r for r in records if id(r) not in chosen], [r for r in records if id(r) in chosen]


class MetricsLog:
    """``metrics.jsonl``: one JSON object per line, appended and flushed every logged step."""

    def __init__(self, path: Path, *, enabled: bool, resume_step: int | None) -> None:
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            path.write_text("")
        elif path.exists():  # drop rows written after the checkpoint we resume from
            kept = [json.dumps(r) for r in self.rows() if r.get("step", 0) <= resume_step]
            atomic_write_text(path, "".join(ln + "\n" for ln in kept))

    def rows(self) -> list[dict[str, Any]]:
        """Every complete row; a torn line (a kill or full disk mid-append) is skipped."""
        if not self.path.exists():
            return []
        rows = []
        for ln in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(ln)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                rows.append(row)
        return rows

    def write(self, row: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
                fh.flush()


def progress_bar(enabled: bool, total: int, completed: int):
    """A rich progress bar: step counter, rate, ETA and a metrics line."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=Console(stderr=True),
        disable=not enabled,
        transient=False,
    )
    task = progress.add_task("train", total=total, completed=completed, info="")
    return progress, task


def format_info(row: dict[str, Any]) -> str:
    return (
        f"loss {row['loss']:.4f} cwce {row['cwce']:.4f} tea {row['tea']:.3g} "
        f"λce {row['lambda_ce']:.2f} λtea {row['lambda_tea']:.2f} lr {row['lr']:.2e} {row['tokens_per_s']:.0f} tok/s"
    )


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("dante-distill", "torch", "transformers", "accelerate", "tokenizers", "safetensors"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def device_info(accelerator) -> dict[str, Any]:
    dev = accelerator.device
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine()
    return {
        "device_type": dev.type,
        "device_count": accelerator.num_processes,
        "device_name": name,
        "distributed_type": str(accelerator.distributed_type).split(".")[-1],
        "mixed_precision": accelerator.mixed_precision,
    }


def finite(x: float) -> float | None:
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None
