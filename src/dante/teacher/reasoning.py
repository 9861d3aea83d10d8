"""A thinking teacher's reasoning, kept apart from its answer (stage 1). Servers with a reasoning
parser (vLLM, SGLang) and hosted APIs (DeepSeek) return the thinking in its own message field
(``reasoning_content``, or ``reasoning`` in newer servers) and the answer in ``content``; without a
parser the thinking comes inline, between the model's own markers (``<think>`` … ``</think>``).
Either way the response's per-token logprobs cover the thinking tokens too (SGLang issue 25055), so
the answer's tokens are found as the suffix of them that spells the answer.

Nothing is invented: a response with neither a field nor markers has no reasoning.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from dante.teacher.base import Generation

FIELDS = ("reasoning_content", "reasoning")  # the message fields servers use, in the order tried
OPEN, CLOSE = "<think>", "</think>"  # DeepSeek-R1, Qwen3, QwQ, GLM, Kimi's open models

# A record's reasoning_status: whether the thinking ended and an answer followed it.
COMPLETE, CUT, NO_ANSWER = "complete", "cut", "no_answer"


@dataclass(frozen=True)
class Split:
    """A completion cut into the teacher's reasoning and its answer."""

    reasoning: str | None  # None: the teacher did not think (or did not say so)
    answer: str
    closed: bool = True  # the thinking ended (an unterminated block is cut: by max_new_tokens, say)
    source: str | None = None  # where the reasoning came from: a field's name, or "inline"


def from_message(message: dict, content: str) -> Split:
    """The reasoning of a chat message: its reasoning field when a server sent one (the answer is
    ``content``), else whatever ``content`` holds between thinking markers."""
    found = from_field(message, content)
    return found if found.reasoning is not None else split_inline(content)


def from_field(message: dict, content: str) -> Split:
    """The reasoning field of a chat message only (with thinking off a marker in the text is text)."""
    for name in FIELDS:
        value = message.get(name)
        if isinstance(value, str) and value:
            return Split(value, content, closed=True, source=name)
    return Split(None, content)


def split_inline(text: str, close: str = CLOSE) -> Split:
    """``<think>R</think>A`` -> (R, A); a template that opens the block in the prompt (Qwen3, R1's
    later templates) leaves only ``R</think>A`` in the output; ``<think>R`` with no end is a cut
    thought (answer ""). Whitespace between the thinking and the answer goes with neither.
    ``close``: another end-of-thinking marker (an evaluation's ``eval.think_end_token``)."""
    start = text.find(OPEN)
    end = text.find(close)
    if end >= 0 and (start < 0 or start < end) and text[: max(start, 0)].strip() == "":
        reasoning = text[start + len(OPEN) if start >= 0 else 0 : end]
        return Split(reasoning.strip("\n"), text[end + len(close) :].lstrip(), closed=True, source="inline")
    if start >= 0 and end < 0 and text[:start].strip() == "":
        return Split(text[start + len(OPEN) :].strip("\n"), "", closed=False, source="inline")
    return Split(None, text)


def answer_start(tokens: list[bytes], answer: str) -> int | None:
    """Index of the first of ``tokens`` (the whole output's, thinking first) that belongs to the
    answer: the output's bytes must end with the answer's, and the answer's first token is the last
    one that starts in the whitespace before the answer or where it starts (``tokens[i:]`` spell the
    answer, or a token with some of that whitespace and then the answer). None when no token does
    (the logprobs do not describe this text)."""
    want = answer.encode("utf-8")
    if not want:
        return len(tokens)
    full = b"".join(tokens)
    if not full.endswith(want):
        return None
    at = len(full) - len(want)
    gap = at
    while gap > 0 and full[gap - 1 : gap] in (b" ", b"\t", b"\r", b"\n"):
        gap -= 1
    start, best = 0, None
    for i, tok in enumerate(tokens):
        if gap <= start <= at:
            best = i  # the last token starting in the gap: the answer's first
        if start > at:
            break
        start += len(tok)
    return best


def status(split: Split, finish_reason: str | None) -> str | None:
    """``complete``, ``cut`` (the thinking hit the limit: unterminated, or stopped at the length cap
    with no answer) or ``no_answer`` (it ended and nothing followed); None without reasoning."""
    if split.reasoning is None:
        return None
    if not split.closed or (finish_reason == "length" and not split.answer.strip()):
        return CUT
    if not split.answer.strip():
        return NO_ANSWER
    return COMPLETE


def separate(gen: Generation, thinking: str = "auto") -> Generation:
    """An engine's raw output (hf, vllm: the thinking inline in the text) as answer + reasoning;
    the payload's tokens, when stored, locate the answer's first token (a payload that does not
    spell the text is dropped rather than kept wrong). Unchanged without markers or with
    thinking off."""
    if thinking == "off" or gen.reasoning is not None:
        return gen
    split = split_inline(gen.text)
    if split.reasoning is None:
        return gen
    payload, first = gen.token_logprobs, None
    if payload is not None:
        first = answer_start(list(payload.tokens), split.answer)
    dropped = payload is not None and first is None
    return replace(
        gen,
        text=split.answer,
        token_logprobs=None if dropped else payload,
        payload_dropped=dropped,
        reasoning=split.reasoning,
        reasoning_tokens=first,
        reasoning_source=split.source,
        reasoning_closed=split.closed,
    )


class ThinkingBudget:
    """A transformers logits processor that ends the thinking after ``budget`` output tokens: a row
    that has not written the end-of-thinking marker by then is made to write it (its token ids, one
    a step, every other logit −inf), after which it goes on freely to its answer."""

    def __init__(self, close_ids: list[int], budget: int, prompt_len: int) -> None:
        self.close, self.budget, self.prompt_len = list(close_ids), budget, prompt_len

    def __call__(self, input_ids, scores):
        import torch

        out = input_ids[:, self.prompt_len :].tolist()
        for row, ids in enumerate(out):
            if _contains(ids, self.close) or len(ids) < self.budget:
                continue
            forced = _forcing(ids, self.close, self.budget)
            if forced is not None:
                mask = torch.full_like(scores[row], float("-inf"))
                mask[forced] = 0.0
                scores[row] = scores[row] + mask
        return scores


def _contains(ids: list[int], seq: list[int]) -> bool:
    n = len(seq)
    return any(ids[i : i + n] == seq for i in range(len(ids) - n + 1))


def _forcing(ids: list[int], close: list[int], budget: int) -> int | None:
    """The next marker token a row past its budget must write (the marker is being written from the
    budget on), or None once it is complete."""
    written = ids[budget:]
    if len(written) >= len(close):
        return None
    return close[len(written)]
