"""Rendering (stage 4): a cache record as the student's text, split into prompt and completion
token ids. With the *student's* chat template (system / messages / prompt as the user turn, the
teacher's text as the assistant turn) or as raw ``prompt`` + ``teacher_text`` text; a thinking
teacher's reasoning in the student's own thinking convention (``REASONING_FORMATS``), the markers
being ``dante.teacher.reasoning``'s.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from dante.config import StudentConfig
from dante.errors import DanteError
from dante.teacher.reasoning import CLOSE, OPEN, prompt_opens_thinking


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def use_chat(tokenizer, student: StudentConfig, model_ref: str = "") -> bool:
    """Whether records are rendered with the chat template; error when one is required and missing."""
    if not student.use_chat_template:
        return False
    if has_chat_template(tokenizer):
        return True
    if student.require_chat_template:
        raise DanteError(
            "the student tokenizer has no chat template",
            file=model_ref or None,
            field="student.require_chat_template",
            hint=(
                "use a tokenizer with a chat_template, or set student.use_chat_template=false to train on "
                "raw prompt + completion text"
            ),
        )
    return False


def messages(rec, system: str = "keep") -> list[dict[str, Any]]:
    """The record's conversation as the student sees it: with the teacher's system prompt, or
    (``system``: drop) without it."""
    return conversation(rec.prompt, rec.system, rec.messages, system)


def conversation(prompt: str, system_text: str | None, msgs, system: str = "keep") -> list[dict[str, Any]]:
    """A prompt's conversation (its messages, or the prompt as the user turn) with its system prompt
    first, or (``system``: drop) without one."""
    msgs = [dict(m) for m in msgs] if msgs else [{"role": "user", "content": prompt}]
    if system == "drop":
        return [m for m in msgs if m.get("role") != "system"]
    if system_text and not any(m.get("role") == "system" for m in msgs):
        msgs.insert(0, {"role": "system", "content": system_text})
    return msgs


def render_prompt(prompt: str, system_text: str | None, msgs, tokenizer, chat: bool, system: str = "keep") -> list[int]:
    """The token ids of a prompt alone, as ``render_record`` writes a record's prompt (what the
    student continues when it writes its own samples)."""
    if chat:
        text = tokenizer.apply_chat_template(
            conversation(prompt, system_text, msgs, system), tokenize=False, add_generation_prompt=True
        )
    else:
        text = plain_prompt(prompt, system_text, system)
    return prompt_ids(text, tokenizer, chat)


def plain_prompt(prompt: str, system_text: str | None, system: str = "keep") -> str:
    """A prompt's text without a chat template: its system prompt (unless ``system``: drop), a blank
    line, the prompt."""
    return (system_text + "\n\n" if system_text and system == "keep" else "") + prompt


def prompt_ids(text: str, tokenizer, chat: bool) -> list[int]:
    """A rendered prompt's token ids: a chat template already holds its special tokens (BOS
    included); raw text gets the tokenizer's."""
    return list(tokenizer(text, add_special_tokens=not chat)["input_ids"])


# How a record's reasoning reaches the student's training text: its template writes reasoning_content
# ("chat template"); its template opens <think> in the generation prompt and deletes thinking from
# assistant turns (R1-Distill, QwQ), so the completion continues the opened block ("prompt-opened");
# or the documented plain format after the template's prompt ("plain").
REASONING_FORMATS = ("chat template", "prompt-opened", "plain")


def render_record(
    rec, tokenizer, chat: bool, reasoning: str = "keep", system: str = "keep"
) -> tuple[list[int], list[int]]:
    """(prompt_ids, completion_ids) of one cache record, EOS appended to the completion.

    Chat: the prompt is the template with ``add_generation_prompt=True`` (what the student sees
    at inference); the completion is the rest of the full conversation rendering (teacher_text
    plus the template's end-of-turn marker). Both halves are tokenized separately, as at inference.
    With a thinking teacher's reasoning (``reasoning``: keep), the completion holds it first, in the
    student's own convention (``thinking_convention``).
    """
    r = render_record_text(rec, tokenizer, chat, reasoning=reasoning, system=system)
    return r.prompt_ids, r.completion_ids


class Rendered(NamedTuple):
    prompt_ids: list[int]
    completion_ids: list[int]  # EOS appended when the template does not end with it
    completion_text: str  # what the completion ids (before EOS) tokenize
    answer_start: int = 0  # where the answer begins in completion_text (after the reasoning, if any)
    reasoning_format: str | None = None  # how the reasoning was written (REASONING_FORMATS); None: none trained


def plain_thinking(reasoning: str, answer: str) -> str:
    """The documented plain format of a student whose chat template has no thinking convention."""
    return f"{OPEN}\n{reasoning}\n{CLOSE}\n\n{answer}"


_CONVENTIONS: dict[str, str] = {}  # chat template -> its thinking convention, found once


def thinking_convention(tokenizer) -> str:
    """ "chat template" when the student's template writes an assistant message's ``reasoning_content``
    (Qwen3's and SmolLM3's style), else "plain" (``plain_thinking`` in the message content)."""
    template = str(getattr(tokenizer, "chat_template", None))
    if template in _CONVENTIONS:
        return _CONVENTIONS[template]
    probe = "dante-reasoning-probe"
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning_content": probe}],
            tokenize=False,
        )
    except Exception:  # noqa: BLE001 - a template that cannot take the key has no convention for it
        text = ""
    _CONVENTIONS[template] = found = "chat template" if probe in text else "plain"
    return found


def render_record_text(rec, tokenizer, chat: bool, *, reasoning: str = "keep", system: str = "keep") -> Rendered:
    """``render_record`` plus the completion's text, where its answer starts and how the reasoning
    was written (``REASONING_FORMATS``). A record whose reasoning would not reach the training text
    is an error naming the template, never a record silently trained on its answer alone."""
    thought = getattr(rec, "teacher_reasoning", None) if reasoning == "keep" else None
    answer = rec.teacher_text
    how = None
    if chat:
        msgs = messages(rec, system)
        switch = {} if getattr(rec, "teacher_reasoning", None) is None else {"enable_thinking": thought is not None}
        prompt_text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, **switch)
        turn: dict[str, Any] = {"role": "assistant", "content": answer}
        if thought is not None:
            if thinking_convention(tokenizer) == "chat template":
                turn["reasoning_content"] = thought
            else:
                turn["content"] = plain_thinking(thought, answer)
        full = tokenizer.apply_chat_template([*msgs, turn], tokenize=False, **switch)
        rest = full[len(prompt_text) :] if full.startswith(prompt_text) else None
        if thought is None:
            completion_text = rest if rest is not None else answer
        elif rest is not None and thought in rest:
            completion_text, how = rest, "chat template" if "reasoning_content" in turn else "plain"
        elif prompt_opens_thinking(prompt_text):
            completion_text, how = opened_completion(tokenizer, msgs, switch, prompt_text, thought, answer)
        else:
            # Templates that rewrite earlier turns (e.g. drop reasoning) break the prefix property:
            # then the completion is the teacher's own text (its reasoning in the plain format).
            completion_text, how = plain_thinking(thought, answer), "plain"
    else:
        prompt_text = plain_prompt(rec.prompt, rec.system, system)
        completion_text = plain_thinking(thought, answer) if thought is not None else answer
        how = "plain" if thought is not None else None
    ids = prompt_ids(prompt_text, tokenizer, chat)
    if thought is not None and thought not in completion_text:
        raise DanteError(
            f"record {rec.id!r}: the student's chat template drops the teacher's reasoning from the training text",
            field="student.chat_template",
            hint="give the student a template that writes the assistant's reasoning_content (or keeps <think> "
            "blocks), or set train.reasoning=drop to train on the answers alone",
        )
    start = completion_text.rfind(answer) if thought is not None and answer else 0
    completion_ids = tokenizer(completion_text, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    if eos is not None and eos not in completion_ids[-2:]:  # ChatML-like templates already end with EOS (+ newline)
        completion_ids = [*completion_ids, eos]
    return Rendered(ids, list(completion_ids), completion_text, max(start, 0), how)


def opened_completion(tokenizer, msgs, switch, prompt_text: str, thought: str, answer: str) -> tuple[str, str]:
    """The completion for a template that opens the thinking block in its generation prompt and
    deletes thinking from assistant turns (R1-Distill, QwQ): what the model writes at inference,
    the thinking, ``</think>``, a blank line, the answer, then the template's own end of turn
    (found by rendering a marker-free answer)."""
    probe = "dante-answer-probe"
    ended = tokenizer.apply_chat_template([*msgs, {"role": "assistant", "content": probe}], tokenize=False, **switch)
    end_of_turn = ended[ended.rfind(probe) + len(probe) :]
    lead = "" if prompt_text.endswith(("\n", " ")) else "\n"
    return f"{lead}{thought}\n{CLOSE}\n\n{answer}{end_of_turn}", "prompt-opened"
