"""The DANTE loss pieces: hand-computed values and gradients against direct PyTorch."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from dante.config import LossConfig
from dante.models import load_causal_lm, load_tokenizer
from dante.train.model.anchor import TeaAnchor, tea_penalty
from dante.train.objective.forward import Forward
from dante.train.objective.losses import (
    batch_weights,
    cwce_weight,
    lambda_ce,
    lambda_tea,
    normaliser,
    record_weight,
    token_weights,
    weighted_ce_sum,
)
from dante.train.sources.collate import collate
from dante.train.sources.examples import make_example


def test_cwce_weight_hand_values():
    assert cwce_weight(0.0) == pytest.approx(0.30 + 0.70 / (1 + math.exp(-2.25)))
    assert cwce_weight(0.0) == pytest.approx(0.9333, abs=1e-4)  # the brief rounds it to 0.934
    assert cwce_weight(1.5) == pytest.approx(0.65)
    assert cwce_weight(1e6) == pytest.approx(0.30)
    t = cwce_weight(torch.tensor([0.0, 1.5, 50.0]))
    assert torch.allclose(t, torch.tensor([0.93326, 0.65, 0.30]), atol=1e-4)
    cfg = LossConfig(cwce={"floor": 0.5, "span": 0.5, "center": 0.0, "slope": 1.0})
    assert cwce_weight(0.0, cfg) == pytest.approx(0.75)


def test_lambda_schedules_hand_values():
    assert lambda_ce(1) == pytest.approx(0.70)
    assert lambda_ce(200) == pytest.approx(0.70)
    assert lambda_ce(1100) == pytest.approx(0.85)
    assert lambda_ce(2000) == pytest.approx(1.0)
    assert lambda_ce(5000) == pytest.approx(1.0)
    assert lambda_ce(10, LossConfig(cwce={"schedule": False})) == 1.0
    assert lambda_tea(1, 2000) == pytest.approx(1.0)
    assert lambda_tea(2000, 2000) == pytest.approx(0.1)
    assert lambda_tea(1000, 2000) == pytest.approx(1.0 - 0.9 * 999 / 1999)
    vals = [lambda_tea(t, 50) for t in range(1, 51)]
    assert all(a > b for a, b in zip(vals, vals[1:]))  # linear, decreasing
    assert lambda_tea(3, 50, LossConfig(tea={"enabled": False})) == 0.0


def test_tea_penalty_is_squared_frobenius_and_rejects_trainable_snapshot():
    e = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    e0 = torch.tensor([[1.0, 0.0], [0.0, 4.0]])
    val = tea_penalty(e, e0)
    assert val.item() == pytest.approx(4.0 + 9.0)
    val.backward()
    assert torch.equal(e.grad, 2 * (e.detach() - e0))
    with pytest.raises(ValueError):
        tea_penalty(e, e.clone())


@pytest.mark.parametrize("tie", [True, False])
def test_tea_anchor_snapshot_is_a_detached_buffer_of_the_input_embedding(tmp_path, tie):
    from tiny import make_model, make_tokenizer  # tests/ is on sys.path (tests/conftest.py)

    tok = make_tokenizer(tmp_path, flavour="student", vocab_size=320)
    model = make_model(tmp_path, tok, tie=tie)
    anchor = TeaAnchor(model.get_input_embeddings().weight).attach(model)
    emb = model.get_input_embeddings().weight
    assert anchor.snapshot.shape == emb.shape and anchor.snapshot.dtype == emb.dtype
    assert not anchor.snapshot.requires_grad and anchor.snapshot.data_ptr() != emb.data_ptr()
    assert "snapshot" not in model.state_dict() and all(p is not anchor.snapshot for p in model.parameters())
    with torch.no_grad():
        emb.add_(0.01)
    anchor.arm()
    model(input_ids=torch.tensor([[1, 2, 3]]))
    value = anchor.take()
    assert value.item() == pytest.approx(emb.numel() * 1e-4, rel=1e-3)
    value.backward()
    # tied: lm_head is the same parameter, one gradient; untied: only the input embedding moves
    assert torch.allclose(emb.grad, torch.full_like(emb, 0.02), atol=1e-5)
    if not tie:
        assert model.get_output_embeddings().weight.grad is None


def _direct_loss(model, records, e0, lam_ce_v, lam_tea_v, normalise):
    """The objective written out by hand: per record, full forward, shift, masked CE."""
    num, den = 0.0, 0.0
    for prompt_ids, completion_ids, h in records:
        ids = torch.tensor([prompt_ids + completion_ids])
        logits = model(input_ids=ids).logits[0, :-1].float()
        labels = ids[0, 1:].clone()
        labels[: len(prompt_ids) - 1] = -100
        ce = F.cross_entropy(logits, labels, reduction="none", ignore_index=-100)[len(prompt_ids) - 1 :]
        w = 0.30 + 0.70 / (1 + math.exp(1.5 * (h - 1.5)))
        if normalise == "token":
            num, den = num + w * ce.sum(), den + w * len(ce)
        else:
            num, den = num + w * ce.mean(), den + w
    emb = model.get_input_embeddings().weight
    return lam_ce_v * num / den + lam_tea_v * ((emb - e0) ** 2).sum()


@pytest.mark.parametrize("normalise", ["token", "sequence"])
def test_combined_loss_gradient_matches_direct_pytorch(student_dir, normalise):
    torch.manual_seed(0)
    tok = load_tokenizer(str(student_dir))
    model = load_causal_lm(str(student_dir), dtype="float32", attn_implementation="sdpa")
    e0 = model.get_input_embeddings().weight.detach().clone()
    with torch.no_grad():  # move away from the snapshot so the TEA gradient is not zero
        model.get_input_embeddings().weight.add_(0.01 * torch.randn_like(e0))
    raw = [
        (tok("Question: what is 2 + 3?")["input_ids"], tok(" Answer: 5.")["input_ids"] + [tok.eos_token_id], 0.2),
        (tok("The quick brown")["input_ids"], tok(" fox jumps over the lazy dog.")["input_ids"], 2.7),
        (tok("def add(a, b):")["input_ids"], tok("\n    return a + b\n")["input_ids"], 1.5),
    ]
    cfg = LossConfig(cwce={"normalise": normalise})
    step, total = 300, 1000
    lam_c, lam_t = lambda_ce(step, cfg), lambda_tea(step, total, cfg)

    direct = _direct_loss(model, raw, e0, lam_c, lam_t, normalise)
    g_direct = torch.autograd.grad(direct, list(model.parameters()))

    examples = [make_example(f"r{i}", p, c, h, False) for i, (p, c, h) in enumerate(raw)]
    u = [token_weights(cwce_weight(ex.entropy, cfg), ex.n_completion, normalise) for ex in examples]
    denom = normaliser([ex.n_completion for ex in examples], u, normalise)
    anchor = TeaAnchor(e0).attach(model)
    fwd = Forward(model, model, SimpleNamespace(device=torch.device("cpu")))
    total_loss = 0.0
    for k, group in enumerate([[0, 1], [2]]):  # two micro-batches, packed
        if k == 1:
            anchor.arm()
        logits, targets, weights = fwd(
            collate([examples[i] for i in group], [u[i] for i in group], packing=True, pad_id=0)
        )
        wsum, _ = weighted_ce_sum(logits, targets, weights)
        loss = lam_c * wsum / denom
        if k == 1:
            loss = loss + lam_t * anchor.take()
        total_loss = total_loss + loss
    g_ours = torch.autograd.grad(total_loss, list(model.parameters()))
    assert total_loss.item() == pytest.approx(direct.item(), rel=1e-5)
    for a, b in zip(g_ours, g_direct):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_card_normalisation_is_sequence_times_mean_weight():
    exs = [make_example("a", [1, 2], [3, 4, 5], 0.1, False), make_example("b", [1], [6], 2.5, False)]
    w = [cwce_weight(e.entropy) for e in exs]
    us = [token_weights(wi, e.n_completion, "sequence") for wi, e in zip(w, exs)]
    uc = [token_weights(wi, e.n_completion, "card") for wi, e in zip(w, exs)]
    n = [e.n_completion for e in exs]
    assert normaliser(n, us, "sequence") == pytest.approx(sum(w))
    assert normaliser(n, uc, "card") == 2.0
    assert normaliser(
        n, [token_weights(wi, e.n_completion, "token") for wi, e in zip(w, exs)], "token"
    ) == pytest.approx(3 * w[0] + w[1])


def test_record_weight_and_batch_weights_hand_values():
    cfg = LossConfig()  # the card: w(0) = 0.30 + 0.70 / (1 + exp(-2.25)), w(1.5) = 0.65
    w0 = 0.30 + 0.70 / (1 + math.exp(-2.25))
    assert record_weight(0.0, cfg) == pytest.approx(w0)
    assert record_weight(None, cfg) == 1.0  # no logprobs: full weight
    assert record_weight(1.5, LossConfig(cwce={"weighted": False})) == 1.0
    # two records: H = 0 with 2 completion tokens, H = 1.5 with 4
    u, d = batch_weights([0.0, 1.5], [2, 4], LossConfig(cwce={"normalise": "token"}))
    assert u == pytest.approx([w0, 0.65]) and d == pytest.approx(2 * w0 + 4 * 0.65)
    u, d = batch_weights([0.0, 1.5], [2, 4], LossConfig(cwce={"normalise": "sequence"}))
    assert u == pytest.approx([w0 / 2, 0.65 / 4]) and d == pytest.approx(w0 + 0.65)
    u, d = batch_weights([0.0, 1.5], [2, 4], LossConfig(cwce={"normalise": "card"}))
    assert u == pytest.approx([w0 / 2, 0.65 / 4]) and d == 2.0
    u, d = batch_weights([0.0, None], [2, 4], LossConfig(cwce={"weighted": False, "normalise": "token"}))
    assert u == [1.0, 1.0] and d == 6.0  # plain SFT: the mean token CE


def test_loss_constants_that_make_no_sense_are_refused():
    from pydantic import ValidationError

    for bad in (
        {"cwce": {"floor": -0.1}},
        {"cwce": {"slope": 0.0}},
        {"cwce": {"span": -0.5}},
        {"tea": {"start": -1.0}},
        {"cwce": {"start": 0.0}},
        {"cwce": {"warmup_steps": 10, "ramp_end": 10}},
    ):
        with pytest.raises(ValidationError):
            LossConfig(**bad)
    LossConfig(cwce={"schedule": False, "warmup_steps": 10, "ramp_end": 10})  # no ramp: the pair does not matter
