"""Examples (stage 4): rendered records -> token ids with prompt-masked targets, and the targets
the terms read (``objective.targets``, built from the record's teacher payload by ``kd_data``).

A record becomes ``prompt_ids + completion_ids`` (``render``), with EOS appended to the
completion. Targets are stored already shifted: ``targets[p]`` is the token that position p must
predict, −100 for prompt positions and for the last position of a record. So packing never lets
one record's last token be trained to predict the next record's first token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dante.config import StudentConfig
from dante.errors import DataError
from dante.train.objective.losses import IGNORE
from dante.train.objective.targets import Span
from dante.train.sources.kd_data import TargetBuild, build_targets
from dante.train.sources.render import render_record_text, use_chat


@dataclass
class Example:
    """One record, tokenized for the student."""

    id: str
    input_ids: list[int]
    targets: list[int]  # next-token targets, IGNORE where not trained
    n_completion: int  # positions with a target (= completion tokens kept)
    entropy: float | None
    truncated: bool = False
    # what its terms read besides the text, by target name (``objective.targets``): spans of
    # sequence positions (position p predicts targets[p])
    term_targets: dict[str, list[Span]] = field(default_factory=dict)

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
    token_kd: dict[str, Any] | None = None  # KDStats.as_dict of the alignment for the terms' targets (kd_data)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__.items())


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
    targets: TargetBuild | None = None,
    reasoning: str = "keep",
    system: str = "keep",
) -> tuple[list[Example], DataStats]:
    """Tokenize every record; cut completions that overflow ``max_length`` (counted as truncated),
    drop records whose prompt alone leaves no room for one completion token (counted as dropped).
    A record trained with its teacher's reasoning (``reasoning``: keep) that overflows is dropped
    and counted (``reasoning_too_long``), never cut mid-thought.

    Raises DataError when every record is dropped (max_length smaller than every prompt).
    ``targets`` (a ``TargetBuild``) also builds the targets the terms read (``objective.targets``)
    from each record's teacher payload aligned with the student's tokens (``kd_data``).
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
        if targets is not None:
            example.term_targets = place_targets(rec, rendered, targets, len(prompt_ids), len(completion_ids))
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


def place_targets(rec, completion_ids: list[int], build: TargetBuild, n_prompt: int, n_kept: int):
    """The record's targets (``build.targets``) in sequence positions (completion token j is
    predicted at position n_prompt − 1 + j), spans cut by truncation left out; {} when the record
    cannot be aligned (counted). The teacher's answer tokens are aligned with the student's tokens
    that spell the answer (after the reasoning, if any)."""
    found = build_targets(rec, [build.vocab.token_bytes(i) for i in completion_ids], build)
    return {name: [s.shifted(n_prompt - 1) for s in spans if s.end <= n_kept] for name, spans in (found or {}).items()}
