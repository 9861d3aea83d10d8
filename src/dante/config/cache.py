"""The cache's section of the recipe (stage 1, ``dante.cache``): where the teacher's records go."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from dante.config.base import Section


class CacheConfig(Section):
    """The teacher cache on disk (stage 2 "generate cache")."""

    dir: Path | list[Path] | None = Field(
        None,
        description="Cache folder (default: <output_dir>/cache). Training, stats, validate and export also take "
        "several folders or a glob (runs/node-*/cache): their union; `dante cache` writes one.",
    )
    shard_size: int = Field(1000, ge=1, description="Records per JSONL shard.")
    flush_every: int = Field(16, ge=1, description="Records buffered before they are made durable.")
    difficulty_entropy_scale: float = Field(
        3.0, gt=0.0, description="Entropy (nats) mapped to full difficulty in difficulty_score."
    )
