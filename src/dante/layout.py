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

from pathlib import Path
from typing import Any

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
