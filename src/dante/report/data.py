"""Read what the other stages left in a run folder, for the report (last stage).

Every reader returns None or an empty list plus a note when its stage has not run (or left a
broken file), so a report can always be written: a missing stage is a line in the report,
never a crash.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dante import layout
from dante.cache.records import read_cache
from dante.cache.stats import cache_stats
from dante.errors import DanteError
from dante.eval.scores import read_scores


@dataclass
class RunData:
    """Everything the report uses, with the notes on what is missing."""

    run_dir: Path
    recipe: dict[str, Any] = field(default_factory=dict)
    cache_dir: Path | None = None  # the (first) cache folder, whose manifest the report reads
    cache_dirs: list[Path] = field(default_factory=list)  # every folder of cache.dir
    student_dir: Path | None = None
    eval_dir: Path | None = None
    report_dir: Path | None = None
    scores: list[dict[str, Any]] = field(default_factory=list)  # every row of every scores.json
    not_scored: list[dict[str, Any]] = field(default_factory=list)
    student_manifest: dict[str, Any] | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    cache_manifest: dict[str, Any] | None = None
    prompts_dir: Path | None = None
    prompts_manifest: dict[str, Any] | None = None  # the curated set's manifest (dante prompts build)
    cache_stats: dict[str, Any] | None = None
    entropies: list[float] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)

    def note(self, part: str, text: str) -> None:
        self.notes.setdefault(part, []).append(text)

    @property
    def primary_scores(self) -> list[dict[str, Any]]:
        return [r for r in self.scores if r.get("primary")]

    @property
    def decontaminated(self) -> set[str]:
        """Tasks the run's prompt set was checked against (empty without a curated set)."""
        dc = (self.prompts_manifest or {}).get("decontamination") or {}
        return set(dc.get("tasks", [])) | {k for k, v in (dc.get("checked") or {}).items() if v.get("kind") == "task"}


def _stage_dir(run_dir: Path, recipe: dict[str, Any], stage: str) -> Path:
    """A stage folder: the recipe's explicit setting when it exists on disk (as given, or inside
    the run folder when the run was moved), else ``dante.layout``'s default inside RUN_DIR."""
    explicit = layout.explicit_setting(recipe, stage)
    if explicit:
        for candidate in (Path(explicit), run_dir / explicit):
            if candidate.exists():
                return candidate
    return layout.stage_dir(run_dir, stage)


def load_recipe(run_dir: Path) -> dict[str, Any]:
    """The resolved recipe the stages saved (run folder first, then the stage folders), as plain data."""
    folders = [run_dir] + [layout.stage_dir(run_dir, stage) for stage in ("student", "eval", "cache")]
    for candidate in (folder / layout.RESOLVED_RECIPE for folder in folders):
        if candidate.is_file():
            try:
                data = yaml.safe_load(candidate.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError):
                continue
            if isinstance(data, dict):
                return data
    return {}


def read_json(path: Path, data: RunData, part: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        data.note(part, f"`{path}` could not be read ({exc}); left out")
        return None


def load_scores(data: RunData) -> None:
    files = sorted(data.eval_dir.glob(f"**/{layout.SCORES}")) if data.eval_dir and data.eval_dir.is_dir() else []
    if not files:
        data.note("scores", f"no evaluation yet: no `scores.json` under `{data.eval_dir}` (run `dante eval`)")
    for path in files:
        try:
            scores = read_scores(path)
        except DanteError as err:
            data.note("scores", f"{err.render()}; left out")
            continue
        data.scores += scores.get("scores", [])
        data.not_scored += [{**p, "model": scores.get("model", path.parent.name)} for p in scores.get("not_scored", [])]


def load_student(data: RunData) -> None:
    manifest = data.student_dir / layout.STUDENT_MANIFEST
    if manifest.is_file():
        data.student_manifest = read_json(manifest, data, "training")
    else:
        data.note("training", f"no training manifest (`{manifest}`): the student has not finished training")
    metrics = data.student_dir / layout.METRICS
    if not metrics.is_file():
        data.note("training", f"no training metrics (`{metrics}`)")
        return
    for lineno, line in enumerate(metrics.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            data.note("training", f"`{metrics}:{lineno}` is not JSON (a torn last line?); skipped")
            continue
        if isinstance(row, dict) and "step" in row:
            data.metrics.append(row)


def load_cache(data: RunData) -> None:
    manifest = data.cache_dir / layout.CACHE_MANIFEST
    if manifest.is_file():
        data.cache_manifest = read_json(manifest, data, "cache")
    if not data.cache_dir.is_dir() or not any(data.cache_dir.glob("shard-*.jsonl")):
        data.note("cache", f"no sealed cache shards in `{data.cache_dir}`")
        return
    folders = data.cache_dirs or [data.cache_dir]
    try:
        records = read_cache(folders)  # read once for the statistics and the entropy plot
        data.cache_stats = cache_stats(folders, records)
        data.entropies = [r.output_entropy for r in records if r.output_entropy is not None]
    except DanteError as err:
        data.note("cache", f"cache not readable: {err.render()}")
    if data.cache_stats and not data.entropies:
        data.note("cache", "no record has output_entropy (teacher returned no logprobs)")


def load_prompt_set(data: RunData) -> None:
    manifest = data.prompts_dir / layout.PROMPTS_MANIFEST if data.prompts_dir else None
    if manifest is not None and manifest.is_file():
        data.prompts_manifest = read_json(manifest, data, "prompts")


def _cache_folders(run_dir: Path, recipe: dict[str, Any]) -> list[Path]:
    """cache.dir of the run as folders: one, several, or globs (expanded; none matching: the pattern)."""
    setting = layout.explicit_setting(recipe, "cache")
    if not isinstance(setting, list) and not layout.is_pattern(setting):
        return [_stage_dir(run_dir, recipe, "cache")]
    try:
        return layout.expand_folders(setting)
    except DanteError:
        return [Path(setting[0] if isinstance(setting, list) else setting)]


def load_run(run_dir: str | Path) -> RunData:
    """Locate the stage folders of a run and read every file the report needs."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DanteError("run folder does not exist", file=run_dir, hint="give the recipe's output_dir")
    recipe = load_recipe(run_dir)
    folders = _cache_folders(run_dir, recipe)
    data = RunData(
        run_dir=run_dir,
        recipe=recipe,
        prompts_dir=_stage_dir(run_dir, recipe, "prompts"),
        cache_dir=folders[0],
        cache_dirs=folders,
        student_dir=_stage_dir(run_dir, recipe, "student"),
        eval_dir=_stage_dir(run_dir, recipe, "eval"),
        report_dir=layout.stage_dir(run_dir, "report", layout.explicit_setting(recipe, "report")),
    )
    if not recipe:
        data.note("run", f"no {layout.RESOLVED_RECIPE} found: stage folders assumed inside the run folder")
    load_scores(data)
    load_prompt_set(data)
    load_student(data)
    load_cache(data)
    return data
