"""Duplicate prompts (stage 1, curation): exact duplicates by normalised text, and near duplicates
by MinHash LSH (datasketch) over word shingles, each candidate confirmed by its exact Jaccard.

The first occurrence is kept, so a set's order (sources in recipe order, rows in file order)
decides which copy survives. ``words`` is the one normalisation shared with decontamination.
"""

from __future__ import annotations

import math
import re
import unicodedata
import zlib
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np

# Words, plus arithmetic operators as words of their own: "57 + 8" and "57 - 8" are different
# questions (prose punctuation is dropped, as in lm-eval's and GPT-3's n-gram overlap).
WORD = re.compile(r"\w+|[+\-*/=<>^%]")
_SPACE = re.compile(r"\s+")
CHUNK = 10_000  # MinHashes computed at once (memory: ~1 KB each at 128 permutations)


def normalise(text: str) -> str:
    """The text exact duplicates are compared on: NFKC, case-folded, runs of whitespace as one space."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def words(text: str) -> list[str]:
    """Word tokens after NFKC and case folding: runs of letters, digits and underscores, and the
    operators + - * / = < > ^ %; other punctuation and spacing are ignored."""
    return WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def shingles(tokens: Sequence[str], size: int) -> set[str]:
    """The set of ``size``-word windows of ``tokens``; a shorter text is one shingle (itself)."""
    if not tokens:
        return set()
    if len(tokens) <= size:
        return {" ".join(tokens)}
    return {" ".join(tokens[i : i + size]) for i in range(len(tokens) - size + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    """|a ∩ b| / |a ∪ b| (1.0 for two empty sets)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def lsh_params(threshold: float, num_perm: int, recall: float = 0.98) -> tuple[int, int]:
    """(bands b, rows r) of the LSH: the largest r (fewest candidates) such that a pair at the
    threshold is proposed with probability 1 − (1 − t^r)^b ≥ ``recall``, b = ⌊num_perm / r⌋.

    datasketch's default balances false positives against false negatives and proposes a pair
    at Jaccard 0.8 only 40% of the time; every candidate is confirmed exactly here, so a false
    positive costs only time and recall is what to optimise."""
    for r in range(num_perm, 0, -1):
        b = num_perm // r
        if 1.0 - (1.0 - threshold**r) ** b >= recall:
            return b, r
    return num_perm, 1


@dataclass(frozen=True)
class Duplicate:
    """Item ``index`` repeats item ``of`` (which is kept): exactly, or with Jaccard ``similarity``."""

    index: int
    of: int
    kind: str  # "exact" | "near"
    similarity: float = 1.0


def repeats(keys: Sequence[Hashable]) -> list[Duplicate]:
    """Every key that appeared earlier, with the index of the first one."""
    first: dict[Hashable, int] = {}
    found = []
    for i, key in enumerate(keys):
        j = first.setdefault(key, i)
        if j != i:
            found.append(Duplicate(i, j, "exact"))
    return found


def exact_duplicates(texts: Sequence[str]) -> list[Duplicate]:
    """Every text whose ``normalise``d form appeared earlier, with the index of the first one."""
    return repeats([normalise(text) for text in texts])


def near_duplicates(
    texts: Sequence[str],
    *,
    shingle: int = 5,
    threshold: float = 0.8,
    num_perm: int = 128,
    seed: int = 1,
    skip: set[int] | frozenset[int] = frozenset(),
    advance: Callable[[int], None] | None = None,
) -> list[Duplicate]:
    """Texts whose word-shingle set has Jaccard ≥ ``threshold`` with an earlier kept text.

    MinHash LSH proposes candidates (a pair at the threshold with probability ≥ 0.98, see
    ``lsh_params``; pairs above it more often, pairs below it sometimes); a candidate whose
    MinHash estimate is more than 4 standard errors under the threshold is dropped, and each
    remaining one is confirmed on the exact Jaccard of the two shingle sets, so nothing under
    the threshold is ever removed. Shingles are hashed with CRC-32 (stable across runs, 2x
    faster than datasketch's SHA-1). Items in
    ``skip`` (e.g. exact duplicates already removed) are neither checked nor indexed.
    ``advance(n)`` is called as texts are processed (a progress bar).
    """
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(num_perm=num_perm, params=lsh_params(threshold, num_perm))
    # MinHash signatures of the indexed texts: candidates whose estimated Jaccard is > 4 standard
    # errors below the threshold are dropped before the exact check (a true pair at the
    # threshold is lost this way with probability ~3e-5)
    margin = 4.0 * math.sqrt(threshold * (1.0 - threshold) / num_perm) + 1.0 / num_perm
    signatures: np.ndarray | None = None
    found: list[Duplicate] = []
    todo = [i for i in range(len(texts)) if i not in skip]
    for start in range(0, len(todo), CHUNK):
        chunk = todo[start : start + CHUNK]
        sets = [shingles(words(texts[i]), shingle) for i in chunk]
        hashes = MinHash.bulk(
            [[s.encode("utf-8") for s in sh] for sh in sets], num_perm=num_perm, seed=seed, hashfunc=zlib.crc32
        )
        if signatures is None and hashes:
            signatures = np.zeros((len(texts), num_perm), dtype=hashes[0].hashvalues.dtype)
        for i, sh, mh in zip(chunk, sets, hashes, strict=True):
            if not sh:  # no words at all: only exact de-duplication applies
                continue
            candidates = np.array(lsh.query(mh), dtype=np.int64)
            if len(candidates):
                estimate = (signatures[candidates] == mh.hashvalues).mean(axis=1)
                candidates = candidates[estimate >= threshold - margin]
            best, best_sim = None, 0.0
            for j in sorted(int(c) for c in candidates):
                sim = jaccard(sh, shingles(words(texts[j]), shingle))
                if sim >= threshold and sim > best_sim:
                    best, best_sim = j, sim
            if best is None:
                lsh.insert(i, mh, check_duplication=False)
                signatures[i] = mh.hashvalues
            else:
                found.append(Duplicate(i, best, "near", round(best_sim, 4)))
        if advance is not None:
            advance(len(chunk))
    return found
