"""The final answer of a completion: what self-consistency compares (cache), what the training
filter requires (train) and what the procedural tasks score (eval). One extraction for all.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_GSM8K = re.compile(r"####\s*([^\n]+)")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_CHOICE = re.compile(r"[Aa]nswer(?:\s+is|\s*:)?\s*:?\s*\(?([A-E])\)?(?![A-Za-z0-9])")
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?|-?\.\d+")


def normalise_number(text: str) -> str | None:
    """'1,000' -> '1000', '5.0' -> '5', '-0.50' -> '-0.5'; None if ``text`` is not a number."""
    try:
        d = Decimal(text.replace(",", "").strip())
    except InvalidOperation:
        return None
    if not d.is_finite():
        return None
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


def extract_answer(text: str) -> str | None:
    """The final answer of a completion, or None when none can be found.

    In order: GSM8K style ``#### 42``; LaTeX ``\\boxed{42}``; a multiple-choice letter
    after "answer" (``the answer is (B)``, ``Answer: C``); else the last number in the text.
    Numbers are normalised (``1,000`` -> ``1000``, ``5.0`` -> ``5``).
    """
    for pattern in (_GSM8K, _BOXED):
        m = pattern.findall(text)
        if m:
            raw = m[-1].strip()
            nums = _NUMBER.findall(raw)
            if nums:
                return normalise_number(nums[-1])
            return raw.strip(" .$") or None
    m = _CHOICE.findall(text)
    if m:
        return m[-1]
    nums = _NUMBER.findall(text)
    return normalise_number(nums[-1]) if nums else None
