"""Stage 1, the prompts: reading sources (``sources``), and for a curated set (``dante prompts
build``) mixing them by weight (``mixture``), removing duplicates (``dedup``) and benchmark
questions (``decontaminate``), written as Parquet with its manifest (``build``).
"""

from dante.prompts.build import PromptSet, build_prompt_set, prompt_set, read_prompt_set
from dante.prompts.sources import (
    PROCEDURAL_PREFIX,
    Prompt,
    is_procedural,
    load_prompts,
    procedural_task,
    record_id,
    render_prompt,
    source_label,
)

__all__ = [
    "PROCEDURAL_PREFIX",
    "Prompt",
    "PromptSet",
    "build_prompt_set",
    "is_procedural",
    "load_prompts",
    "procedural_task",
    "prompt_set",
    "read_prompt_set",
    "record_id",
    "render_prompt",
    "source_label",
]
