"""Resumable training checkpoints (stage 4): accelerate's ``save_state`` (model, optimizer,
scheduler, RNG of every rank) plus ``dante_state.json`` (step, stream cursor, tokens, wall time).

Layout: ``<student_dir>/checkpoints/step-000200/``. A checkpoint is written to
``checkpoints/.tmp-step-000200`` and renamed when every file (the JSON last) is on disk, so a
folder named ``step-*`` that holds ``dante_state.json`` is complete by construction; a
half-written one (killed mid-save) keeps its ``.tmp-`` name and is never picked up.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from dante.io import atomic_write_json, fsync_dir
from dante.layout import CHECKPOINTS

STATE_FILE = "dante_state.json"
_NAME = re.compile(r"^step-(\d+)$")


def checkpoint_root(student_dir: str | Path) -> Path:
    return Path(student_dir) / CHECKPOINTS


def complete_checkpoints(student_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoint_root(student_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name)) and (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(student_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    done = complete_checkpoints(student_dir)
    return done[-1] if done else None


def read_state(checkpoint: str | Path) -> dict[str, Any]:
    return json.loads((Path(checkpoint) / STATE_FILE).read_text())


def save_checkpoint(accelerator, student_dir: str | Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write a complete checkpoint for ``step`` (every rank must call this), keep the last ``keep``."""
    root = checkpoint_root(student_dir)
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)  # leftovers of a killed save
        tmp.mkdir()
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_json(tmp / STATE_FILE, {**state, "step": step})
        fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(root)
        for old in complete_checkpoints(student_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final
