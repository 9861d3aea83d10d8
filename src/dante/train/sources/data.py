"""Student data (stage 3): cache records -> token ids with prompt-masked targets -> packed or
padded micro-batches. The loop (train/loop.py) only asks for ``collate(examples, ...)``.

A record becomes ``prompt_ids + completion_ids``, rendered with the *student's* chat template
(system / messages / prompt as the user turn, teacher_text as the assistant turn) or as raw
``prompt`` + ``teacher_text`` text, with EOS appended to the completion. Targets are stored
already shifted: ``targets[p]`` is the token that position p must predict, −100 for prompt
positions and for the last position of a record. So packing never lets one record's last
token be trained to predict the next record's first token.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch

from dante.answers import extract_answer
from dante.config import FilterConfig, StudentConfig
from dante.errors import DanteError, DataError
from dante.teacher.reasoning import CLOSE, OPEN, prompt_opens_thinking
from dante.train.objective.losses import IGNORE
from dante.train.sources.kd_data import KDBuild, KDTargets, kd_targets


@dataclass
class Example:
    """One record, tokenized for the student."""

    id: str
    input_ids: list[int]
    targets: list[int]  # next-token targets, IGNORE where not trained
    n_completion: int  # positions with a target (= completion tokens kept)
    entropy: float | None
    truncated: bool = False
    kd: Any = None  # KDTargets of train.kd_data in sequence positions (position p predicts targets[p])

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class DataStats:
    """What tokenization did to the cache; stored in the manifest."""

    records: int = 0
    kept: int = 0
    truncated: int = 0  # completion cut to fit max_length (kept, counted)
    dropped: int = 0  # prompt alone fills max_length: nothing to train on (counted, not kept)
    dropped_ids: list[str] = field(default_factory=list)  # first few, for the log
    reasoning: int = 0  # records trained with the teacher's reasoning (train.reasoning: keep)
    reasoning_too_long: int = 0  # records with reasoning over max_length: dropped, never cut mid-thought
    reasoning_template: str | None = None  # how the student's reasoning is written: "chat template" / "plain"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    teacher_tokens: int = 0  # the teacher's own completion tokens of the records (its generated tokens)
    chat_template: bool = False
    filter: dict[str, Any] | None = None  # train.filter's counts (FilterCounts.as_dict), set by the loop
    token_kd: dict[str, Any] | None = None  # KDStats.as_dict of train.kd_data, set by the loop

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__.items())


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


def _messages(rec, system: str = "keep") -> list[dict[str, Any]]:
    """The record's conversation as the student sees it: with the teacher's system prompt, or
    (``system``: drop) without it."""
    msgs = [dict(m) for m in rec.messages] if rec.messages else [{"role": "user", "content": rec.prompt}]
    if system == "drop":
        return [m for m in msgs if m.get("role") != "system"]
    if rec.system and not any(m.get("role") == "system" for m in msgs):
        msgs.insert(0, {"role": "system", "content": rec.system})
    return msgs


THINK_OPEN, THINK_CLOSE = OPEN, CLOSE  # the plain format for a student without a thinking template
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
    return f"{THINK_OPEN}\n{reasoning}\n{THINK_CLOSE}\n\n{answer}"


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
        msgs = _messages(rec, system)
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
        prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    else:
        prompt_text = (rec.system + "\n\n" if rec.system and system == "keep" else "") + rec.prompt
        completion_text = plain_thinking(thought, answer) if thought is not None else answer
        how = "plain" if thought is not None else None
        prompt_ids = tokenizer(prompt_text, add_special_tokens=True)["input_ids"]
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
    return Rendered(list(prompt_ids), list(completion_ids), completion_text, max(start, 0), how)


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


def make_example(
    rec_id: str, prompt_ids: list[int], completion_ids: list[int], entropy: float | None, truncated: bool
) -> Example:
    ids = prompt_ids + completion_ids
    p = len(prompt_ids)
    # position j predicts ids[j+1]; only completion tokens are targets
    targets = [ids[j + 1] if j + 1 >= p else IGNORE for j in range(len(ids) - 1)] + [IGNORE]
    return Example(rec_id, ids, targets, len(completion_ids), entropy, truncated)


def build_examples(
    records,
    tokenizer,
    student: StudentConfig,
    max_length: int,
    *,
    source: str | Path = "",
    model_ref: str = "",
    kd: KDBuild | None = None,
    reasoning: str = "keep",
    system: str = "keep",
) -> tuple[list[Example], DataStats]:
    """Tokenize every record; cut completions that overflow ``max_length`` (counted as truncated),
    drop records whose prompt alone leaves no room for one completion token (counted as dropped).
    A record trained with its teacher's reasoning (``reasoning``: keep) that overflows is dropped
    and counted (``reasoning_too_long``), never cut mid-thought.

    Raises DataError when every record is dropped (max_length smaller than every prompt).
    ``kd`` (a ``KDBuild``) also builds each record's distillation targets
    (``dante.train.sources.kd_data``) from its teacher payload: those its terms read.
    """
    chat = use_chat(tokenizer, student, model_ref)
    stats = DataStats(records=len(records), chat_template=chat)
    examples: list[Example] = []
    shortest_prompt = None
    for rec in records:
        rendered_text = render_record_text(rec, tokenizer, chat, reasoning=reasoning, system=system)
        prompt_ids, completion_ids = rendered_text.prompt_ids, rendered_text.completion_ids
        thought = rendered_text.reasoning_format is not None
        shortest_prompt = len(prompt_ids) if shortest_prompt is None else min(shortest_prompt, len(prompt_ids))
        if len(prompt_ids) >= max_length:
            stats.dropped += 1
            if len(stats.dropped_ids) < 10:
                stats.dropped_ids.append(str(rec.id))
            continue
        truncated = len(prompt_ids) + len(completion_ids) > max_length
        if truncated and thought:
            stats.reasoning_too_long += 1
            continue
        if thought:  # counted only where the reasoning is in the training text
            stats.reasoning += 1
            stats.reasoning_template = rendered_text.reasoning_format
        rendered = completion_ids
        if truncated:
            completion_ids = completion_ids[: max_length - len(prompt_ids)]
            stats.truncated += 1
        example = make_example(str(rec.id), prompt_ids, completion_ids, rec.output_entropy, truncated)
        if kd is not None:
            example.kd = _kd_positions(rec, rendered, kd, len(prompt_ids), len(completion_ids))
        examples.append(example)
        stats.prompt_tokens += len(prompt_ids)
        stats.completion_tokens += len(completion_ids)
    stats.kept = len(examples)
    if records and not examples and stats.reasoning_too_long:
        raise DataError(
            f"every record is longer than train.max_length={max_length} with its teacher's reasoning "
            f"({stats.reasoning_too_long} dropped, none cut mid-thought)",
            file=source or None,
            field="train.max_length",
            hint="raise train.max_length, or set train.reasoning=drop to train on the answers alone",
        )
    if records and not examples:
        raise DataError(
            f"train.max_length={max_length} is smaller than every prompt (shortest prompt: "
            f"{shortest_prompt} student tokens)",
            file=source or None,
            field="train.max_length",
            hint="raise train.max_length",
        )
    return examples, stats


def _kd_positions(rec, completion_ids: list[int], kd, n_prompt: int, n_kept: int):
    """The record's KD targets moved to sequence positions (completion token j is predicted at
    position n_prompt − 1 + j), those cut by truncation left out. The teacher's answer tokens are
    aligned with the student's tokens that spell the answer (after the reasoning, if any)."""
    found = kd_targets(rec, [kd.vocab.token_bytes(i) for i in completion_ids], kd.vocab, kd.stats)
    if found is None:
        return None
    keep = [i for i, j in enumerate(found.positions) if j < n_kept] if kd.token else []
    chunks = found.chunks if kd.chunk else []
    return KDTargets(
        [n_prompt - 1 + found.positions[i] for i in keep],
        [found.ids[i] for i in keep],
        [found.probs[i] for i in keep],
        [(n_prompt - 1 + s0, n_prompt - 1 + s1, lt) for s0, s1, lt in chunks if s1 <= n_kept],
    )


def _kd_tensors(examples: list[Example], rows: int, width: int, starts: list[tuple[int, int]]) -> dict:
    """The distillation targets of a micro-batch: ``kd_ids`` (rows, width, K) with −1 pads and
    ``kd_probs`` where a position has one-to-one targets; ``chunk_ids`` (rows, width), the aligned
    chunk each position belongs to (numbered from 0 across the micro-batch, −1 for none) and
    ``chunk_lt``, the teacher's log-likelihood of that chunk at each of its positions, where any
    example has chunks. ``starts[i]`` = (row, first position) of example i."""
    out = {}
    k = max((len(ids) for ex in examples if ex.kd for ids in ex.kd.ids), default=0)
    if k:
        ids = torch.full((rows, width, k), -1, dtype=torch.long)
        probs = torch.zeros((rows, width, k), dtype=torch.float32)
        for ex, (row, first) in zip(examples, starts, strict=True):
            if not ex.kd:
                continue
            for pos, i, p in zip(ex.kd.positions, ex.kd.ids, ex.kd.probs, strict=True):
                ids[row, first + pos, : len(i)] = torch.tensor(i)
                probs[row, first + pos, : len(p)] = torch.tensor(p)
        out["kd_ids"], out["kd_probs"] = ids, probs
    if any(ex.kd and ex.kd.chunks for ex in examples):
        chunk_ids = torch.full((rows, width), -1, dtype=torch.long)
        chunk_lt = torch.zeros((rows, width), dtype=torch.float32)
        n = 0
        for ex, (row, first) in zip(examples, starts, strict=True):
            for s0, s1, lt in ex.kd.chunks if ex.kd else ():
                chunk_ids[row, first + s0 : first + s1] = n
                chunk_lt[row, first + s0 : first + s1] = lt
                n += 1
        out["chunk_ids"], out["chunk_lt"] = chunk_ids, chunk_lt
    return out


def collate(
    examples: list[Example],
    weights: Sequence[float | Sequence[float]],
    *,
    packing: bool,
    pad_id: int,
    kd_weights: Sequence[float] | None = None,
) -> dict[str, torch.Tensor]:
    """A micro-batch as tensors. ``weights[i]`` is u_t for every target of example i, or a list
    of u_t per position of example i (the on-policy advantages). ``kd_weights[i]``, when given,
    is v_t of example i's token-level targets (``kd_weights`` in the batch); without it v_t = u_t.

    packing=True: one row, padding-free; ``position_ids`` restart at 0 for each record and
    ``segment_ids`` number the records (for the block-diagonal mask). packing=False: one row per
    record, right-padded, with an ``attention_mask``.
    """
    per_position = [_position_weights(ex, w) for ex, w in zip(examples, weights, strict=True)]
    kd_per_position = (
        None if kd_weights is None else [_position_weights(ex, v) for ex, v in zip(examples, kd_weights, strict=True)]
    )
    if packing:
        ids, pos, tgt, seg = [], [], [], []
        for k, ex in enumerate(examples):
            ids += ex.input_ids
            pos += range(len(ex))
            tgt += ex.targets
            seg += [k] * len(ex)
        batch = {
            "input_ids": torch.tensor([ids]),
            "position_ids": torch.tensor([pos]),
            "targets": torch.tensor([tgt]),
            "weights": torch.tensor([[w for ws in per_position for w in ws]], dtype=torch.float32),
            "segment_ids": torch.tensor([seg]),
        }
        if kd_per_position is not None:
            batch["kd_weights"] = torch.tensor([[v for vs in kd_per_position for v in vs]], dtype=torch.float32)
        firsts = [0]
        for ex in examples[:-1]:
            firsts.append(firsts[-1] + len(ex))
        batch.update(_kd_tensors(examples, 1, len(ids), [(0, f) for f in firsts]))
        return batch
    width = max(len(ex) for ex in examples)
    n = len(examples)
    batch = {
        "input_ids": torch.full((n, width), pad_id),
        "attention_mask": torch.zeros((n, width), dtype=torch.long),
        "targets": torch.full((n, width), IGNORE),
        "weights": torch.zeros((n, width), dtype=torch.float32),
    }
    if kd_per_position is not None:
        batch["kd_weights"] = torch.zeros((n, width), dtype=torch.float32)
    for r, ex in enumerate(examples):
        L = len(ex)
        batch["input_ids"][r, :L] = torch.tensor(ex.input_ids)
        batch["attention_mask"][r, :L] = 1
        batch["targets"][r, :L] = torch.tensor(ex.targets)
        batch["weights"][r, :L] = torch.tensor(per_position[r], dtype=torch.float32)
        if kd_per_position is not None:
            batch["kd_weights"][r, :L] = torch.tensor(kd_per_position[r], dtype=torch.float32)
    batch.update(_kd_tensors(examples, n, width, [(r, 0) for r in range(n)]))
    return batch


def _position_weights(ex: Example, w: float | Sequence[float]) -> list[float]:
    """u_t at each position of ``ex``: the record's weight, or the given per-position list; 0
    where there is no target."""
    if isinstance(w, int | float):
        return [float(w) if t != IGNORE else 0.0 for t in ex.targets]
    if len(w) != len(ex):
        raise ValueError(f"{len(w)} weights for an example of {len(ex)} positions")
    return [float(x) if t != IGNORE else 0.0 for x, t in zip(w, ex.targets, strict=True)]


def split_heldout(records: list, fraction: float, seed: int) -> tuple[list, list]:
    """(train, held-out): a fixed share of records chosen by a seeded hash of their id, so the
    split does not depend on file order and stays put when records are added."""
    if fraction <= 0 or len(records) < 2:
        return list(records), []
    n_eval = min(len(records) - 1, max(1, round(fraction * len(records))))
    key = {id(r): hashlib.sha256(f"{seed}:{r.id}".encode()).hexdigest() for r in records}
    chosen = {id(r) for r in sorted(records, key=lambda r: key[id(r)])[:n_eval]}
    return [r for r in records if id(r) not in chosen], [r for r in records if id(r) in chosen]


@dataclass
class FilterCounts:
    """What ``train.filter`` kept of the cache, and why it dropped the rest (first reason that applies)."""

    read: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(
        default_factory=lambda: {"truncated": 0, "no_answer": 0, "low_consistency": 0, "incomplete_reasoning": 0}
    )

    def as_dict(self) -> dict[str, Any]:
        return {"read": self.read, "kept": self.kept, "dropped": dict(self.dropped)}


def filter_records(records: list, cfg: FilterConfig, source: str | Path = "") -> tuple[list, FilterCounts]:
    """The records ``cfg`` keeps, in order: finished (finish_reason not ``length``), with a final
    answer (``dante.answers.extract_answer``), at or above the self-consistency threshold."""
    counts = FilterCounts(read=len(records))
    if cfg.min_self_consistency is not None:
        missing = next((r for r in records if r.self_consistency is None), None)
        if missing is not None:
            raise DataError(
                f"record {missing.id} has no self_consistency, so train.filter.min_self_consistency cannot apply",
                file=source,
                field="self_consistency",
                hint="write the cache with teacher.consistency_samples > 0, or unset train.filter.min_self_consistency",
            )
    kept = []
    for rec in records:
        if cfg.complete_reasoning and getattr(rec, "reasoning_status", None) in ("cut", "no_answer"):
            counts.dropped["incomplete_reasoning"] += 1
        elif cfg.drop_truncated and rec.finish_reason == "length":
            counts.dropped["truncated"] += 1
        elif cfg.require_answer and extract_answer(rec.teacher_text) is None:
            counts.dropped["no_answer"] += 1
        elif cfg.min_self_consistency is not None and rec.self_consistency < cfg.min_self_consistency:
            counts.dropped["low_consistency"] += 1
        else:
            kept.append(rec)
    counts.kept = len(kept)
    if records and not kept:
        raise DataError(
            f"train.filter dropped every record ({counts.dropped})",
            file=source,
            field="train.filter",
            hint="loosen train.filter, or raise teacher.max_new_tokens so completions finish",
        )
    return kept, counts
