"""The recipe: its schema (``dante.config.schema``, each stage's sections in ``teacher``,
``prompts``, ``cache``, ``train``, ``eval``) and how it is read and written (``dante.config.loader``).
Import either from here: ``from dante.config import Recipe, load_recipe``.
"""

from dante.config.base import Section
from dante.config.cache import CacheConfig
from dante.config.eval import EvalConfig, EvalVLLMConfig, ReportConfig
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
from dante.config.prompts import DecontaminateConfig, DedupConfig, PromptsConfig, SourceConfig, SourceFields
from dante.config.schema import BACKEND_KEYS, Recipe
from dante.config.teacher import (
    BatchConfig,
    HfTeacherConfig,
    OpenAITeacherConfig,
    RayConfig,
    TeacherConfig,
    VllmTeacherConfig,
)
from dante.config.train import (
    ChunkKDSettings,
    FilterConfig,
    LossConfig,
    OnPolicyConfig,
    PacingConfig,
    PeftConfig,
    StudentConfig,
    TokenKDSettings,
    TrainConfig,
)

__all__ = [
    "BACKEND_KEYS",
    "SECRET_FIELDS",
    "BatchConfig",
    "CacheConfig",
    "DecontaminateConfig",
    "DedupConfig",
    "EvalConfig",
    "EvalVLLMConfig",
    "FilterConfig",
    "HfTeacherConfig",
    "ChunkKDSettings",
    "LossConfig",
    "TokenKDSettings",
    "OnPolicyConfig",
    "PacingConfig",
    "OpenAITeacherConfig",
    "PromptsConfig",
    "RayConfig",
    "Recipe",
    "ReportConfig",
    "Section",
    "SourceConfig",
    "SourceFields",
    "PeftConfig",
    "StudentConfig",
    "TeacherConfig",
    "TrainConfig",
    "VllmTeacherConfig",
    "apply_overrides",
    "load_recipe",
    "parse_override",
    "recipe_hash",
    "redact_url",
    "resolved_dict",
    "save_resolved",
    "stable_hash",
]
