"""The run folder's layout: every stage's folder and the names of the files the stages hand
to each other. Stages and the report take their paths from here, never spell them out.

    <output_dir>/
        resolved_recipe.yaml            the recipe as run (also next to every stage's outputs)
        prompts/  prompts.parquet, prompts_manifest.json    (curated prompt set; prompts.dir)
        cache/    manifest.json, shard-NNNNN.jsonl          (teacher cache; cache.dir)
        student/  dante_manifest.json, metrics.jsonl,
                  checkpoints/step-NNNNNN/, model files     (training; train.output_dir)
                  (LoRA: adapter files, merged/ model files)
        eval/     <model>/scores.json, results_<task>.json  (evaluation; eval.output_dir)
        report/   report.md, plots                          (report; report.output_dir)
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

from dante.errors import DataError

RESOLVED_RECIPE = "resolved_recipe.yaml"
PROMPT_SET = "prompts.parquet"
PROMPTS_MANIFEST = "prompts_manifest.json"
CACHE_MANIFEST = "manifest.json"
STUDENT_MANIFEST = "dante_manifest.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
ADAPTER_CONFIG = "adapter_config.json"  # a LoRA student's folder is peft's adapter folder
MERGED = "merged"  # <student>/merged: the LoRA student with its adapter merged in (student.peft.save_merged)
SCORES = "scores.json"

# stage -> (recipe section, key of its folder setting); the folder's default name is the stage's.
STAGE_SETTINGS: dict[str, tuple[str, str]] = {
    "prompts": ("prompts", "dir"),
    "cache": ("cache", "dir"),
    "student": ("train", "output_dir"),
    "eval": ("eval", "output_dir"),
    "report": ("report", "output_dir"),
}


def stage_dir(output_dir: str | Path, stage: str, explicit: str | Path | None = None) -> Path:
    """A stage's folder: its explicit setting when given, else ``<output_dir>/<stage>``."""
    if stage not in STAGE_SETTINGS:
        raise ValueError(f"unknown stage {stage!r}; one of {sorted(STAGE_SETTINGS)}")
    return Path(explicit) if explicit else Path(output_dir) / stage


def explicit_setting(recipe: dict[str, Any], stage: str) -> str | None:
    """The folder a resolved recipe (plain data) sets for ``stage``, or None for the default."""
    section, key = STAGE_SETTINGS[stage]
    return (recipe.get(section) or {}).get(key)


def is_pattern(path: str | Path | None) -> bool:
    """A glob (``runs/node-*/cache``) rather than one path."""
    return path is not None and any(ch in str(path) for ch in "*?[")


def expand_folders(paths: str | Path | list | tuple) -> list[Path]:
    """``cache.dir`` as folders: one path, several, or globs (``runs/node-*/cache``), each glob
    expanded in sorted order; a glob that matches nothing is an error naming it."""
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    out: list[Path] = []
    for item in items:
        text = str(item)
        if is_pattern(text):
            matches = [Path(m) for m in sorted(glob.glob(text))]
            if not matches:
                raise DataError("no cache folder matches this pattern", file=text, field="cache.dir")
            out += matches
        else:
            out.append(Path(text))
    unique: dict[Path, Path] = {}
    for p in out:  # a folder named twice (or matched by two patterns) is read once
        unique.setdefault(p.resolve(), p)
    return list(unique.values())
