"""The `dante` command: one verb per stage, each a thin wrapper over a Python function.

dante plan RECIPE [key=value ...]        what the run will do, loading no model
dante prompts build RECIPE | check RECIPE   curated prompt set: mixture, dedup, decontamination
dante cache RECIPE [key=value ...]       teacher -> cache shards (resumable)
dante cache validate DIR | stats DIR     check / summarise a cache
dante cache export DIR --to FOLDER       the cache as a Hugging Face dataset (Parquet + card)
dante train RECIPE [key=value ...] [--resume]
dante eval RECIPE [key=value ...] [--model PATH] [--limit N]
dante report RUN_DIR
dante run RECIPE [key=value ...]         every stage in order
dante push RECIPE --repo ID [--dataset-repo ID]   student (+ exported cache) to the Hugging Face Hub
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from typer.core import TyperGroup

from dante.errors import DanteError

console = Console(stderr=True)
out = Console()


class _DefaultRunGroup(TyperGroup):
    """A group whose unknown first word is the recipe of its ``run`` command:
    ``dante cache recipe.yaml`` is ``dante cache run recipe.yaml``."""

    def resolve_command(self, ctx: click.Context, args: list[str]):  # type: ignore[override]
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().resolve_command(ctx, args)


app = typer.Typer(
    help="dante: cross-tokenizer generative knowledge distillation (DANTE loss family).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
cache_app = typer.Typer(
    cls=_DefaultRunGroup, help="Teacher cache: generate (default), validate, stats, export.", no_args_is_help=True
)
app.add_typer(cache_app, name="cache")
prompts_app = typer.Typer(
    help="Prompt set: build (mix, de-duplicate, decontaminate, write) or check (the same, writing nothing).",
    no_args_is_help=True,
)
app.add_typer(prompts_app, name="prompts")

RecipeArg = Annotated[Path, typer.Argument(help="Recipe YAML.", show_default=False)]
OverridesArg = Annotated[
    list[str] | None, typer.Argument(help="Dotted overrides, e.g. teacher.batch_size=16.", show_default=False)
]


def _friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Print DanteErrors as one located line and exit 1, instead of a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DanteError as err:
            console.print(f"[bold red]error:[/] {err.render()}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]: finished work is kept; re-run the same command to resume")
            raise typer.Exit(130) from None

    return wrapper


def _load(recipe: Path, overrides: list[str] | None):
    from dante.config import load_recipe

    return load_recipe(recipe, overrides or [])


@app.command()
@_friendly
def plan(
    recipe: RecipeArg,
    overrides: OverridesArg = None,
    nodes: Annotated[int, typer.Option("--nodes", min=1, help="Training nodes (for the per-node split).")] = 1,
    gpus_per_node: Annotated[int, typer.Option("--gpus-per-node", min=1, help="Processes per node.")] = 1,
) -> None:
    """Print the resolved recipe and what the run will do, without loading any model."""
    from dante.plan import render_plan

    out.print(render_plan(_load(recipe, overrides), nodes=nodes, gpus_per_node=gpus_per_node))


@app.command()
@_friendly
def tokenizers(
    recipe: RecipeArg,
    overrides: OverridesArg = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Texts to align (cached, else prompts).")] = 500,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the audit as JSON here.")] = None,
) -> None:
    """Audit the teacher/student tokenizer pair before training (loads tokenizers only): what share
    of the text the cross-tokenizer signal reaches, how each side splits digits and whitespace,
    whether the teacher can score, and what to train with."""
    import json

    from dante.audit import audit, render

    report = audit(_load(recipe, overrides), limit=limit)
    out.print(render(report))
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")


@prompts_app.command("build")
@_friendly
def prompts_build(recipe: RecipeArg, overrides: OverridesArg = None) -> None:
    """Write the curated prompt set (prompts.parquet) and prompts_manifest.json."""
    from dante.prompts import build_prompt_set
    from dante.prompts.summary import render_manifest

    built = build_prompt_set(_load(recipe, overrides), console=console)
    out.print(render_manifest(built.manifest, written_to=str(built.directory)))


@prompts_app.command("check")
@_friendly
def prompts_check(recipe: RecipeArg, overrides: OverridesArg = None) -> None:
    """Print what build would keep and remove, without writing anything."""
    from dante.prompts import build_prompt_set
    from dante.prompts.summary import render_manifest

    built = build_prompt_set(_load(recipe, overrides), write=False, console=console)
    out.print(render_manifest(built.manifest))


@cache_app.command("run")
@_friendly
def cache_run(
    recipe: RecipeArg,
    overrides: OverridesArg = None,
    write_requests: Annotated[
        Path | None,
        typer.Option(
            "--write-requests",
            help="Write the pending prompts' requests in the OpenAI batch format to FILE (for vLLM's run_batch "
            "or a provider's Batch API) instead of asking the teacher.",
        ),
    ] = None,
    ingest: Annotated[
        list[Path] | None,
        typer.Option("--ingest", help="Read a results file of the OpenAI batch format into the cache (repeatable)."),
    ] = None,
) -> None:
    """Generate the teacher cache (resumes: ids already written are skipped)."""
    from dante.cache.run import run_cache

    if write_requests is not None and ingest:
        raise DanteError("--write-requests and --ingest are two steps: run one, then the other")
    summary = run_cache(_load(recipe, overrides), write_requests=write_requests, ingest=ingest or None)
    out.print(summary)


CachePathsArg = Annotated[
    list[Path], typer.Argument(help="Cache folder(s) or JSONL file(s); several folders or a quoted glob: their union.")
]


@cache_app.command("validate")
@_friendly
def cache_validate(path: CachePathsArg) -> None:
    """Check every line against the record schema; exit 1 if any line is bad."""
    from dante.cache.manifest import mixed_settings
    from dante.cache.records import validate_cache

    checked, problems = validate_cache(path)
    for line in mixed_settings(path):
        out.print(f"[yellow]note[/]: folders of different teacher/prompt settings: {line}", soft_wrap=True)
    for p in problems:
        out.print(str(p), highlight=False, soft_wrap=True)
    bad_lines = len({(p.file, p.line) for p in problems})
    out.print(f"{checked} lines checked, {bad_lines} bad, {len(problems)} problems", highlight=False)
    if problems:
        raise typer.Exit(1)


@cache_app.command("stats")
@_friendly
def cache_stats(path: CachePathsArg) -> None:
    """Counts, token totals and the entropy distribution of a cache."""
    from dante.cache.stats import cache_stats as stats
    from dante.cache.stats import render_stats

    out.print(render_stats(stats(path)))


@cache_app.command("export")
@_friendly
def cache_export(
    path: CachePathsArg,
    to: Annotated[Path, typer.Option("--to", help="Dataset folder to write (Parquet shards + README.md).")],
) -> None:
    """Write the cache as Parquet shards and a dataset card that `datasets.load_dataset` reads."""
    from dante.cache.export import export_cache

    out.print(str(export_cache(path, to)), highlight=False, soft_wrap=True)


@app.command()
@_friendly
def train(
    recipe: RecipeArg,
    overrides: OverridesArg = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last complete checkpoint.")] = False,
) -> None:
    """Fine-tune the student on the teacher cache with the DANTE objective."""
    from dante.train.loop import train as run_train

    result = run_train(_load(recipe, overrides), resume=resume)
    if result.is_main_process:  # one line per run, not one per rank
        out.print(str(result), highlight=False, soft_wrap=True)


@app.command("eval")
@_friendly
def eval_(
    recipe: RecipeArg,
    overrides: OverridesArg = None,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", help="Model to evaluate (student/teacher/base or a path); repeatable."),
    ] = None,
    suite: Annotated[
        str | None, typer.Option(help="Named suite: card, local, demo, or 'none' for only --task.")
    ] = None,
    task: Annotated[list[str] | None, typer.Option("--task", help="Extra lm-eval task; repeatable.")] = None,
    limit: Annotated[float | None, typer.Option(help="lm-eval limit (rows, or a fraction < 1).")] = None,
    allow_code_execution: Annotated[
        bool, typer.Option("--allow-code-execution", help="Run generated code (HumanEval/MBPP).")
    ] = False,
) -> None:
    """Score models with lm-evaluation-harness; writes raw results and scores.json per model."""
    from dante.eval.run import evaluate

    cfg = _load(recipe, overrides)
    if model:
        cfg.eval.models = list(model)
    if suite is not None:
        cfg.eval.suite = None if suite.lower() in ("none", "null", "") else suite
    if task:
        cfg.eval.tasks = [*cfg.eval.tasks, *task]
    if limit is not None:
        cfg.eval.limit = limit
    if allow_code_execution:
        cfg.eval.allow_code_execution = True
    out.print(evaluate(cfg))


@app.command()
@_friendly
def report(
    run_dir: Annotated[Path, typer.Argument(help="Run folder (the recipe's output_dir).")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Report folder (default: RUN_DIR/report).")
    ] = None,
) -> None:
    """Write report.md, plots and the student's model card from a run folder."""
    from dante.report.build import build_report

    path = build_report(run_dir, output)
    out.print(f"report: {path}")


@app.command()
@_friendly
def run(recipe: RecipeArg, overrides: OverridesArg = None) -> None:
    """Run every stage of a recipe in order: prompts, cache, train, eval, report."""
    from dante.pipeline import run_pipeline

    path = run_pipeline(_load(recipe, overrides))
    out.print(f"[bold green]done[/]: report at {path}")


@app.command()
@_friendly
def push(
    recipe: RecipeArg,
    overrides: OverridesArg = None,
    repo: Annotated[str | None, typer.Option("--repo", help="Model repo for the student, e.g. you/student.")] = None,
    dataset_repo: Annotated[
        str | None, typer.Option("--dataset-repo", help="Dataset repo for the exported teacher cache.")
    ] = None,
    private: Annotated[bool, typer.Option("--private", help="Create the repos private.")] = False,
    merged: Annotated[
        bool, typer.Option("--merged", help="A LoRA student: push the merged model instead of the adapter.")
    ] = False,
) -> None:
    """Upload the student (with its model card) and/or the teacher cache to the Hub (token: HF_TOKEN)."""
    from dante.errors import ConfigError
    from dante.report.publish import push_to_hub

    if not repo and not dataset_repo:
        raise ConfigError("nothing to push", field="--repo", hint="give --repo and/or --dataset-repo")
    cfg = _load(recipe, overrides)
    summary = push_to_hub(
        cfg.student_dir, repo, cache_dir=cfg.cache_dirs, dataset_repo_id=dataset_repo, private=private, merged=merged
    )
    out.print(str(summary), highlight=False, soft_wrap=True)


def main() -> None:
    app(prog_name="dante")


if __name__ == "__main__":
    sys.exit(main())
