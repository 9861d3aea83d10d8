"""Per-token bytes and logprobs, shared by both sides of the teacher/student boundary: the
``TokenLogprobs`` a teacher engine produces for each generated token (``teacher.store_logprobs``;
its on-disk form is ``dante.cache.payload``), and ``TokenBytes``, the exact bytes of each token
of a transformers tokenizer, which the teacher engines and the student's alignment both use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TokenLogprobs:
    """Per generated token: its bytes and logprob, and the top-K (bytes, logprob) alternatives."""

    tokens: list[bytes]
    logprobs: list[float]
    top: list[list[tuple[bytes, float]]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def k(self) -> int:
        return max((len(t) for t in self.top), default=0)

    def text_bytes(self) -> bytes:
        return b"".join(self.tokens)


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet inverted: the printable character standing for each byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


class TokenBytes:
    """The exact bytes of each token id of a transformers tokenizer (special tokens: b"").

    Byte-level BPE vocabularies (GPT-2, Qwen, SmolLM, Llama 3) map each byte to a printable
    character; SentencePiece ones write a space as ▁ and unknown bytes as <0xNN>. Anything else
    falls back to decoding the id alone."""

    def __init__(self, tokenizer: Any, keep: set[int] | frozenset[int] = frozenset()) -> None:
        self.tokenizer = tokenizer
        self.special = set(getattr(tokenizer, "all_special_ids", []) or [])
        self.keep = set(keep)  # special ids that keep their text (a thinking teacher's markers)
        vocab = tokenizer.get_vocab()
        decoder = _byte_decoder()
        sample = [t for t in list(vocab)[:2000] if t]
        self.byte_level = bool(sample) and sum(all(ch in decoder for ch in t) for t in sample) > 0.95 * len(sample)
        self.decoder = decoder
        self.cache: dict[int, bytes] = {}

    def __call__(self, token_id: int) -> bytes:
        got = self.cache.get(token_id)
        if got is None:
            got = self.cache[token_id] = self._bytes(token_id)
        return got

    def _bytes(self, token_id: int) -> bytes:
        if token_id in self.special and token_id not in self.keep:
            return b""
        if token_id in self.keep:
            return self.tokenizer.convert_ids_to_tokens(token_id).encode("utf-8")
        piece = self.tokenizer.convert_ids_to_tokens(token_id)
        if piece is None:
            return b""
        if self.byte_level and all(ch in self.decoder for ch in piece):
            return bytes(self.decoder[ch] for ch in piece)
        if piece.startswith("<0x") and piece.endswith(">") and len(piece) == 6:
            return bytes([int(piece[3:5], 16)])
        if "▁" in piece:
            return piece.replace("▁", " ").encode("utf-8")
        return self.tokenizer.decode([token_id]).encode("utf-8")


def marker_ids(tokenizer: Any, markers: Sequence[str]) -> set[int]:
    """The ids of ``markers`` (a thinking teacher's) where a tokenizer holds each as one token."""
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    return {vocab[m] for m in markers if m in vocab}


def from_ids(
    token_bytes: TokenBytes, chosen: Sequence[int], chosen_lps: Sequence[float], top_ids, top_lps
) -> TokenLogprobs:
    """A payload from token ids (hf and vLLM engines): ``top_ids``/``top_lps`` are [T][≤K]."""
    return TokenLogprobs(
        tokens=[token_bytes(int(t)) for t in chosen],
        logprobs=[float(x) if math.isfinite(float(x)) else -1e4 for x in chosen_lps],
        top=[
            [(token_bytes(int(i)), float(lp)) for i, lp in zip(ids, lps, strict=True) if math.isfinite(float(lp))]
            for ids, lps in zip(top_ids, top_lps, strict=True)
        ],
    )
