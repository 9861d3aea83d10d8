"""The one interface every teacher engine implements (stage 1: prompts -> completions).

A teacher generates text plus, per generated token, the entropy of its next-token
distribution computed in the worker from the top-k logprobs (DESIGN.md): only scalars travel.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from dante.config import TeacherConfig
from dante.prompts import Prompt


@dataclass
class Generation:
    """One completion of one prompt."""

    text: str
    completion_tokens: int | None
    finish_reason: str | None  # "stop" (end of sequence / stop string) or "length"
    token_entropies: list[float] | None = None  # nats per generated token; None without logprobs
    prompt_tokens: int | None = None

    @property
    def output_entropy(self) -> float | None:
        """Mean of ``token_entropies`` (``dante.cache.metadata.output_entropy``)."""
        from dante.cache.metadata import output_entropy

        return output_entropy(self.token_entropies)


@dataclass
class Completion:
    """What the cache keeps of one prompt: the main (greedy) completion and k samples."""

    prompt: Prompt
    main: Generation
    samples: list[Generation] = field(default_factory=list)


def sampling_settings(cfg: TeacherConfig) -> dict[str, Any]:
    """The sampling parameters stored in every record (``sampling``) and the manifest."""
    return {
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "max_new_tokens": cfg.max_new_tokens,
        "top_logprobs": cfg.top_logprobs,
        "seed": cfg.seed,
        "consistency_samples": cfg.consistency_samples,
        "consistency_temperature": cfg.consistency_temperature if cfg.consistency_samples else None,
        "consistency_max_new_tokens": (cfg.consistency_max_new_tokens or cfg.max_new_tokens) if cfg.consistency_samples else None,
    }


class Teacher:
    """Base of the engines. Subclasses implement ``generate``; ``iter_completions`` (main
    completion + consistency samples per prompt) has a batched default they may override
    to stream results as they finish (the HTTP backend does)."""

    name: str = "teacher"

    def __init__(self, cfg: TeacherConfig) -> None:
        self.cfg = cfg

    def render(self, prompt: Prompt) -> str | list[dict[str, Any]]:
        """What is sent to the engine: a rendered string, or chat messages."""
        raise NotImplementedError

    def generate(
        self,
        prompts: Sequence[Prompt],
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float = 1.0,
        top_logprobs: int = 0,
        n: int = 1,
        seed: int | None = None,
    ) -> list[list[Generation]]:
        """n completions for each prompt (temperature 0: greedy, n must be 1).

        ``top_logprobs`` k > 0 fills ``Generation.token_entropies`` with ``topk_entropy`` of
        each generated token's top-k logprobs; 0 leaves them None.
        """
        raise NotImplementedError

    def iter_completions(self, prompts: Sequence[Prompt]) -> Iterator[Completion]:
        """Yield a Completion per prompt (any order) using the configured settings."""
        cfg = self.cfg
        for start in range(0, len(prompts), cfg.batch_size):
            chunk = list(prompts[start : start + cfg.batch_size])
            yield from self._complete_chunk(chunk)

    def _complete_chunk(self, chunk: list[Prompt]) -> list[Completion]:
        cfg = self.cfg
        mains = self.generate(
            chunk, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
            top_logprobs=cfg.top_logprobs, n=1, seed=cfg.seed,
        )
        samples: list[list[Generation]] = [[] for _ in chunk]
        if cfg.consistency_samples:
            samples = self.generate(
                chunk, max_new_tokens=cfg.consistency_max_new_tokens or cfg.max_new_tokens,
                temperature=cfg.consistency_temperature, top_p=cfg.top_p, top_logprobs=0,
                n=cfg.consistency_samples, seed=cfg.seed,
            )
        return [Completion(p, m[0], s) for p, m, s in zip(chunk, mains, samples, strict=True)]

    def device_info(self) -> dict[str, Any]:
        """Where generation runs, for the compute table: device_type and device_count
        (None when unknown, e.g. a remote server)."""
        return {"device_type": "remote", "device_count": None}

    def close(self) -> None:
        """Free the engine (GPU memory, HTTP connections)."""

    def __enter__(self) -> Teacher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
