"""Batch sources (stage 4): what a training step draws its micro-batches from. Cached teacher
records (``records``: rendering in ``data``, order in ``curriculum``, token-level targets in
``kd_data``) and the student's own samples scored by the teacher (``on_policy``); each yields
micro-batches of one kind through ``base.BatchSource`` and owns its state, its held-out loss and
its part of the manifest. ``build_sources`` makes a recipe's sources, in the order a step draws
them; the loop knows them only through that protocol.
"""

from __future__ import annotations

from typing import Any

from dante.config import Recipe
from dante.train.sources.base import BatchSource


def student_recipe(recipe: Recipe) -> Recipe:
    """The recipe whose student the run loads: a source may start it from trained weights (the
    on-policy source's ``train.on_policy.warm_start``)."""
    from dante.train.sources.on_policy import warm_started

    return warm_started(recipe)


def build_sources(recipe: Recipe, student, accelerator, model, pad_id: int, hooks: Any = None) -> list[BatchSource]:
    """The run's batch sources, the student's own samples first and then the cached records (GKD's
    mix λ = ``train.on_policy.fraction`` of each step's sequences); each built from the recipe. The
    records source is always there (it holds the cache's held-out records and counts), drawing
    nothing when the samples take the whole batch (``active``)."""
    from dante.train.sources.on_policy import OnPolicySamples, on_policy_share
    from dante.train.sources.records import CachedRecords

    prompts = on_policy_share(recipe)
    found: list[BatchSource] = []
    if prompts:
        found.append(OnPolicySamples.from_recipe(recipe, student, accelerator, model, pad_id, prompts))
    found.append(CachedRecords.from_recipe(recipe, student, accelerator, pad_id, prompts, hooks))
    return found
