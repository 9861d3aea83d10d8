"""vLLM offline teacher: large teachers on GPUs (tensor/pipeline parallel), the card's setup.

vLLM is imported only when this backend is used (``pip install dante-distill[vllm]``).
``generation_from_vllm`` maps vLLM's output objects to Generations (tested without vLLM).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from dante.config import TeacherConfig
from dante.errors import DanteError
from dante.models import resolve_model
from dante.prompts import Prompt, render_prompt
from dante.teacher import reasoning
from dante.teacher.base import Generation, Sampling, Teacher
from dante.teacher.entropy import topk_entropy
from dante.tokens import TokenBytes, TokenLogprobs, from_ids, marker_ids


def _topk_values(position: dict[Any, Any], k: int) -> list[float]:
    """The k highest logprobs of one position. vLLM returns the top k plus the sampled token
    when it is outside them (k + 1 entries); ``rank`` is 1-based when present."""
    items = [(getattr(lp, "rank", None), float(getattr(lp, "logprob", lp))) for lp in position.values()]
    if all(rank is not None for rank, _ in items):
        values = [v for rank, v in sorted(items, key=lambda x: x[0]) if rank <= k]
    else:
        values = sorted((v for _, v in items), reverse=True)
    return values[:k]


def _payload(completion: Any, token_ids: list[int], store: int, token_bytes: TokenBytes) -> TokenLogprobs:
    """The stored per-token payload: the generated token's logprob and the top-K by rank."""
    chosen, top_ids, top_lps = [], [], []
    for tok, pos in zip(token_ids, completion.logprobs, strict=False):
        entry = pos.get(tok)
        chosen.append(float(getattr(entry, "logprob", entry)) if entry is not None else float("-inf"))
        ranked = sorted(
            ((getattr(lp, "rank", None) or 10**9, int(i), float(getattr(lp, "logprob", lp))) for i, lp in pos.items()),
            key=lambda x: (x[0], -x[2]),
        )[:store]
        top_ids.append([i for _, i, _ in ranked])
        top_lps.append([v for _, _, v in ranked])
    return from_ids(token_bytes, token_ids[: len(chosen)], chosen, top_ids, top_lps)


def generation_from_vllm(
    completion: Any,
    k: int,
    prompt_tokens: int | None = None,
    store: int = 0,
    token_bytes: TokenBytes | None = None,
) -> Generation:
    """vLLM ``CompletionOutput`` -> Generation (entropies in the worker; scalars only).

    ``completion.logprobs`` is a list (one per generated token) of dicts token_id ->
    ``Logprob(logprob, rank, decoded_token)``, or None when logprobs were not requested.
    With ``store`` K > 0 the payload's token bytes come from ``token_bytes`` (the engine's
    tokenizer), not from ``decoded_token``, which spells a partial UTF-8 token as U+FFFD.
    """
    token_ids = list(getattr(completion, "token_ids", None) or [])
    entropies = None
    payload = None
    if k > 0 and completion.logprobs is not None:
        entropies = [topk_entropy(_topk_values(pos, k)) for pos in completion.logprobs]
    if store > 0 and completion.logprobs is not None and token_bytes is not None:
        payload = _payload(completion, token_ids, store, token_bytes)
    finish = getattr(completion, "finish_reason", None)
    return Generation(
        text=completion.text,
        completion_tokens=len(token_ids) if token_ids else (len(entropies) if entropies is not None else None),
        finish_reason=str(finish) if finish is not None else None,
        token_entropies=entropies,
        prompt_tokens=prompt_tokens,
        token_logprobs=payload,
    )


def generations_from_request_outputs(
    outputs: Sequence[Any],
    k: int,
    store: int = 0,
    token_bytes: TokenBytes | None = None,
    thinking: str = "auto",
    opened: Sequence[bool] | None = None,
    decode: Any = None,
) -> list[list[Generation]]:
    """A list of vLLM ``RequestOutput`` (in prompt order) -> n Generations per prompt (a thinking
    model's inline reasoning kept apart, ``dante.teacher.reasoning.separate``; ``opened[i]``: prompt
    i's rendering opened the thinking block). ``decode``: the text from the token ids, where vLLM's
    own text would have skipped thinking markers that the tokenizer marks special."""
    result = []
    for i, ro in enumerate(outputs):
        n_prompt = len(ro.prompt_token_ids) if getattr(ro, "prompt_token_ids", None) is not None else None
        gens = [generation_from_vllm(c, k, n_prompt, store, token_bytes) for c in ro.outputs]
        if decode is not None:
            gens = [replace(g, text=decode(list(c.token_ids))) for g, c in zip(gens, ro.outputs, strict=True)]
        was_opened = bool(opened[i]) if opened is not None else False
        result.append([reasoning.separate(g, thinking, was_opened) for g in gens])
    return result


class VLLMTeacher(Teacher):
    """vLLM's offline ``LLM`` engine; prompts are rendered with its tokenizer's chat template."""

    def __init__(self, cfg: TeacherConfig) -> None:
        super().__init__(cfg)
        try:
            from vllm import LLM
        except ImportError:
            raise DanteError(
                "the vllm backend needs vLLM",
                field="teacher.backend",
                hint="pip install 'dante-distill[vllm]' on a GPU machine",
            ) from None

        resolved = resolve_model(cfg.model)
        self.name = resolved.name
        kwargs: dict[str, Any] = {
            "model": resolved.path,
            "tensor_parallel_size": cfg.vllm.tensor_parallel_size,
            "pipeline_parallel_size": cfg.vllm.pipeline_parallel_size,
            "dtype": cfg.dtype,
            "gpu_memory_utilization": cfg.vllm.gpu_memory_utilization,
            "trust_remote_code": cfg.trust_remote_code,
            "seed": cfg.seed,
            "max_logprobs": max(20, cfg.top_logprobs, cfg.store_logprobs),
        }
        if resolved.gguf_file:
            kwargs["model"] = f"{resolved.path}/{resolved.gguf_file}"
        optional = {
            "revision": cfg.revision,
            "max_model_len": cfg.vllm.max_model_len,
            "quantization": cfg.vllm.quantization,
        }
        kwargs.update({k: v for k, v in optional.items() if v is not None})
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        markers = marker_ids(self.tokenizer, (reasoning.OPEN, reasoning.CLOSE))
        self.token_bytes = TokenBytes(self.tokenizer, keep=markers) if cfg.store_logprobs else None
        special = set(getattr(self.tokenizer, "all_special_ids", []) or [])
        skipped = special - markers
        # vLLM's text skips special tokens: where the markers are special, the text is decoded here
        self.decode = (
            (lambda ids: self.tokenizer.decode([i for i in ids if i not in skipped], skip_special_tokens=False))
            if markers & special
            else None
        )

    def device_info(self) -> dict[str, Any]:
        return {
            "device_type": "cuda",
            "device_count": self.cfg.vllm.tensor_parallel_size * self.cfg.vllm.pipeline_parallel_size,
        }

    def render(self, prompt: Prompt) -> str:
        return render_prompt(prompt, self.tokenizer, self.cfg.use_chat_template, self.cfg.thinking)

    def generate(self, prompts: Sequence[Prompt], sampling: Sampling) -> list[list[Generation]]:
        from vllm import SamplingParams

        params = SamplingParams(
            n=sampling.n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            logprobs=sampling.logprobs or None,
            seed=None if sampling.greedy else sampling.seed,
        )
        texts = [self.render(p) for p in prompts]
        # The chat template already holds BOS; do not let vLLM add a second one.
        uses_template = bool(self.cfg.use_chat_template and getattr(self.tokenizer, "chat_template", None))
        inputs: list[Any] = (
            [{"prompt_token_ids": self.tokenizer.encode(t, add_special_tokens=False)} for t in texts]
            if uses_template
            else texts
        )
        outputs = self.llm.generate(inputs, params, use_tqdm=False)
        opened = [self.cfg.thinking != "off" and reasoning.prompt_opens_thinking(t) for t in texts]
        return generations_from_request_outputs(
            outputs,
            sampling.top_logprobs,
            sampling.store_logprobs,
            self.token_bytes,
            self.cfg.thinking,
            opened,
            self.decode,
        )

    def score(
        self, prompts: Sequence[Prompt], completions: Sequence[str], k: int = 0, ended: Sequence[bool] | None = None
    ) -> list[TokenLogprobs | None]:
        """``SamplingParams(prompt_logprobs=k, max_tokens=1)`` on the prompt's ids followed by the
        completion's (and the end of turn for an ended one): vLLM returns the logprob of every
        prompt position (and its top-k)."""
        from vllm import SamplingParams

        token_bytes = self.token_bytes or TokenBytes(self.tokenizer)
        uses_template = bool(self.cfg.use_chat_template and getattr(self.tokenizer, "chat_template", None))
        rows, inputs = [], []
        for prompt, text, end in zip(prompts, completions, self.end_targets(ended, len(completions)), strict=True):
            prompt_ids = self.tokenizer.encode(self.render(prompt), add_special_tokens=not uses_template)
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            ok = b"".join(token_bytes(i) for i in ids) == text.encode("utf-8")
            ids = ids if end is None else [*ids, end]
            rows.append((len(prompt_ids), ids) if ok else None)
            if ok and ids:
                inputs.append({"prompt_token_ids": prompt_ids + ids})
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=max(k, 0))
        outputs = iter(self.llm.generate(inputs, params, use_tqdm=False) if inputs else [])
        out: list[TokenLogprobs | None] = []
        for row in rows:
            if row is None:
                out.append(None)
            elif not row[1]:
                out.append(TokenLogprobs([], [], []))
            else:
                out.append(score_from_prompt_logprobs(next(outputs).prompt_logprobs, row[0], row[1], k, token_bytes))
        return out

    def close(self) -> None:
        self.llm = None


def score_from_prompt_logprobs(
    prompt_logprobs: Sequence[Any], n_prompt: int, ids: Sequence[int], k: int, token_bytes: TokenBytes
) -> TokenLogprobs:
    """The completion part of a vLLM ``RequestOutput.prompt_logprobs`` (per position a dict token
    id -> Logprob holding the position's own token and its top-k; None at position 0): each
    completion token's logprob and the k most likely alternatives."""
    chosen, top_ids, top_lps = [], [], []
    for j, token in enumerate(ids):
        entry = prompt_logprobs[n_prompt + j] or {}
        chosen.append(entry[token].logprob if token in entry else float("-inf"))
        best = sorted(entry.items(), key=lambda kv: -kv[1].logprob)[:k] if k > 0 else []
        top_ids.append([i for i, _ in best])
        top_lps.append([lp.logprob for _, lp in best])
    return from_ids(token_bytes, ids, chosen, top_ids, top_lps)
