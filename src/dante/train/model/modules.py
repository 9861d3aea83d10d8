"""Helpers on a student's modules that do not depend on how it is trained (full or LoRA): the
module that actually runs under peft's wrappers, and parameter counts.
"""

from __future__ import annotations

import sys

import torch


def active_module(module: torch.nn.Module) -> torch.nn.Module:
    """The module that runs in a forward pass: the trained copy inside peft's ``ModulesToSaveWrapper``."""
    if "peft" not in sys.modules:  # no peft model can exist: skip the import
        return module
    from peft.utils.other import ModulesToSaveWrapper

    if isinstance(module, ModulesToSaveWrapper) and module.active_adapters:
        return module.modules_to_save[module.active_adapters[0]]
    return module


def parameter_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters, each shared tensor counted once (``parameters()`` skips
    the second name of a tied weight)."""
    trainable = total = 0
    for p in model.parameters():
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total
