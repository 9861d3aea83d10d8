"""vllm teacher: mapping vLLM's output objects to Generations (vLLM itself needs a GPU)."""

import math
from collections import namedtuple
from types import SimpleNamespace

import pytest

from dante.config import TeacherConfig
from dante.errors import DanteError
from dante.teacher.vllm import generation_from_vllm, generations_from_request_outputs

Logprob = namedtuple("Logprob", "logprob rank decoded_token")  # vllm.sequence.Logprob's fields


def test_request_outputs_map_to_generations():
    ln = math.log
    # token 1: top-2 {7: .5, 9: .25}; token 2: sampled token 3 is outside the top 2 (rank 5): ignored
    pos1 = {7: Logprob(ln(0.5), 1, "a"), 9: Logprob(ln(0.25), 2, "b")}
    pos2 = {3: Logprob(ln(0.01), 5, "z"), 4: Logprob(ln(0.9), 1, "c"), 5: Logprob(ln(0.1), 2, "d")}
    comp = SimpleNamespace(index=0, text="ab", token_ids=[7, 3], logprobs=[pos1, pos2], finish_reason="length")
    ro = SimpleNamespace(prompt_token_ids=[1, 2, 3, 4], outputs=[comp])
    [[g]] = generations_from_request_outputs([ro], k=2)
    h1 = 1.5 * math.log(2)
    h2 = -(0.9 * ln(0.9) + 0.1 * ln(0.1))  # tail 0: exact
    assert g.token_entropies == pytest.approx([h1, h2])
    assert g.output_entropy == pytest.approx((h1 + h2) / 2)
    assert (g.text, g.completion_tokens, g.finish_reason, g.prompt_tokens) == ("ab", 2, "length", 4)


def test_no_logprobs_requested_gives_null_entropy():
    comp = SimpleNamespace(text="x", token_ids=[1, 2, 3], logprobs=None, finish_reason="stop")
    g = generation_from_vllm(comp, k=0)
    assert g.token_entropies is None and g.output_entropy is None and g.completion_tokens == 3


def test_backend_without_vllm_installed_says_how_to_install():
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401
    except ImportError:
        from dante.teacher import make_teacher

        with pytest.raises(DanteError, match="vllm"):
            make_teacher(TeacherConfig(backend="vllm", model="Qwen/Qwen2.5-0.5B-Instruct"))
    else:
        pytest.skip("vLLM installed")


def test_stored_payload_takes_bytes_from_the_engine_tokenizer_and_ranks():
    """store K: the generated token's logprob (even outside the top K) and the top K by rank;
    bytes from the token ids, so a multi-byte character split over two tokens joins back."""
    ln = math.log
    vocab = {7: b"\xc3", 9: b"b", 3: b"\xa9", 4: b"c", 5: b"d"}  # "é" = c3 a9, split over tokens 7 and 3
    pos1 = {7: Logprob(ln(0.5), 1, "\ufffd"), 9: Logprob(ln(0.25), 2, "b")}
    pos2 = {3: Logprob(ln(0.01), 5, "\ufffd"), 4: Logprob(ln(0.9), 1, "c"), 5: Logprob(ln(0.1), 2, "d")}
    comp = SimpleNamespace(index=0, text="é", token_ids=[7, 3], logprobs=[pos1, pos2], finish_reason="length")
    g = generation_from_vllm(comp, k=2, store=2, token_bytes=lambda i: vocab[i])
    p = g.token_logprobs
    assert p.tokens == [b"\xc3", b"\xa9"] and p.text_bytes().decode() == "é"
    assert p.logprobs == pytest.approx([ln(0.5), ln(0.01)])
    assert p.top == [
        [(b"\xc3", pytest.approx(ln(0.5))), (b"b", pytest.approx(ln(0.25)))],
        [(b"c", pytest.approx(ln(0.9))), (b"d", pytest.approx(ln(0.1)))],
    ]
