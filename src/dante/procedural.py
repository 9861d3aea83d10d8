"""Procedural tasks from reasoning-gym (stage 1 input and stage 6 tasks): unlimited items of a
named task, from its settings and a seed, each with the generator's own answer check.

Splits never meet by construction: an item belongs to ``train``, ``validation`` or ``test`` by a
hash of its task and question text (80 / 10 / 10), whatever seed drew it. A split's items are
the first ``size`` distinct questions of that split in a seeded stream of generated items, so
the same (task, settings, split, size, seed) always gives the same items. Gold answers stay in
``Item.answer`` for the scorer; a prompt source hands only the question to the teacher.

reasoning-gym is an optional extra (``pip install 'dante-distill[procedural]'``).
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from dante.answers import extract_answer, normalise_number
from dante.errors import ConfigError

SPLITS = ("train", "validation", "test")
SHARES = {"train": (0.0, 0.8), "validation": (0.8, 0.9), "test": (0.9, 1.0)}  # of the hash range
# reasoning-gym tasks derived from benchmark test sets: never a prompt source next to that benchmark's evaluation
DERIVED_FROM_BENCHMARKS = {"gsm_symbolic": "GSM8K test"}
GENERATED_PER_DRAW = 256
MAX_DRAWS = 400


@dataclass(frozen=True)
class Item:
    """One generated item: the question a model sees, and what only the scorer sees."""

    task: str
    split: str
    index: int  # 0-based position in its split
    question: str
    answer: str = field(repr=False)
    metadata: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def id(self) -> str:
        """Stable id of the question within its task (16 hex chars)."""
        return question_digest(self.task, self.question)[:16]


def question_digest(task: str, question: str) -> str:
    """sha256 of (task, question), hex: the question's id and the draw that decides its split."""
    return hashlib.sha256(f"{task}\x00{question}".encode()).hexdigest()


def gym():
    """The reasoning_gym module, or a ConfigError saying how to install it."""
    try:
        import reasoning_gym
    except ImportError:
        raise ConfigError(
            "procedural tasks need reasoning-gym",
            field="prompts.source",
            hint="pip install 'dante-distill[procedural]' (make demo installs it)",
        ) from None
    return reasoning_gym


def split_of(task: str, question: str) -> str:
    """The split a question belongs to: sha256(task, question) mapped to [0, 1) and cut 80/10/10."""
    u = int(question_digest(task, question)[:15], 16) / 16**15
    return next(name for name, (lo, hi) in SHARES.items() if lo <= u < hi)


def _draw_seed(seed: int, split: str, draw: int) -> int:
    return int(hashlib.sha256(f"{seed}:{split}:{draw}".encode()).hexdigest()[:8], 16)


def _dataset(task: str, settings: dict[str, Any], size: int, seed: int):
    try:
        return gym().create_dataset(task, size=size, seed=seed, **settings)
    except (KeyError, ValueError, TypeError, AssertionError) as exc:
        raise ConfigError(
            f"reasoning-gym cannot make task {task!r} with settings {settings}: {type(exc).__name__}: {exc}",
            field="prompts.task_settings",
        ) from None


def generate(task: str, split: str, size: int, *, seed: int = 0, settings: dict[str, Any] | None = None) -> list[Item]:
    """The first ``size`` distinct questions of ``split`` in the seeded stream of ``task`` items."""
    if split not in SPLITS:
        raise ConfigError(f"procedural split must be one of {', '.join(SPLITS)}, got {split!r}", field="split")
    settings = dict(settings or {})
    items: list[Item] = []
    seen: set[str] = set()
    for draw in range(MAX_DRAWS):
        for entry in _dataset(task, settings, GENERATED_PER_DRAW, _draw_seed(seed, split, draw)):
            question = entry["question"]
            if question in seen or split_of(task, question) != split:
                continue
            seen.add(question)
            metadata = json.loads(json.dumps(entry.get("metadata") or {}, default=str))
            items.append(Item(task, split, len(items), question, str(entry["answer"]), metadata))
            if len(items) == size:
                return items
    raise ConfigError(
        f"task {task!r} with settings {settings} has only {len(items)} distinct {split} questions "
        f"(asked for {size}; {MAX_DRAWS * GENERATED_PER_DRAW} items drawn)",
        field="prompts.limit",
        hint="ask for fewer, or widen the task settings",
    )


def score(
    task: str,
    completion: str,
    answer: str,
    metadata: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
) -> float:
    """The generator's own check of a completion's final answer (``dante.answers.extract_answer``),
    in [0, 1]; no answer found scores 0."""
    if normalise_number(answer) is not None:
        extracted = extract_answer(completion)
    else:  # a word or list answer: the completion's last line
        extracted = next((ln.strip() for ln in reversed(completion.splitlines()) if ln.strip()), None)
    if extracted is None:
        return 0.0
    entry = {"question": "", "answer": answer, "metadata": metadata or {}}
    return float(_scorer(task, json.dumps(settings or {}, sort_keys=True)).score_answer(extracted, entry))


@functools.lru_cache(maxsize=32)
def _scorer(task: str, settings_json: str):
    return _dataset(task, json.loads(settings_json), 1, 0)
