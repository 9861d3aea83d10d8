"""The one interface every teacher engine implements (stage 1: prompts -> completions).

A teacher generates text plus, per generated token, the entropy of its next-token
distribution computed in the worker from the top-k logprobs (``dante.teacher.entropy``): only
scalars travel. What to ask the engine is a ``TeacherRequest`` built once from the config: the
main completion's ``Sampling`` and, for self-consistency, the samples'.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from dante.config import TeacherConfig
from dante.errors import DanteError
from dante.prompts import Prompt
from dante.teacher.entropy import output_entropy
from dante.tokens import TokenLogprobs


@dataclass
class Generation:
    """One completion of one prompt."""

    text: str
    completion_tokens: int | None
    finish_reason: str | None  # "stop" (end of sequence / stop string) or "length"
    token_entropies: list[float] | None = None  # nats per generated token; None without logprobs
    prompt_tokens: int | None = None
    token_logprobs: TokenLogprobs | None = None  # per-token bytes, logprob and top-K (store_logprobs > 0)
    # a thinking teacher (dante.teacher.reasoning): ``text`` is the answer alone
    reasoning: str | None = None  # its thinking, None when it did not think
    reasoning_tokens: int | None = None  # how many of the output's tokens (entropies, payload) are the thinking's
    reasoning_source: str | None = None  # where the thinking was found: a message field's name, or "inline"
    reasoning_closed: bool = True  # the thinking ended (False: cut, e.g. by max_new_tokens)
    payload_dropped: bool = False  # logprobs came, but over a thinking output they did not spell: left out

    @property
    def output_entropy(self) -> float | None:
        """Mean of ``token_entropies`` (``dante.teacher.entropy.output_entropy``): over every generated
        token, the thinking's included."""
        return output_entropy(self.token_entropies)

    @property
    def answer_entropy(self) -> float | None:
        """The same mean over the answer's tokens alone (None without reasoning or when the answer's
        tokens could not be told apart)."""
        if self.reasoning is None or self.reasoning_tokens is None or self.token_entropies is None:
            return None
        return output_entropy(self.token_entropies[self.reasoning_tokens :])


@dataclass
class Completion:
    """What the cache keeps of one prompt: the main (greedy) completion and k samples."""

    prompt: Prompt
    main: Generation
    samples: list[Generation] = field(default_factory=list)


@dataclass(frozen=True)
class Sampling:
    """One ``generate`` call's settings: n completions per prompt, each up to max_new_tokens.

    temperature 0 is greedy (n must then be 1, or the greedy text is repeated); ``seed`` is
    only sent with sampling; ``top_logprobs`` k > 0 asks for the per-token entropies;
    ``store_logprobs`` K > 0 for the per-token payload (``Generation.token_logprobs``).
    """

    max_new_tokens: int
    temperature: float
    top_p: float = 1.0
    top_logprobs: int = 0
    n: int = 1
    seed: int | None = None
    store_logprobs: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    @property
    def logprobs(self) -> int:
        """How many top logprobs per token to ask the engine for (entropy and payload)."""
        return max(self.top_logprobs, self.store_logprobs)


@dataclass(frozen=True)
class TeacherRequest:
    """What the cache asks of a teacher per prompt: the main completion and the k samples of
    self-consistency (None when consistency_samples is 0)."""

    main: Sampling
    consistency: Sampling | None = None

    @classmethod
    def from_config(cls, cfg: TeacherConfig) -> TeacherRequest:
        main = Sampling(
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            top_logprobs=cfg.top_logprobs,
            n=1,
            seed=cfg.seed if cfg.temperature > 0 else None,
            store_logprobs=cfg.store_logprobs,
        )
        consistency = None
        if cfg.consistency_samples:
            consistency = Sampling(
                max_new_tokens=cfg.consistency_max_new_tokens or cfg.max_new_tokens,
                temperature=cfg.consistency_temperature,
                top_p=cfg.top_p,
                top_logprobs=0,
                n=cfg.consistency_samples,
                seed=cfg.seed,
            )
        return cls(main, consistency)


def sampling_settings(cfg: TeacherConfig) -> dict[str, Any]:
    """The sampling parameters stored in every record (``sampling``) and the manifest; the
    consistency samples' settings as ``TeacherRequest`` resolves them (None without samples)."""
    consistency = TeacherRequest.from_config(cfg).consistency
    return {
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "max_new_tokens": cfg.max_new_tokens,
        "top_logprobs": cfg.top_logprobs,
        "store_logprobs": cfg.store_logprobs,
        "seed": cfg.seed,
        "consistency_samples": cfg.consistency_samples,
        "consistency_temperature": consistency.temperature if consistency else None,
        "consistency_max_new_tokens": consistency.max_new_tokens if consistency else None,
    }


class Teacher:
    """Base of the engines. Subclasses implement ``generate``; ``iter_completions`` (main
    completion + consistency samples per prompt, ``complete``) goes batch by batch, and engines
    may override it to stream results as they finish (the HTTP backend does)."""

    name: str = "teacher"

    def __init__(self, cfg: TeacherConfig) -> None:
        self.cfg = cfg
        self.request = TeacherRequest.from_config(cfg)

    def render(self, prompt: Prompt) -> str | list[dict[str, Any]]:
        """What is sent to the engine: a rendered string, or chat messages."""
        raise NotImplementedError

    def generate(self, prompts: Sequence[Prompt], sampling: Sampling) -> list[list[Generation]]:
        """``sampling.n`` completions for each prompt, in prompt order.

        ``sampling.top_logprobs`` k > 0 fills ``Generation.token_entropies`` with the top-k
        entropy of each generated token; 0 leaves them None.
        """
        raise NotImplementedError

    def complete(self, prompts: Sequence[Prompt]) -> list[Completion]:
        """The main completion and the consistency samples of each prompt (``self.request``)."""
        mains = self.generate(prompts, self.request.main)
        samples: list[list[Generation]] = [[] for _ in prompts]
        if self.request.consistency is not None:
            samples = self.generate(prompts, self.request.consistency)
        return [Completion(p, m[0], s) for p, m, s in zip(prompts, mains, samples, strict=True)]

    def iter_completions(self, prompts: Sequence[Prompt]) -> Iterator[Completion]:
        """Yield a Completion per prompt (any order), ``teacher.batch_size`` prompts at a time."""
        for start in range(0, len(prompts), self.cfg.batch_size):
            yield from self.complete(prompts[start : start + self.cfg.batch_size])

    # -- scoring a given text (on-policy distillation: the student writes, the teacher scores) --

    def score(
        self, prompts: Sequence[Prompt], completions: Sequence[str], k: int = 0, ended: Sequence[bool] | None = None
    ) -> list[TokenLogprobs | None]:
        """For each (prompt, completion text), the completion as the teacher tokenizes it after
        its own rendering of the prompt (chat template included): each token's bytes and
        log p_T, and with ``k`` > 0 the top-k alternatives. None for a text the teacher's
        tokenizer does not give back byte for byte (it cannot be scored exactly; the caller
        counts it). Engines that cannot score raise ``DanteError`` naming ``teacher.backend``.

        ``ended[i]``: the writer ended completion i (it did not hit a length cap), so the
        teacher's end of turn after it is scored too, as one more token with no bytes: log p_T of
        ``end_of_turn_id`` right after the text (and its top-k)."""
        raise DanteError(
            f"the {self.name} engine cannot score a given text",
            field="teacher.backend",
            hint="use teacher.backend hf or vllm, or an OpenAI-compatible server with echo and prompt logprobs "
            "(vLLM serve, teacher.openai.api=completions)",
        )

    def end_of_turn_id(self) -> int:
        """The token the teacher ends an answer with: its tokenizer's end of sequence, which chat
        models set to their end of turn (Qwen's ``<|im_end|>``, Llama 3's ``<|eot_id|>``)."""
        tokenizer = getattr(self, "tokenizer", None)
        eos = getattr(tokenizer, "eos_token_id", None)
        if eos is None:
            raise DanteError(
                f"the {self.name} teacher has no end-of-sequence token to score the end of a sample with",
                field="train.loss.policy_gradient.score_end",
                hint="set train.loss.policy_gradient.score_end=false, or a teacher whose tokenizer defines eos_token",
            )
        return int(eos)

    def end_targets(self, ended: Sequence[bool] | None, n: int) -> list[int | None]:
        """Per completion, the token to score after it (``end_of_turn_id`` where ``ended``), else None."""
        if ended is None or not any(ended):
            return [None] * n
        end_id = self.end_of_turn_id()
        return [end_id if e else None for e in ended]

    def check_scoring(self, k: int = 0, end: bool = False) -> None:
        """One probe before training starts: the engine scores a short text and gives a finite
        logprob ≤ 0 for each of its tokens, which join to the text (with ``end``, and for the
        end of turn after it); otherwise a clear error, so a score is never silently zero or
        missing later."""
        text = " The answer is 42."
        probe = Prompt(id="dante-probe", prompt="Say the answer.", source="probe")
        try:
            got = self.score([probe], [text], k, ended=[end] if end else None)[0]
        except DanteError as exc:
            if (
                exc.field == "train.loss.policy_gradient.score_end"
            ):  # it scores texts, not their end: that setting is the fix
                raise
            raise DanteError(
                f"the teacher cannot score the student's samples: {exc.message}"
                + (f" ({exc.hint})" if exc.hint else ""),
                field="teacher.backend",
                hint="on-policy training needs per-token logprobs of a given text: teacher.backend hf or vllm, or a "
                "server with echo + logprobs on /v1/completions (vLLM serve; llama.cpp's server and transformers "
                "serve cannot)",
            ) from None
        bad = (
            "its tokens do not join to the text"
            if got is None or b"".join(got.tokens) != text.encode("utf-8")
            else "it returned no logprob, or one that is not a finite number <= 0"
            if not got.logprobs or not all(math.isfinite(x) and x <= 1e-3 for x in got.logprobs)
            else f"it returned fewer than the {k} alternatives asked for"
            if k > 0 and any(len(row) < min(k, 1) for row in got.top)
            else "it returned no score for the end of turn"
            if end and (len(got) < 2 or got.tokens[-1] != b"")
            else None
        )
        if bad is not None:
            raise DanteError(
                f"the teacher cannot score the student's samples: on a probe, {bad}",
                field="teacher.backend",
                hint="on-policy training needs per-token logprobs of a given text: teacher.backend hf or vllm, or a "
                "server with echo + logprobs on /v1/completions (vLLM serve)",
            )

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
