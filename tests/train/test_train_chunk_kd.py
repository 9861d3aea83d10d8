"""The chunk term (approximate likelihood matching on every aligned chunk): the binarised
divergence by hand, its closed-form gradient against autograd, the fused lm_head's re-weighted CE
against the plain autograd form (value and gradients, chunks across tiles), the targets built from
a record's payload, and a tiny training run with it on."""

from __future__ import annotations

import json
import math

import pytest
import torch

from dante.config import TrainConfig
from dante.tokens import TokenLogprobs
from dante.train.align import align
from dante.train.objective.chunked_ce import chunked_parts
from dante.train.objective.losses import CHUNK_EPS, IGNORE, chunk_binary_kl, chunk_binary_kl_grad, weighted_ce_sum
from dante.train.objective.targets import Aligned, ChunkLikelihoods, Span
from dante.train.objective.terms import ChunkLikelihood, CrossEntropy, plain_parts
from dante.train.sources.collate import collate
from dante.train.sources.examples import Example


def _bkl(lt: float, ls: float, tau: float) -> float:
    a, b = lt / tau - CHUNK_EPS, ls / tau - CHUNK_EPS
    q, p = math.exp(a), math.exp(b)
    return tau * (q * math.log(q / p) + (1 - q) * math.log((1 - q) / (1 - p)))


def test_binary_kl_by_hand():
    # teacher gives the chunk probability 0.5 (l = log .5), the student 0.25, at τ = 1
    got = chunk_binary_kl(torch.tensor([math.log(0.25)]), torch.tensor([math.log(0.5)]), temperature=1.0)
    assert got.item() == pytest.approx(0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75), rel=1e-5)
    # zero at a match, positive otherwise, on both sides, at ALM's τ = 100 too
    lt = torch.tensor([-0.1, -2.0, -7.0, -2.0, -2.0])
    ls = torch.tensor([-0.1, -2.0, -7.0, -0.5, -5.0])
    for tau in (1.0, 100.0):
        kl = chunk_binary_kl(ls, lt, tau)
        assert torch.allclose(kl[:3], torch.zeros(3), atol=1e-5)
        assert (kl[3:] > 1e-3).all()
        for i in range(5):
            assert kl[i].item() == pytest.approx(_bkl(lt[i].item(), ls[i].item(), tau), rel=1e-3, abs=1e-6)


def test_large_temperature_tends_to_the_generalised_kl_of_the_surprisals():
    lt, ls, tau = torch.tensor([-3.0]), torch.tensor([-1.5]), 1000.0
    s_t, s_s = 3.0 + tau * CHUNK_EPS, 1.5 + tau * CHUNK_EPS  # ε shifts each surprisal by τ·ε
    limit = s_t * math.log(s_t / s_s) - s_t + s_s
    assert chunk_binary_kl(ls, lt, tau).item() == pytest.approx(limit, rel=2e-3)


@pytest.mark.parametrize("tau", [1.0, 100.0])
def test_closed_form_gradient_equals_autograd(tau):
    g = torch.Generator().manual_seed(0)
    lt = -torch.rand(40, generator=g, dtype=torch.float64) * 8
    ls = (-torch.rand(40, generator=g, dtype=torch.float64) * 8).requires_grad_()
    (auto,) = torch.autograd.grad(chunk_binary_kl(ls, lt, tau).sum(), ls)
    closed = chunk_binary_kl_grad(ls.detach(), lt, tau)
    assert torch.allclose(closed.double(), auto.double(), rtol=1e-4, atol=1e-6)
    # the sign: raise a chunk the student under-rates, lower one it over-rates
    assert ((closed < 0) == (ls.detach() < lt)).all()


def _problem(seed=0, n=37, hidden=16, vocab=89):
    """One packed row: a prompt (no targets), then targets, with chunks of 1-4 positions, some
    positions in no chunk, and a second record's chunks numbered on."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(1, n, hidden, generator=g, requires_grad=True)
    w = (0.5 * torch.randn(vocab, hidden, generator=g)).requires_grad_()
    targets = torch.randint(0, vocab, (1, n), generator=g)
    targets[0, :5] = IGNORE
    weights = (0.5 + torch.rand(1, n, generator=g)) * (targets != IGNORE)
    chunk_ids = torch.full((1, n), -1)
    chunk_lt = torch.zeros(1, n)
    pos, c = 5, 0
    while pos < n:
        size = int(torch.randint(1, 5, (1,), generator=g))
        if c % 4 != 3:  # every 4th span in no chunk
            chunk_ids[0, pos : pos + size] = c
            chunk_lt[0, pos : pos + size] = -float(torch.rand(1, generator=g)) * 3 * size
        pos, c = pos + size, c + 1
    return h, w, targets, weights, chunk_ids, chunk_lt


@pytest.mark.parametrize(("chunk", "kappa", "tau"), [(1, 1.0, 100.0), (4, 0.6, 100.0), (1000, 0.6, 1.0)])
def test_fused_head_equals_the_plain_form_in_value_and_gradient(chunk, kappa, tau):
    """Tiles of 1 and 4 positions cut the chunks across tiles; the head's pre-pass and re-weighted
    CE give the value and gradients autograd gives on the full logits."""
    h, w, targets, weights, chunk_ids, chunk_lt = _problem()
    cfg = TrainConfig(loss={"chunk_kd": {"weight": 1.0, "temperature": tau}})
    terms = [CrossEntropy(cfg), ChunkLikelihood(cfg)]
    inputs = [(targets, weights), (targets, chunk_ids, chunk_lt, weights)]
    plain = plain_parts(terms, [1.0, kappa], h @ w.t(), targets, inputs)
    fused = chunked_parts(h, w, targets, terms, [1.0, kappa], inputs, chunk_tokens=chunk)
    assert fused["chunk_kd"].item() == pytest.approx(plain["chunk_kd"].item(), rel=1e-4)
    assert fused["objective"].item() == pytest.approx(plain["objective"].item(), rel=1e-5)
    g_plain = torch.autograd.grad(0.3 * plain["objective"], [h, w])
    g_fused = torch.autograd.grad(0.3 * fused["objective"], [h, w])
    for a, b in zip(g_fused, g_plain, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_plain_form_is_the_sum_over_chunks_by_hand():
    h, w, targets, weights, chunk_ids, chunk_lt = _problem(seed=3, n=20)
    logits = h @ w.t()
    term = ChunkLikelihood(TrainConfig(loss={"chunk_kd": {"weight": 1.0}}))
    got = term.plain(logits, targets, (targets, chunk_ids, chunk_lt, weights))["chunk_kd"]
    lp = torch.log_softmax(logits[0].float(), -1)
    want = 0.0
    for c in chunk_ids.unique().tolist():
        if c < 0:
            continue
        at = (chunk_ids[0] == c).nonzero().flatten().tolist()
        ls = sum(lp[p, targets[0, p]].item() for p in at)
        v = sum(weights[0, p].item() for p in at) / len(at)
        want += v * _bkl(chunk_lt[0, at[0]].item(), ls, 100.0)
    assert got.item() == pytest.approx(want, rel=1e-3)


def test_weight_zero_leaves_the_ce_untouched():
    h, w, targets, weights, chunk_ids, chunk_lt = _problem(seed=1)
    cfg = TrainConfig(loss={"chunk_kd": {"weight": 1.0}})
    ce = chunked_parts(h, w, targets, [CrossEntropy(cfg)], [1.0], [(targets, weights)])
    both = chunked_parts(
        h,
        w,
        targets,
        [CrossEntropy(cfg), ChunkLikelihood(cfg)],
        [1.0, 0.0],
        [(targets, weights), (targets, chunk_ids, chunk_lt, weights)],
    )
    assert both["objective"].item() == pytest.approx(ce["objective"].item(), rel=1e-6)
    assert both["chunk_kd"].item() == pytest.approx(
        ChunkLikelihood(cfg).plain(h @ w.t(), targets, (targets, chunk_ids, chunk_lt, weights))["chunk_kd"].item(),
        rel=1e-4,
    )
    plain_ce, _ = weighted_ce_sum(h @ w.t(), targets, weights)
    assert ce["objective"].item() == pytest.approx(plain_ce.item(), rel=1e-5)


def test_chunk_likelihoods_sum_the_teacher_logprobs_of_each_chunk():
    # teacher "ab" "c" "" (an end token) against student "a" "bc"
    payload = TokenLogprobs([b"ab", b"c", b""], [-0.5, -1.25, -3.0])
    chunks = align(payload.tokens, [b"a", b"bc"], b"abc")
    assert chunk_likelihoods(payload, chunks) == [(0, 2, -1.75)]
    payload = TokenLogprobs([b"a", b"b", b"c"], [-0.5, -0.25, -1.0])
    chunks = align(payload.tokens, [b"a", b"bc"], b"abc")
    assert chunk_likelihoods(payload, chunks) == [(0, 1, -0.5), (1, 2, -1.25)]
    aligned = Aligned(payload, chunks, first=3, vocab={})
    assert [(s.start, s.end) for s in ChunkLikelihoods().build(aligned)] == [(3, 4), (4, 5)]  # moved by `first`
    assert aligned.counts == {"chunks": 2, "chunk_positions": 2}


def chunk_likelihoods(payload, chunks):
    """The chunk target's (s0, s1, l_T) of every chunk with student tokens."""
    return [(s.start, s.end, s.value) for s in ChunkLikelihoods().build(Aligned(payload, chunks, 0, {}))]


def test_collate_numbers_chunks_across_a_micro_batch_and_packs_them():
    def ex(n_prompt, chunks):
        ids = list(range(10))
        targets = [IGNORE] * (n_prompt - 1) + ids[n_prompt:] + [IGNORE]
        spans = [Span(s0, s1, lt) for s0, s1, lt in chunks]
        return Example("x", ids, targets, 10 - n_prompt, None, term_targets={"chunk_likelihood": spans})

    examples = [ex(4, [(3, 5, -1.0), (5, 6, -0.5)]), ex(6, [(5, 8, -2.0)])]
    for packing in (True, False):
        batch = collate(examples, [1.0, 1.0], packing=packing, pad_id=0)
        ids, lt = batch["chunk_ids"].reshape(-1).tolist(), batch["chunk_lt"].reshape(-1).tolist()
        second = 10  # the second record starts at 10 packed, on row 2 (flattened: 10) padded
        assert ids[3:6] == [0, 0, 1] and lt[3:6] == [-1.0, -1.0, -0.5]
        assert ids[second + 5 : second + 8] == [2, 2, 2] and lt[second + 5] == -2.0
        assert sum(i >= 0 for i in ids) == 6
        assert "kd_ids" not in batch  # no one-to-one targets: no top-K tensors


def test_training_with_the_chunk_term_logs_it_and_counts_its_chunks(tmp_path, teacher_dir, student_dir):
    from test_train_token_kd import _payload_rows
    from train_helpers import make_cache_lines, recipe_data, write_cache

    from dante.config import load_recipe
    from dante.train.loop import train

    cache = write_cache(tmp_path / "cache", _payload_rows(teacher_dir, make_cache_lines(24)))
    data = recipe_data(tmp_path, student_dir, cache, steps=6, eval_fraction=0.25, eval_every=6)
    data["train"]["loss"] = {"chunk_kd": {"weight": 0.5}}
    result = train(load_recipe(data=data))
    kd = json.loads(result.manifest_path.read_text())["data"]["token_kd"]
    assert kd["aligned"] == kd["records"] == 18 and kd["chunks"] > 0
    assert kd["chunk_positions"] == kd["completion_tokens"] or 0 < kd["chunk_share"] <= 1
    assert "positions" not in kd  # only the target the chunk term reads was built (and counted)
    metrics = [json.loads(line) for line in (result.output_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if "loss" in m]
    assert steps and all(m["chunk_kd"] > 0 and m["lambda_chunk"] == 0.5 and "token_kd" not in m for m in steps)


@pytest.mark.parametrize(("token", "chunk"), [(False, True), (True, False), (True, True)])
def test_examples_carry_only_the_targets_a_term_reads(tmp_path, teacher_dir, student_dir, token, chunk):
    # chunk_kd alone must not build (and collate) the one-to-one top-K tensors no term reads, and
    # token_kd alone no chunk tensors; each target counts what it found (the manifest's figures)
    from test_train_token_kd import _payload_rows
    from train_helpers import make_cache_lines, write_cache
    from transformers import AutoTokenizer

    from dante.cache.records import read_cache
    from dante.config import StudentConfig, TrainConfig
    from dante.train.objective.targets import targets_of
    from dante.train.objective.terms import source_terms
    from dante.train.sources.examples import build_examples
    from dante.train.sources.kd_data import KDStats, StudentVocab, TargetBuild

    records = list(read_cache([write_cache(tmp_path / "cache", _payload_rows(teacher_dir, make_cache_lines(4)))]))
    tok = AutoTokenizer.from_pretrained(student_dir)
    cfg = TrainConfig(loss={"token_kd": {"weight": 0.5 * token}, "chunk_kd": {"weight": 0.5 * chunk}})
    build = TargetBuild(StudentVocab(tok), KDStats(), targets_of(source_terms("records", cfg)))
    examples, _ = build_examples(records, tok, StudentConfig(model=str(student_dir)), 256, targets=build)
    counts = build.stats.as_dict()
    assert (
        counts["aligned"] == 4 and (counts.get("positions", 0) > 0) == token and (counts.get("chunks", 0) > 0) == chunk
    )
    assert all(("top_k" in ex.term_targets) == token for ex in examples)
    assert all(("chunk_likelihood" in ex.term_targets) == chunk for ex in examples)
    batch = collate(examples, [1.0] * len(examples), packing=True, pad_id=0)
    assert ("kd_ids" in batch) == token and ("chunk_ids" in batch) == chunk
