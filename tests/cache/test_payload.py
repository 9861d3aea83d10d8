"""The cached per-token payload (teacher.store_logprobs): exact round trip of bytes and
float16 logprobs, located problems, and its size on disk."""

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dante.cache.payload import decode, encode, payload_bytes, problems
from dante.tokens import TokenLogprobs

token = st.binary(min_size=0, max_size=6)
logprob = st.floats(min_value=-30, max_value=0, allow_nan=False)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(token, logprob, st.lists(st.tuples(token, logprob), max_size=5)), max_size=30))
def test_round_trip(rows):
    p = TokenLogprobs([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
    back = decode(json.loads(json.dumps(encode(p, 5))))
    assert back.tokens == p.tokens
    assert back.logprobs == pytest.approx(p.logprobs, rel=1e-3, abs=1e-3)  # float16
    assert [[t for t, _ in row] for row in back.top] == [[t for t, _ in row] for row in p.top]


def test_problems_are_located():
    p = TokenLogprobs([b"Hi", b" there", b""], [-0.1, -0.2, -0.05], [[(b"Hi", -0.1)], [], [(b"", -0.05)]])
    good = encode(p, 2)
    assert problems(good, "Hi there", 3) == []
    assert problems(good, "Hi there", 4) == [("token_logprobs.n", "3 entries for 4 completion tokens")]
    assert problems(good, "Hi thera", 3)[0][0] == "token_logprobs.tokens"
    bad = encode(TokenLogprobs([b"a"], [0.5], [[]]), 2)
    assert problems(bad, "a", 1) == [("token_logprobs.logprobs", "logprob 0.5 > 0")]
    nan = encode(TokenLogprobs([b"a"], [math.nan], [[]]), 2)
    assert problems(nan, "a", 1) == [("token_logprobs.logprobs", "not finite")]
    torn = dict(good, ids=good["ids"][:-4])
    assert problems(torn, "Hi there", 3)[0][1].startswith("malformed payload")


def test_size_per_token():
    """~500 generated tokens drawn from a 2 000-token vocabulary: bytes per token at K=5 and K=20."""
    import random

    rng = random.Random(0)
    vocab = [bytes(rng.choices(range(97, 123), k=rng.randint(1, 6))) for _ in range(2000)]

    def payload(k):
        rows = [rng.choice(vocab) for _ in range(500)]
        return TokenLogprobs(
            rows,
            [-rng.random() for _ in rows],
            [[(rng.choice(vocab), -rng.random() * 5) for _ in range(k)] for _ in rows],
        )

    per5 = payload_bytes(encode(payload(5), 5)) / 500
    per20 = payload_bytes(encode(payload(20), 20)) / 500
    assert 20 < per5 < 80 and 60 < per20 < 250, (per5, per20)
