"""The recipe's schema: one typed config tree (teacher, prompts, cache, student, train, eval,
report), each stage's sections in the module of its name (``base``, ``teacher``, ``prompts``,
``cache``, ``train``, ``eval``); this module holds the whole ``Recipe`` and the renamed keys.
Every field has a default and a description; ``dante.config.loader`` reads YAML into it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from dante import layout
from dante.config.base import Section, _notice, move_keys
from dante.config.cache import CacheConfig
from dante.config.eval import EvalConfig, ReportConfig
from dante.config.prompts import PromptsConfig
from dante.config.teacher import BACKEND_KEYS, TeacherConfig
from dante.config.train import StudentConfig, TrainConfig
from dante.errors import ConfigError

__all__ = ["BACKEND_KEYS", "Recipe", "rename_keys"]


# Recipe keys renamed since recipes were first written: old path -> new path. A recipe or an
# override that uses an old name still loads, with a one-line notice (``Recipe._renamed_keys``);
# each section moves its own old keys the same way (``config.base.move_keys``).
RENAMED_KEYS = {
    "cache.engine": "teacher.dispatch",
    "cache.ray": "teacher.ray",
    "cache.batch": "teacher.batch_api",
}


def rename_keys(data: dict[str, Any], notice=_notice) -> dict[str, Any]:
    """``data`` with every old key of ``RENAMED_KEYS`` moved to its new place (an error when both
    are set); ``notice`` gets one line per key moved."""
    return move_keys(data, RENAMED_KEYS, notice=notice)


class Recipe(Section):
    """A whole run: every stage reads this one tree."""

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data: Any) -> Any:
        return rename_keys(data)

    name: str = Field(
        "dante-run", description="Run name: the report's title, the trackers' project, the model card's name."
    )
    output_dir: Path = Field(Path("runs/dante-run"), description="Run folder; stage folders default inside it.")
    teacher: TeacherConfig = Field(
        default_factory=TeacherConfig, description="Who writes the completions, and how (dante.teacher)."
    )
    prompts: PromptsConfig = Field(
        default_factory=PromptsConfig, description="Where the prompts come from (dante.prompts)."
    )
    cache: CacheConfig = Field(default_factory=CacheConfig, description="The teacher cache on disk (dante.cache).")
    student: StudentConfig = Field(default_factory=StudentConfig, description="The model being distilled into.")
    train: TrainConfig = Field(
        default_factory=TrainConfig, description="Optimisation, data and the objective (dante.train)."
    )
    eval: EvalConfig = Field(default_factory=EvalConfig, description="lm-evaluation-harness runs (dante.eval).")
    report: ReportConfig = Field(default_factory=ReportConfig, description="The run report (dante.report).")
    source_file: str | None = Field(None, exclude=True, description="Where the recipe was loaded from (not saved).")

    # Stage folders: explicit setting, else inside output_dir (dante.layout).
    @property
    def prompts_dir(self) -> Path:
        return layout.stage_dir(self.output_dir, "prompts", self.prompts.dir)

    @property
    def cache_dir(self) -> Path:
        """The one cache folder (``dante cache`` writes it); an error when cache.dir names several."""
        paths = self.cache.dir if isinstance(self.cache.dir, list) else [self.cache.dir]
        if len(paths) > 1 or layout.is_pattern(paths[0]):
            raise ConfigError(
                "cache.dir names several folders; this step writes or reads one",
                field="cache.dir",
                hint="give one folder here (several folders are for train, stats, validate and export)",
            )
        return layout.stage_dir(self.output_dir, "cache", paths[0])

    @property
    def cache_dirs(self) -> list[Path]:
        """The cache folders to read (training, stats, export): cache.dir's folders and globs expanded."""
        if not isinstance(self.cache.dir, list) and not layout.is_pattern(self.cache.dir):
            return [self.cache_dir]
        return layout.expand_folders(self.cache.dir)

    @property
    def student_dir(self) -> Path:
        return layout.stage_dir(self.output_dir, "student", self.train.output_dir)

    @property
    def eval_dir(self) -> Path:
        return layout.stage_dir(self.output_dir, "eval", self.eval.output_dir)

    @property
    def report_dir(self) -> Path:
        return layout.stage_dir(self.output_dir, "report", self.report.output_dir)
