"""Chunked lm_head + CE (the memory lever for large vocabularies): same value and same gradients
as building the full logits, in the loss function and through the student's own forward."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from dante.models import load_causal_lm
from dante.train.objective.chunked_ce import ChunkedCEHead, ce_chunk_tokens, chunked_weighted_ce_sum
from dante.train.objective.forward import Forward
from dante.train.objective.losses import IGNORE, weighted_ce_sum
from dante.train.sources.collate import collate
from dante.train.sources.examples import make_example

CPU = SimpleNamespace(device=torch.device("cpu"))


def _problem(seed=0, n=53, hidden=24, vocab=301):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(2, n, hidden, generator=g, requires_grad=True)
    w = (0.3 * torch.randn(vocab, hidden, generator=g)).requires_grad_()
    targets = torch.randint(0, vocab, (2, n), generator=g)
    targets[0, :9] = IGNORE  # a prompt
    targets[1, 40:] = IGNORE  # padding
    weights = torch.rand(2, n, generator=g) * (targets != IGNORE)
    return h, w, targets, weights


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_chunked_ce_equals_plain_ce_in_value_and_gradient(chunk):
    h, w, targets, weights = _problem()
    plain = weighted_ce_sum(h @ w.t(), targets, weights)
    chunked = chunked_weighted_ce_sum(h, w, targets, weights, chunk_tokens=chunk)
    assert chunked[0].item() == pytest.approx(plain[0].item(), rel=1e-6)
    assert chunked[1].item() == pytest.approx(plain[1].item(), rel=1e-6)
    g_plain = torch.autograd.grad(0.37 * plain[0], [h, w])
    g_chunked = torch.autograd.grad(0.37 * chunked[0], [h, w])
    for a, b in zip(g_chunked, g_plain):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_chunked_ce_without_grad_gives_the_same_sums():
    h, w, targets, weights = _problem(seed=1)
    with torch.no_grad():
        plain = weighted_ce_sum(h @ w.t(), targets, weights)
        chunked = chunked_weighted_ce_sum(h, w, targets, weights, chunk_tokens=5)
    assert not chunked[0].requires_grad
    assert torch.allclose(torch.stack(chunked[:2]), torch.stack(plain), rtol=1e-6)


def test_chunked_ce_under_bf16_autocast_stays_close_to_fp32():
    h, w, targets, weights = _problem(seed=2)
    exact = chunked_weighted_ce_sum(h, w, targets, weights)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        approx = chunked_weighted_ce_sum(h, w, targets, weights, chunk_tokens=16)
    assert approx[0].dtype == torch.float32
    assert approx[0].item() == pytest.approx(exact.item(), rel=2e-2)
    grads = torch.autograd.grad(approx[0], [h, w])
    assert grads[0].dtype == h.dtype and grads[1].dtype == w.dtype


def test_chunk_size_keeps_the_cpu_tile_small():
    assert ce_chunk_tokens(49152, torch.device("cpu")) * 49152 * 4 <= 32 << 20
    assert ce_chunk_tokens(262144, torch.device("cpu")) == 128
    assert ce_chunk_tokens(128256, torch.device("cuda")) >= 512


@pytest.mark.parametrize("packing", [True, False])
@pytest.mark.parametrize("tie", [True, False])
def test_forward_with_chunked_head_matches_full_logits(tmp_path, packing, tie):
    from tiny import make_model, make_tokenizer  # tests/ is on sys.path (tests/conftest.py)

    tok = make_tokenizer(tmp_path, flavour="student", vocab_size=320)
    make_model(tmp_path, tok, tie=tie, seed=3)
    model = load_causal_lm(str(tmp_path), dtype="float32", attn_implementation="sdpa")
    examples = [
        make_example("a", [5, 6, 7], [8, 9, 10, 11, 2], 0.3, False),
        make_example("b", [12, 13], [14, 15, 2], 2.0, False),
        make_example("c", [16], [17, 18, 19, 20, 21, 22, 2], 1.1, False),
    ]
    batch = collate(examples, [0.9, 0.4, 0.7], packing=packing, pad_id=0)
    params = list(model.parameters())

    plain = Forward(model, model, CPU).loss_sums(batch)
    g_plain = torch.autograd.grad(plain["objective"], params)
    fused = Forward(model, model, CPU, chunked_ce=True)
    assert fused.head is not None
    chunked = fused.loss_sums(batch)
    g_chunked = torch.autograd.grad(chunked["objective"], params)
    assert chunked["objective"].item() == pytest.approx(plain["objective"].item(), rel=1e-5)
    assert chunked["ce"].item() == pytest.approx(plain["ce"].item(), rel=1e-5)
    assert chunked["cwce"].item() == pytest.approx(plain["cwce"].item(), rel=1e-5)
    for a, b in zip(g_chunked, g_plain):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    # unarmed, the head is the plain lm_head: logits for generation and evaluation are unchanged
    logits = fused(batch)[0]
    assert logits.shape[-1] == model.config.vocab_size


def test_heads_that_rescale_logits_use_the_plain_path(tmp_path):
    from tiny import make_model, make_tokenizer

    tok = make_tokenizer(tmp_path, flavour="student", vocab_size=320)
    model = make_model(tmp_path, tok)
    assert ChunkedCEHead.supports(model)
    model.config.final_logit_softcapping = 30.0  # Gemma-2 style: tanh on the logits
    assert not ChunkedCEHead.supports(model)
    assert Forward(model, model, CPU, chunked_ce=True).head is None


def test_a_second_backward_is_refused_not_silently_wrong():
    from dante.train.model.anchor import tea_penalty

    h, w, targets, weights = _problem(seed=4)
    wsum = chunked_weighted_ce_sum(h, w, targets, weights)[0]
    wsum.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        wsum.backward()
    e = torch.randn(5, 3, requires_grad=True)
    tea = tea_penalty(e, torch.zeros(5, 3))
    tea.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        tea.backward()
