"""The teacher's per-token logprobs kept in the cache (``teacher.store_logprobs: K``): for every
generated token of the main completion, its bytes and logprob and the top-K alternatives with
theirs. Token-level distillation (``train.loss.token_kd``) reads them; only K numbers per token
cross from teacher to student, never a vocabulary-sized row.

On disk (``encode``/``decode``) a payload is one JSON object per record, compact and exact:

    {"format": "dante-logprobs/1", "k": K, "n": T,
     "vocab": b64(the distinct token byte strings, concatenated), "lengths": b64(uint16 each),
     "ids": b64(uint16 or uint32 [T, K+1]: column 0 the generated token, 1..K the alternatives),
     "width": 2 | 4, "logprobs": b64(float16 [T, K+1])}

Token strings are bytes because byte-level tokenizers split multi-byte characters across
tokens; a special token (end of sequence) is the empty string, so the tokens join to the text.
A position with fewer than K alternatives pads with id 2^(8·width) − 1 and logprob −inf.
float16 keeps a logprob to 3 significant digits (−5.00 ± 0.004): bytes per token are in
BENCHMARKS.md.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

FORMAT = "dante-logprobs/1"


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


def encode(payload: TokenLogprobs, k: int | None = None) -> dict[str, Any]:
    """The compact JSON form of a payload (see the module docstring)."""
    import numpy as np

    k = payload.k if k is None else k
    n = len(payload.tokens)
    index: dict[bytes, int] = {}
    for tok in payload.tokens:
        index.setdefault(tok, len(index))
    for row in payload.top:
        for tok, _ in row[:k]:
            index.setdefault(tok, len(index))
    width = 2 if len(index) < 0xFFFF else 4
    pad = (1 << (8 * width)) - 1
    ids = np.full((n, k + 1), pad, dtype=np.uint16 if width == 2 else np.uint32)
    lps = np.full((n, k + 1), -np.inf, dtype=np.float16)
    for j, (tok, lp) in enumerate(zip(payload.tokens, payload.logprobs, strict=True)):
        ids[j, 0], lps[j, 0] = index[tok], lp
        row = payload.top[j][:k] if j < len(payload.top) else []
        for c, (alt, alp) in enumerate(row, start=1):
            ids[j, c], lps[j, c] = index[alt], alp
    vocab = list(index)
    lengths = np.array([len(v) for v in vocab], dtype=np.uint16)
    b64 = lambda a: base64.b64encode(a).decode("ascii")  # noqa: E731
    return {
        "format": FORMAT,
        "k": k,
        "n": n,
        "vocab": b64(b"".join(vocab)),
        "lengths": b64(lengths.tobytes()),
        "ids": b64(ids.tobytes()),
        "width": width,
        "logprobs": b64(lps.tobytes()),
    }


def decode_arrays(data: dict[str, Any]):
    """(vocab bytes list, ids [T, K+1], logprobs [T, K+1] float32, pad id) of an encoded
    payload; ValueError when it is not one."""
    import numpy as np

    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} payload")
    try:
        k, n, width = int(data["k"]), int(data["n"]), int(data["width"])
        raw = base64.b64decode(data["vocab"], validate=True)
        lengths = np.frombuffer(base64.b64decode(data["lengths"], validate=True), dtype=np.uint16)
        ids = np.frombuffer(
            base64.b64decode(data["ids"], validate=True), dtype=np.uint16 if width == 2 else np.uint32
        ).reshape(n, k + 1)
        lps = np.frombuffer(base64.b64decode(data["logprobs"], validate=True), dtype=np.float16).reshape(n, k + 1)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed payload ({type(exc).__name__}: {exc})") from None
    if width not in (2, 4) or int(lengths.sum()) != len(raw):
        raise ValueError("malformed payload (vocabulary lengths do not add up)")
    offsets = np.concatenate(([0], np.cumsum(lengths.astype(np.int64))))
    vocab = [raw[offsets[i] : offsets[i + 1]] for i in range(len(lengths))]
    pad = (1 << (8 * width)) - 1
    used = ids[ids != pad]
    if used.size and int(used.max()) >= len(vocab):
        raise ValueError("malformed payload (token id outside its vocabulary)")
    return vocab, ids, lps.astype(np.float32), pad


def decode(data: dict[str, Any]) -> TokenLogprobs:
    """The payload of an encoded record field (ValueError when malformed)."""
    vocab, ids, lps, pad = decode_arrays(data)
    tokens = [vocab[int(i)] for i in ids[:, 0]] if len(ids) else []
    top = [
        [(vocab[int(i)], float(lp)) for i, lp in zip(row_ids[1:], row_lps[1:], strict=True) if int(i) != pad]
        for row_ids, row_lps in zip(ids, lps, strict=True)
    ]
    return TokenLogprobs(tokens, [float(x) for x in lps[:, 0]] if len(lps) else [], top)


def problems(data: dict[str, Any], teacher_text: str, completion_tokens: int | None) -> list[tuple[str, str]]:
    """(field, message) for everything wrong with a record's payload: as many entries as
    completion tokens, logprobs ≤ 0 and finite, tokens that join to ``teacher_text`` (or decode
    to it with U+FFFD for invalid UTF-8)."""
    import numpy as np

    try:
        vocab, ids, lps, pad = decode_arrays(data)
    except ValueError as exc:
        return [("token_logprobs", str(exc))]
    found = []
    if completion_tokens is not None and len(ids) != completion_tokens:
        found.append(("token_logprobs.n", f"{len(ids)} entries for {completion_tokens} completion tokens"))
    real = lps[ids != pad] if len(ids) else lps.reshape(-1)
    if real.size and not np.isfinite(real).all():
        found.append(("token_logprobs.logprobs", "not finite"))
    elif real.size and float(real.max()) > 1e-3:  # float16 rounds a logprob near 0 to at most +0
        found.append(("token_logprobs.logprobs", f"logprob {float(real.max()):.4g} > 0"))
    joined = b"".join(vocab[int(i)] for i in ids[:, 0]) if len(ids) else b""
    # a generation that is not valid UTF-8 is decoded with U+FFFD for each bad sequence, as the
    # engines' tokenizers do: its payload is still the right one (alignment skips such records)
    if joined != teacher_text.encode("utf-8") and joined.decode("utf-8", errors="replace") != teacher_text:
        at = next((i for i, (a, b) in enumerate(zip(joined, teacher_text.encode("utf-8"))) if a != b), None)
        where = f"byte {at}" if at is not None else f"length {len(joined)} vs {len(teacher_text.encode('utf-8'))}"
        found.append(("token_logprobs.tokens", f"tokens do not join to teacher_text (first difference at {where})"))
    return found


def payload_bytes(data: dict[str, Any] | None) -> int:
    """Bytes the payload takes in its JSONL line (its on-disk size)."""
    if not data:
        return 0
    import json

    return len(json.dumps(data, separators=(",", ":")))


# -- token bytes from a transformers tokenizer ---------------------------------------------


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

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.special = set(getattr(tokenizer, "all_special_ids", []) or [])
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
        if token_id in self.special:
            return b""
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
