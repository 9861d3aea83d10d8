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
