"""The recipe: its schema (``dante.config.schema``) and how it is read and written
(``dante.config.loader``). Import either from here: ``from dante.config import Recipe, load_recipe``.
"""

from dante.config.loader import (
    SECRET_FIELDS,
    apply_overrides,
    load_recipe,
    parse_override,
    recipe_hash,
    redact_url,
    resolved_dict,
    save_resolved,
    stable_hash,
)
from dante.config.schema import (
    CacheConfig,
    DecontaminateConfig,
    DedupConfig,
    EvalConfig,
    FilterConfig,
    LossConfig,
    PromptsConfig,
    Recipe,
    ReportConfig,
    Section,
    SourceConfig,
    SourceFields,
    StudentConfig,
    TeacherConfig,
    TrainConfig,
)

__all__ = [
    "SECRET_FIELDS",
    "CacheConfig",
    "DecontaminateConfig",
    "DedupConfig",
    "EvalConfig",
    "FilterConfig",
    "LossConfig",
    "PromptsConfig",
    "Recipe",
    "ReportConfig",
    "Section",
    "SourceConfig",
    "SourceFields",
    "StudentConfig",
    "TeacherConfig",
    "TrainConfig",
    "apply_overrides",
    "load_recipe",
    "parse_override",
    "recipe_hash",
    "redact_url",
    "resolved_dict",
    "save_resolved",
    "stable_hash",
]
