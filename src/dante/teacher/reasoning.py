"""A thinking teacher's reasoning, kept apart from its answer (stage 1). Servers with a reasoning
parser (vLLM, SGLang, llama.cpp) and hosted APIs (DeepSeek) return the thinking in its own message
field (``reasoning_content``, or ``reasoning`` in newer vLLM) and the answer in ``content``; without
a parser the thinking comes inline, between the model's own markers (``<think>`` … ``</think>``).
Either way the response's per-token logprobs cover the thinking tokens too (SGLang issue 25055), so
the answer's tokens are found as the suffix of them that spells the answer.

The one rule, the same on every engine and checked by ``dante cache validate`` (``payload_problem``):
an output is ``[ws] [<think>] ws R ws </think> ws A`` (``ws``: spaces, tabs, newlines, possibly
none). ``teacher_reasoning`` is R, ``teacher_text`` is A: the whitespace around the markers goes
with neither field, A keeps its own trailing whitespace. A server's fields are read by the same
rule (vLLM sends ``content`` = ``"\n\nA"``, llama.cpp ``"A"``: both store A), so the payload's
tokens always spell the stored fields: the first ``reasoning_tokens`` of them are the thinking
(markers included), the rest the whitespace before the answer and the answer.

Nothing is invented: a response with neither a field nor markers has no reasoning, unless the
teacher's own prompt opened the thinking block (``prompt_opens_thinking``: R1-Distill, QwQ and
Qwen3-Thinking templates end the generation prompt with ``<think>``), where an output with no
``</think>`` is a thought cut by the length limit, never an answer.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from dante.teacher.base import Generation

FIELDS = ("reasoning_content", "reasoning")  # the message fields servers use, in the order tried
OPEN, CLOSE = "<think>", "</think>"  # DeepSeek-R1, Qwen3, QwQ, GLM, Kimi's open models
WHITESPACE = " \t\r\n"  # what the rule trims around the markers (never any other character)

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
    """The reasoning field of a chat message only (with thinking off a marker in the text is text),
    read by the module's rule: both fields trimmed of the whitespace around the markers."""
    for name in FIELDS:
        value = message.get(name)
        if isinstance(value, str) and value:
            return Split(value.strip(WHITESPACE), content.lstrip(WHITESPACE), closed=True, source=name)
    return Split(None, content)


def prompt_opens_thinking(rendered: str | None) -> bool:
    """Whether a rendered prompt leaves a thinking block open for the model to write into: its
    generation prompt ends with ``<think>`` (DeepSeek-R1-Distill, QwQ, Qwen3-Thinking). A prompt
    that holds a closed empty block (Qwen3 with thinking off: ``<think>\n\n</think>\n\n``) does
    not."""
    return isinstance(rendered, str) and rendered.rstrip(WHITESPACE).endswith(OPEN)


def split_inline(text: str, close: str = CLOSE, opened: bool = False) -> Split:
    """``<think>R</think>A`` -> (R, A); a template that opens the block in the prompt (R1-Distill,
    QwQ) leaves only ``R</think>A`` in the output; ``<think>R`` with no end is a cut thought
    (answer ""), and so is any output with no end when ``opened`` (the prompt opened the block).
    The whitespace around the markers goes with neither part (the module's rule).
    ``close``: another end-of-thinking marker (an evaluation's ``eval.think_end_token``)."""
    start = text.find(OPEN)
    end = text.find(close)
    if end >= 0 and (start < 0 or start < end) and text[: max(start, 0)].strip(WHITESPACE) == "":
        reasoning = text[start + len(OPEN) if start >= 0 else 0 : end]
        return Split(reasoning.strip(WHITESPACE), text[end + len(close) :].lstrip(WHITESPACE), True, "inline")
    if start >= 0 and end < 0 and text[:start].strip(WHITESPACE) == "":
        return Split(text[start + len(OPEN) :].strip(WHITESPACE), "", closed=False, source="inline")
    if opened and end < 0:
        return Split(text.strip(WHITESPACE), "", closed=False, source="inline")
    return Split(None, text)


def thinking_text(spelled: str, close: str = CLOSE) -> str:
    """What the thinking's tokens say once the rule's whitespace and markers are taken off: the
    text ``teacher_reasoning`` must equal."""
    text = spelled.strip(WHITESPACE)
    if text.startswith(OPEN):
        text = text[len(OPEN) :]
    if text.endswith(close):
        text = text[: -len(close)]
    return text.strip(WHITESPACE)


def _spelled(tokens: list[bytes]) -> str:
    return b"".join(tokens).decode("utf-8", errors="replace")


def payload_problem(tokens: list[bytes], first: int | None, reasoning: str | None, answer: str) -> str | None:
    """Why ``tokens`` (a whole output's, thinking first) do not spell the stored fields by the
    module's rule, or None when they do: ``tokens[first:]`` are whitespace then ``answer`` (byte
    for byte, or as the engines' tokenizers decode invalid UTF-8, with U+FFFD), and
    ``tokens[:first]`` spell ``reasoning`` between the markers (none at all: a server whose
    logprobs cover the answer alone). Without reasoning every token is the answer's."""
    if reasoning is None:
        first = 0
    if first is None:
        return "reasoning_tokens is missing: the payload's thinking tokens cannot be told from the answer's"
    if first > len(tokens):
        return f"reasoning_tokens is {first}, more than the payload's {len(tokens)} tokens"
    joined = b"".join(tokens[first:])
    tail = joined.lstrip(WHITESPACE.encode()) if reasoning is not None else joined
    want = answer.encode("utf-8")
    if tail != want and tail.decode("utf-8", errors="replace") != answer:
        at = next((i for i, (a, b) in enumerate(zip(tail, want)) if a != b), None)
        where = f"byte {at}" if at is not None else f"length {len(tail)} vs {len(want)}"
        return f"tokens do not join to teacher_text (first difference at {where})"
    if reasoning is not None and first > 0:
        said = thinking_text(_spelled(tokens[:first]))
        if said != reasoning:
            at = next((i for i, (a, b) in enumerate(zip(said, reasoning)) if a != b), min(len(said), len(reasoning)))
            return (
                f"the first {first} tokens do not spell teacher_reasoning between the thinking markers "
                f"(first difference at character {at})"
            )
    return None


def locate_answer(tokens: list[bytes], split: Split, finish_reason: str | None) -> tuple[list[bytes], int] | None:
    """Where the answer's tokens start in a whole output's ``tokens``, with the tokens as the
    payload keeps them: when the last token, ended by the model (``finish_reason`` stop), is
    what keeps the tokens from spelling the fields, it is the end-of-sequence token a server
    spelled as text (vLLM and SGLang decode each token alone, so Qwen's ends in "<|im_end|>"),
    kept with no bytes as every engine keeps a special token. None when the tokens describe
    another text."""
    answer = split.answer
    candidates = [tokens]
    if finish_reason == "stop" and tokens and tokens[-1]:
        candidates.append([*tokens[:-1], b""])
    for toks in candidates:
        first = 0 if split.reasoning is None else answer_start(toks, answer)
        if first is not None and payload_problem(toks, first, split.reasoning, answer) is None:
            return toks, first
    return None


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


def separate(gen: Generation, thinking: str = "auto", opened: bool = False) -> Generation:
    """An engine's raw output (hf, vllm: the thinking inline in the text) as answer + reasoning by
    the module's rule; ``opened``: the teacher's rendered prompt opened the thinking block
    (``prompt_opens_thinking``). The payload's tokens, when stored, locate the answer's first token
    (a payload that does not spell the fields is dropped and counted rather than kept wrong).
    Unchanged without markers. With thinking off the split is made all the same: the record says
    the teacher thought although told not to, and the cache counts it (``while_off``)."""
    if gen.reasoning is not None:
        return gen
    split = split_inline(gen.text, opened=opened and thinking != "off")
    if split.reasoning is None:
        return gen
    payload, first, dropped = gen.token_logprobs, None, False
    if payload is not None:
        found = locate_answer(list(payload.tokens), split, gen.finish_reason)
        dropped = found is None
        if found is not None:
            first = found[1]
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
    that is thinking (it wrote the opening marker, or its prompt opened the block: ``opened``) and
    has not written the end-of-thinking marker by then is made to write it (its token ids, one a
    step, every other logit −inf), after which it goes on freely to its answer. A row that is not
    thinking is never touched: a budget on a teacher that does not think changes nothing."""

    def __init__(
        self,
        close_ids: list[int],
        budget: int,
        prompt_len: int,
        open_ids: list[int] | None = None,
        opened: list[bool] | None = None,
    ) -> None:
        self.close, self.budget, self.prompt_len = list(close_ids), budget, prompt_len
        self.open = list(open_ids or [])
        self.opened = list(opened or [])
        self.started: dict[int, int] = {}  # row -> output position where forcing the marker began

    def thinking(self, row: int, ids: list[int]) -> bool:
        prompt_opened = row < len(self.opened) and self.opened[row]
        return prompt_opened or (bool(self.open) and _contains(ids, self.open))

    def __call__(self, input_ids, scores):
        import torch

        out = input_ids[:, self.prompt_len :].tolist()
        for row, ids in enumerate(out):
            if row not in self.started:
                if len(ids) < self.budget or _contains(ids, self.close) or not self.thinking(row, ids):
                    continue
                self.started[row] = len(ids)
            written = ids[self.started[row] :]
            if len(written) >= len(self.close):
                continue
            mask = torch.full_like(scores[row], float("-inf"))
            mask[self.close[len(written)]] = 0.0
            scores[row] = scores[row] + mask
        return scores


def _contains(ids: list[int], seq: list[int]) -> bool:
    n = len(seq)
    return n > 0 and any(ids[i : i + n] == seq for i in range(len(ids) - n + 1))
