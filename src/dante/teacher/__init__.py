"""Teacher engines (stage 1): hf (local transformers), vllm (offline engine), openai (HTTP).

All implement ``Teacher`` from ``dante.teacher.base``; ``make_teacher(cfg)`` picks one.
"""

from __future__ import annotations

from dante.config import TeacherConfig
from dante.teacher.base import Completion, Generation, Sampling, Teacher, TeacherRequest

__all__ = ["Completion", "Generation", "Sampling", "Teacher", "TeacherRequest", "make_teacher"]


def make_teacher(cfg: TeacherConfig) -> Teacher:
    """The engine named by ``cfg.backend``; optional engines are imported only here."""
    if cfg.backend == "hf":
        from dante.teacher.hf import HFTeacher

        return HFTeacher(cfg)
    if cfg.backend == "vllm":
        from dante.teacher.vllm import VLLMTeacher

        return VLLMTeacher(cfg)
    if cfg.backend == "openai":
        from dante.teacher.openai import OpenAITeacher

        return OpenAITeacher(cfg)
    raise ValueError(f"unknown teacher backend {cfg.backend!r}")
