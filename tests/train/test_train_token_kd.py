"""Token-level distillation's loss: the sparse top-K KL with its tail by hand and against a
direct PyTorch computation, the chunked kernel against the plain form (value and gradients,
bf16), and weight 0 giving exactly the text-only loss and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from dante.config import LossConfig
from dante.train.objective.chunked_ce import chunked_loss_parts, chunked_weighted_ce_sum
from dante.train.objective.losses import IGNORE, lambda_kd, sparse_kd_sum, sparse_kl_terms, weighted_ce_sum


def test_sparse_kd_by_hand():
    # student p = softmax(log [.5, .3, .2]); teacher names tokens 0 and 2 with q = .6, .1 (tail .3)
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    ids, probs = torch.tensor([[0, 2]]), torch.tensor([[0.6, 0.1]])
    got = sparse_kd_sum(logits, ids, probs, torch.tensor([2.0]))
    kl = 0.6 * math.log(0.6 / 0.5) + 0.1 * math.log(0.1 / 0.2) + 0.3 * math.log(0.3 / 0.3)
    assert got.item() == pytest.approx(2.0 * kl, rel=1e-6)
    # the same distributions on M ∪ {other}: KL is 0 when they agree
    same = sparse_kd_sum(logits, ids, torch.tensor([[0.5, 0.2]]), torch.tensor([1.0]))
    assert same.item() == pytest.approx(0.0, abs=1e-7)
    # pads (−1) are ignored: one named token, the rest is tail
    one = sparse_kd_sum(logits, torch.tensor([[1, -1]]), torch.tensor([[0.9, 0.0]]), torch.tensor([1.0]))
    assert one.item() == pytest.approx(0.9 * math.log(0.9 / 0.3) + 0.1 * math.log(0.1 / 0.7), rel=1e-6)


def _direct_kl(logits, ids, probs, weights):
    """The KL written out with plain PyTorch: both distributions on M ∪ {other}, then KL."""
    total = torch.zeros(())
    p = torch.softmax(logits, -1)
    for t in range(logits.shape[0]):
        m = [int(i) for i in ids[t] if i >= 0]
        q = probs[t][: len(m)]
        pt = torch.cat([p[t, m], (1 - p[t, m].sum()).reshape(1)])
        qt = torch.cat([q, (1 - q.sum()).clamp_min(0).reshape(1)])
        total = total + weights[t] * torch.nn.functional.kl_div(pt.log(), qt, reduction="sum")
    return total


def test_sparse_kd_gradient_matches_a_direct_pytorch_computation():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 11, generator=g, requires_grad=True)
    ids = torch.tensor([[0, 3, 5], [2, -1, -1], [1, 4, 9], [7, 8, -1], [10, 0, 1], [6, -1, -1]])
    probs = torch.rand(6, 3, generator=g) * (ids >= 0) * 0.3
    weights = torch.rand(6, generator=g)
    a = sparse_kd_sum(logits, ids, probs, weights)
    b = _direct_kl(logits, ids, probs, weights)
    assert a.item() == pytest.approx(b.item(), rel=1e-5)
    ga, gb = torch.autograd.grad(a, logits)[0], torch.autograd.grad(b, logits)[0]
    assert torch.allclose(ga, gb, atol=1e-6)


def _problem(seed=0, n=41, hidden=16, vocab=97, k=5):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(1, n, hidden, generator=g, requires_grad=True)
    w = (0.4 * torch.randn(vocab, hidden, generator=g)).requires_grad_()
    targets = torch.randint(0, vocab, (1, n), generator=g)
    targets[0, :7] = IGNORE
    weights = torch.rand(1, n, generator=g) * (targets != IGNORE)
    ids = torch.stack([torch.randperm(vocab, generator=g)[:k] for _ in range(n)])[None]
    ids[0, ::3, 2:] = -1  # some positions name fewer tokens
    probs = torch.rand(1, n, k, generator=g)
    probs = probs / probs.sum(-1, keepdim=True) * 0.9 * (ids >= 0)
    v = 0.7 * weights * (torch.arange(n) % 4 != 0)  # no payload at every 4th position
    return h, w, targets, weights, (ids, probs, v)


@pytest.mark.parametrize(
    ("chunk", "reverse", "kappa"),
    [(1, False, 1.0), (6, False, 1.0), (1000, False, 1.0), (1, True, 0.7), (1000, True, 0.7)],
)
def test_chunked_kernel_equals_the_plain_form_in_value_and_gradient(chunk, reverse, kappa):
    """Forward KL (token-level KD) and reverse KL with signed CE weights (on-policy's dense term
    next to its advantages): the kernel's value and gradients equal the plain form's."""
    h, w, targets, weights, kd = _problem(seed=4 if reverse else 0)
    if reverse:
        weights = weights - 0.5 * (targets != IGNORE)  # signed weights, as on-policy advantages are
    logits = h @ w.t()
    keep = (targets != IGNORE).reshape(-1)
    ce, _ = weighted_ce_sum(logits, targets, weights)
    kl = sparse_kd_sum(
        logits.reshape(-1, w.shape[0])[keep],
        kd[0].reshape(-1, 5)[keep],
        kd[1].reshape(-1, 5)[keep],
        kd[2].reshape(-1)[keep],
        reverse=reverse,
    )
    parts = chunked_loss_parts(h, w, targets, weights, chunk_tokens=chunk, kd=kd, kd_scale=kappa, reverse=reverse)
    total = parts["objective"]
    assert total.item() == pytest.approx((ce + kappa * kl).item(), rel=1e-5)
    assert parts["token_kd"].item() == pytest.approx(kl.item(), rel=1e-5)
    g_plain = torch.autograd.grad(0.3 * (ce + kappa * kl), [h, w])
    g_chunked = torch.autograd.grad(0.3 * total, [h, w])
    for a, b in zip(g_chunked, g_plain, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_weight_zero_is_exactly_the_text_only_loss():
    h, w, targets, weights, (ids, probs, v) = _problem(seed=1)
    text = chunked_weighted_ce_sum(h, w, targets, weights)
    zero = chunked_weighted_ce_sum(h, w, targets, weights, kd=(ids, probs, torch.zeros_like(v)))
    assert torch.equal(text[0], zero[0]) and zero[2].item() == 0.0
    ga = torch.autograd.grad(text[0], [h, w])
    gb = torch.autograd.grad(zero[0], [h, w])
    assert all(torch.equal(a, b) for a, b in zip(ga, gb, strict=True))


def test_bf16_autocast_stays_close():
    h, w, targets, weights, kd = _problem(seed=2)
    exact = chunked_weighted_ce_sum(h, w, targets, weights, kd=kd)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        approx = chunked_weighted_ce_sum(h, w, targets, weights, chunk_tokens=8, kd=kd)
    assert approx[2].item() == pytest.approx(exact[2].item(), rel=3e-2)
    ga = torch.autograd.grad(approx[0], [h])[0]
    gb = torch.autograd.grad(exact[0], [h])[0]
    assert torch.nn.functional.cosine_similarity(ga.flatten(), gb.flatten(), dim=0) > 0.99


def test_lambda_kd_schedule():
    cfg = LossConfig(
        token_kd={"weight": 0.5, "schedule": True, "start": 0.1}, cwce={"warmup_steps": 10, "ramp_end": 20}
    )
    assert [lambda_kd(t, cfg) for t in (1, 10, 15, 20, 30)] == pytest.approx([0.1, 0.1, 0.3, 0.5, 0.5])
    assert lambda_kd(5, LossConfig(token_kd={"weight": 0.5})) == 0.5
    assert lambda_kd(5, LossConfig()) == 0.0


def _payload_rows(teacher_dir, rows, k=4):
    """Give each learnable record the payload a confident teacher would write: its text in the
    teacher tokenizer's tokens, the generated token at p = .8 and k − 1 alternatives after it."""
    from transformers import AutoTokenizer

    from dante.cache.payload import encode
    from dante.tokens import TokenBytes, TokenLogprobs

    tok = AutoTokenizer.from_pretrained(teacher_dir)
    tb = TokenBytes(tok)
    vocab = [i for i in range(len(tok)) if tb(i)]
    for n, row in enumerate(rows):
        ids = tok(row["teacher_text"], add_special_tokens=False)["input_ids"]
        alts = [
            [(tb(i), math.log(0.8))] + [(tb(vocab[(i * 7 + j + n) % len(vocab)]), math.log(0.05)) for j in range(k - 1)]
            for i in ids
        ]
        payload = TokenLogprobs([tb(i) for i in ids], [math.log(0.8)] * len(ids), alts)
        row["token_logprobs"] = encode(payload, k)
        row["completion_tokens"] = len(ids)
    return rows


def test_training_with_token_kd_runs_and_lowers_the_held_out_loss(tmp_path, teacher_dir, student_dir):
    import json as _json

    from train_helpers import make_cache_lines, recipe_data, write_cache

    from dante.cache.records import validate_cache
    from dante.config import load_recipe
    from dante.train.loop import train

    rows = _payload_rows(teacher_dir, make_cache_lines(32))
    cache = write_cache(tmp_path / "cache", rows)
    assert validate_cache(cache)[1] == []
    data = recipe_data(tmp_path, student_dir, cache, steps=12, eval_fraction=0.25, eval_every=12)
    data["train"]["loss"] = {"token_kd": {"weight": 1.0}}
    result = train(load_recipe(data=data))
    assert result.eval_loss < result.initial_eval_loss
    manifest = _json.loads(result.manifest_path.read_text())
    kd = manifest["data"]["token_kd"]
    assert kd["aligned"] == kd["records"] == 24 and kd["positions"] > 0 and 0 < kd["one_to_one_share"] <= 1
    metrics = [_json.loads(line) for line in (result.output_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(m["token_kd"] > 0 and m["lambda_kd"] == 1.0 for m in metrics if "loss" in m)


def test_token_kd_without_payload_is_a_clear_error(tmp_path, student_dir, tiny_cache):
    from train_helpers import recipe_data

    from dante.config import load_recipe
    from dante.errors import DanteError
    from dante.train.loop import train

    data = recipe_data(tmp_path, student_dir, tiny_cache)
    data["train"]["loss"] = {"token_kd": {"weight": 1.0}}
    with pytest.raises(DanteError, match="store_logprobs"):
        train(load_recipe(data=data))


def _kd_recipe(tmp_path, name, teacher_dir, student_dir, **train_kw):
    from train_helpers import make_cache_lines, recipe_data, write_cache

    cache = tmp_path / "cache"
    if not cache.exists():
        write_cache(cache, _payload_rows(teacher_dir, make_cache_lines(24)))
    data = recipe_data(tmp_path / name, student_dir, cache, **train_kw)
    data["train"]["loss"] = {"token_kd": {"weight": 0.7}}
    return data


def _losses(path):
    import json as _json

    return [r["loss"] for r in map(_json.loads, path.read_text().splitlines()) if "loss" in r]


def test_token_kd_accumulation_and_two_processes_match_one_process(tmp_path, teacher_dir, student_dir):
    """The KL rides on the CE's global normaliser: 4 micro-batches of 1 give the losses of 1
    micro-batch of 4, and DDP on 2 CPU ranks gives the losses of 1 process."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    from dante.config import load_recipe
    from dante.train.loop import train

    kw = {"steps": 4, "batch_sequences": 4}
    whole = train(load_recipe(data=_kd_recipe(tmp_path, "whole", teacher_dir, student_dir, micro_batch_size=4, **kw)))
    split = train(load_recipe(data=_kd_recipe(tmp_path, "split", teacher_dir, student_dir, micro_batch_size=1, **kw)))
    assert _losses(split.metrics_path) == pytest.approx(_losses(whole.metrics_path), rel=1e-4)
    recipe_file = tmp_path / "two.yaml"
    recipe_file.write_text(
        yaml.safe_dump(_kd_recipe(tmp_path, "two", teacher_dir, student_dir, micro_batch_size=1, **kw))
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29533",
        "-m",
        "dante.cli",
        "train",
        str(recipe_file),
    ]
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    two = tmp_path / "two" / "run" / "student" / "metrics.jsonl"
    assert _losses(two) == pytest.approx(_losses(whole.metrics_path), rel=1e-4)


# -- the reverse direction (on-policy's dense term: KL(p ‖ q) on the student's own samples) ------


def test_reverse_sparse_kl_by_hand():
    # p = [.5, .3, .2]; the teacher names tokens 0 and 2 with q = .6, .1 (tail .3): KL(p ‖ q) on {0, 2, other}
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    ids, probs = torch.tensor([[0, 2]]), torch.tensor([[0.6, 0.1]])
    got = sparse_kd_sum(logits, ids, probs, torch.tensor([2.0]), reverse=True)
    kl = 0.5 * math.log(0.5 / 0.6) + 0.2 * math.log(0.2 / 0.1) + 0.3 * math.log(0.3 / 0.3)
    assert got.item() == pytest.approx(2.0 * kl, rel=1e-6)
    same = sparse_kd_sum(logits, ids, torch.tensor([[0.5, 0.2]]), torch.tensor([1.0]), reverse=True)
    assert same.item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("reverse", [False, True])
def test_the_closed_form_gradient_equals_autograd(reverse):
    """``sparse_kl_terms``' row / at_ids (what the chunked kernel uses) against autograd of KL_t."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(6, 11, generator=g, requires_grad=True)
    ids = torch.tensor([[0, 3, 5], [2, -1, -1], [1, 4, 9], [7, 8, -1], [10, 0, 1], [6, -1, -1]])
    probs = torch.rand(6, 3, generator=g) * (ids >= 0) * 0.3
    lp = torch.log_softmax(logits, -1)
    terms = sparse_kl_terms(lp.gather(1, ids.clamp_min(0)), ids, probs, reverse)
    (auto,) = torch.autograd.grad(terms.kl.sum(), logits)
    p = lp.exp().detach()
    closed = p * terms.row.detach()[:, None]
    closed = closed.scatter_add(1, ids.clamp_min(0), torch.where(ids >= 0, terms.at_ids.detach(), 0.0))
    assert torch.allclose(closed, auto, atol=1e-6)
    if reverse:
        assert torch.allclose(terms.kl, _direct_kl_reverse(logits, ids, probs), atol=1e-6)


def _direct_kl_reverse(logits, ids, probs):
    p = torch.softmax(logits, -1)
    out = []
    for t in range(logits.shape[0]):
        m = [int(i) for i in ids[t] if i >= 0]
        pt = torch.cat([p[t, m], (1 - p[t, m].sum()).reshape(1)])
        qt = torch.cat([probs[t][: len(m)], (1 - probs[t][: len(m)].sum()).reshape(1)])
        out.append((pt * (pt.log() - qt.log())).sum())
    return torch.stack(out)
