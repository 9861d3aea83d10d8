"""Teacher engines (stage 1): hf (local transformers), vllm (offline engine), openai (HTTP),
picked by ``teacher.backend`` (``make_teacher``); and where their requests go
(``teacher.dispatch``): this process, a pool of Ray replicas (``ray_pool``) or a provider's
Batch API (``batch``). All implement or drive ``Teacher`` from ``dante.teacher.base``.
"""

from __future__ import annotations

from dante.config import TeacherConfig
from dante.teacher.base import Completion, Generation, Sampling, Teacher, TeacherRequest

__all__ = [
    "Completion",
    "Generation",
    "Sampling",
    "Teacher",
    "TeacherRequest",
    "engine_devices",
    "engine_gpus",
    "make_teacher",
]


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
    if cfg.backend == "llamacpp":
        from dante.teacher.llamacpp import LlamaCppTeacher

        return LlamaCppTeacher(cfg)
    raise ValueError(f"unknown teacher backend {cfg.backend!r}")


def engine_devices(cfg: TeacherConfig) -> tuple[int | None, str]:
    """(devices, their kind) one engine of this teacher runs on: vLLM's tensor × pipeline parallel
    GPUs, one local device for hf, none known for an HTTP server. The one place this is worked
    out (a Ray replica's GPUs, the report's compute table)."""
    if cfg.backend == "vllm":
        return cfg.vllm.tensor_parallel_size * cfg.vllm.pipeline_parallel_size, "GPU (vLLM)"
    if cfg.backend == "hf":
        return 1, cfg.hf.device or "auto"
    if cfg.backend == "llamacpp":
        return 1, "cpu (llama.cpp)"
    return None, "remote server"


def engine_gpus(cfg: TeacherConfig, cluster_gpus: float = 0.0) -> float:
    """GPUs one engine of this teacher holds: vLLM's tensor × pipeline parallel size; one for hf
    where the cluster has GPUs and ``teacher.hf.device`` is not cpu; none for an HTTP teacher."""
    devices, _ = engine_devices(cfg)
    if cfg.backend == "vllm" or (cfg.backend == "hf" and cfg.hf.device != "cpu" and cluster_gpus > 0):
        return float(devices or 0)
    return 0.0
