"""`dante run`: every stage of a recipe in order (prompts -> cache -> train -> eval -> report).

Each stage resumes on its own (the cache skips ids already written, training continues
from its last checkpoint when one exists), so re-running a killed pipeline picks up
where it stopped.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from dante.config import Recipe, save_resolved
from dante.layout import STUDENT_MANIFEST

console = Console(stderr=True)


def _stage(name: str) -> float:
    console.rule(f"[bold]{name}")
    return time.perf_counter()


def run_pipeline(recipe: Recipe) -> Path:
    """Run prompts (a curated set), cache, train, eval and report; return the report path."""
    from dante.cache.run import run_cache
    from dante.eval.run import evaluate
    from dante.prompts.build import current_prompt_set
    from dante.prompts.summary import render_manifest
    from dante.report.build import build_report
    from dante.train.checkpoint import latest_checkpoint
    from dante.train.loop import train
    from dante.train.objective.terms import check_terms, recipe_folder

    check_terms(recipe.train, recipe_folder(recipe))  # a term's mistake stops the run before the teacher runs
    recipe.output_dir.mkdir(parents=True, exist_ok=True)
    save_resolved(recipe, recipe.output_dir)
    timings: dict[str, float] = {}

    t0 = _stage("1/5 prompts")
    if recipe.prompts.curated:
        built = current_prompt_set(recipe, console=console)
        console.print(render_manifest(built.manifest, written_to=str(built.directory), show_removed=3))
    else:
        console.print(f"one source, no curation: {recipe.prompts.source}")
    timings["prompts"] = time.perf_counter() - t0

    t0 = _stage("2/5 teacher cache")
    console.print(run_cache(recipe))
    timings["cache"] = time.perf_counter() - t0

    t0 = _stage("3/5 student training")
    if (recipe.student_dir / STUDENT_MANIFEST).is_file():
        console.print(f"student already trained: {recipe.student_dir} (delete it to train again)")
    else:
        resume = latest_checkpoint(recipe.student_dir) is not None
        console.print(str(train(recipe, resume=resume)), highlight=False, soft_wrap=True)
    timings["train"] = time.perf_counter() - t0

    t0 = _stage("4/5 evaluation")
    if recipe.eval.suite or recipe.eval.tasks:
        console.print(evaluate(recipe))
    else:
        console.print("no eval.suite or eval.tasks: skipped")
    timings["eval"] = time.perf_counter() - t0

    t0 = _stage("5/5 report")
    path = build_report(recipe.output_dir)
    timings["report"] = time.perf_counter() - t0
    console.print("stage wall times: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()))
    return path
