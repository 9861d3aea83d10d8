"""The cache record's token-logprob payload (stage 2, ``CacheRecord.token_logprobs``): its on-disk
form, encoded, decoded and checked in one place, read by the cache (validate, stats, export) and
by the trainer (token-level distillation); the teacher only produces the ``TokenLogprobs``.

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
import json
from typing import Any

import numpy as np

from dante.tokens import TokenLogprobs

FORMAT = "dante-logprobs/1"


def encode(payload: TokenLogprobs, k: int | None = None) -> dict[str, Any]:
    """The compact JSON form of a payload (see the module docstring)."""
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


def problems(
    data: dict[str, Any],
    teacher_text: str,
    completion_tokens: int | None,
    reasoning_tokens: int | None = None,
    teacher_reasoning: str | None = None,
) -> list[tuple[str, str]]:
    """(field, message) for everything wrong with a record's payload: as many entries as
    completion tokens, logprobs ≤ 0 and finite, tokens that join to ``teacher_text`` (or decode
    to it with U+FFFD for invalid UTF-8). With reasoning, ``dante.teacher.reasoning``'s rule:
    the first ``reasoning_tokens`` spell ``teacher_reasoning`` between the thinking markers, the
    rest the whitespace before the answer and the answer."""
    from dante.teacher.reasoning import payload_problem

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
    tokens = [vocab[int(i)] for i in ids[:, 0]] if len(ids) else []
    # a generation that is not valid UTF-8 is decoded with U+FFFD for each bad sequence, as the
    # engines' tokenizers do: its payload is still the right one (alignment skips such records)
    wrong = payload_problem(tokens, reasoning_tokens, teacher_reasoning, teacher_text)
    if wrong is not None:
        field = "reasoning_tokens" if wrong.startswith("reasoning_tokens") else "token_logprobs.tokens"
        found.append((field, wrong))
    return found


def payload_bytes(data: dict[str, Any] | None) -> int:
    """Bytes the payload takes in its JSONL line (its on-disk size)."""
    if not data:
        return 0
    return len(json.dumps(data, separators=(",", ":")))
