"""Per-record metadata of the teacher cache: self-consistency and difficulty (stage 2); the
output entropy itself is computed by the teachers (``dante.teacher.entropy``).

Pure functions with the formulas in their docstrings, so anyone can recompute a cache's
numbers from the teacher's top-k logprobs and sampled completions (docs/teachers.md, "Metadata definitions").
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Sequence
from itertools import combinations

from dante.answers import extract_answer, normalise_number
from dante.teacher.entropy import output_entropy, topk_entropy

__all__ = [
    "difficulty_score",
    "extract_answer",
    "normalise_number",
    "output_entropy",
    "self_consistency",
    "text_similarity",
    "topk_entropy",
]


def text_similarity(a: str, b: str) -> float:
    """difflib ``SequenceMatcher(None, a, b).ratio()``: 2*matches / (len(a)+len(b)), in [0, 1]."""
    if not a and not b:
        return 1.0
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def self_consistency(samples: Sequence[str], reference: str | None = None) -> float | None:
    """Agreement among k sampled completions, in [0, 1]; None when k = 0.

    Answer mode, used when an answer (``extract_answer``) is found in at least half of the
    samples: the share of samples whose answer equals the majority answer (a sample without
    an answer disagrees). With ``reference`` (e.g. the greedy completion) the target is the
    reference's answer instead of the majority's, when it has one.

    Text mode otherwise: mean pairwise ``text_similarity`` (difflib SequenceMatcher ratio)
    over all pairs of samples, or the mean similarity of each sample to ``reference``.
    One sample and no reference agrees with itself: 1.0.
    """
    if not samples:
        return None
    answers = [extract_answer(s) for s in samples]
    found = [a for a in answers if a is not None]
    if len(found) * 2 >= len(samples) and found:
        target = extract_answer(reference) if reference is not None else None
        if target is None:
            target = Counter(found).most_common(1)[0][0]
        return sum(a == target for a in answers) / len(samples)
    if reference is not None:
        return sum(text_similarity(s, reference) for s in samples) / len(samples)
    if len(samples) == 1:
        return 1.0
    pairs = list(combinations(samples, 2))
    return sum(text_similarity(a, b) for a, b in pairs) / len(pairs)


def difficulty_score(entropy: float | None, consistency: float | None, entropy_scale: float = 3.0) -> float | None:
    """How hard a prompt was for the teacher, in [0, 1] (high entropy, low consistency -> hard).

        D = 0.5 * min(1, H / scale) + 0.5 * (1 - C)     both known
        D = min(1, H / scale)                            consistency unknown (k = 0)
        D = 1 - C                                        entropy unknown (no logprobs)
        None                                             neither known

    H in nats (negative values clamped to 0); ``scale`` (cache.difficulty_entropy_scale,
    default 3.0 nats) is the entropy counted as fully uncertain.
    """
    e = None if entropy is None else min(1.0, max(0.0, entropy) / entropy_scale)
    c = None if consistency is None else 1.0 - min(1.0, max(0.0, consistency))
    if e is None and c is None:
        return None
    if c is None:
        return e
    if e is None:
        return c
    return 0.5 * e + 0.5 * c
