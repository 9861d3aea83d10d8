"""The on-policy distillation loss across tokenizers (dante.train.objective.losses): the chunk log-ratios of
a student sample add up to log p_T(y) − log p_S(y) for any two tokenizers (a property over random
texts, with the tiny teacher and student tokenizers), with one tokenizer the advantages are the
per-token reverse KL ones, and the policy-gradient loss has the gradient of its closed form."""

from __future__ import annotations

import math
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dante.config.train import PolicyGradientSettings
from dante.tokens import TokenBytes
from dante.train.align import Chunk, align
from dante.train.objective.losses import chunk_log_ratios, chunk_returns, policy_gradient_sum, token_advantages


def test_hand_computed_chunks():
    # "1234": teacher 1|2|3|4, student 12|3|4 -> chunks "12", "3", "4"
    chunks = [Chunk(0, 2, 0, 2, 0, 1), Chunk(2, 3, 2, 3, 1, 2), Chunk(3, 4, 3, 4, 2, 3)]
    tokens = [b"1", b"2", b"3", b"4"]
    r = chunk_log_ratios(chunks, tokens, [-0.1, -0.2, -0.3, -0.4], [-1.0, -0.5, -0.25])
    assert r == pytest.approx([-0.3 + 1.0, -0.3 + 0.5, -0.4 + 0.25])
    assert token_advantages(chunks, r, 4, coef=2.0, end=-0.5) == pytest.approx([1.4, 0.4, -0.3, -1.0])
    # discount 0.5, by hand: G_end = -0.5, G_3 = -0.15 - 0.25 = -0.4, G_2 = 0.2 - 0.2 = 0.0, G_1 = 0.7 + 0.0
    assert token_advantages(chunks, r, 4, coef=2.0, end=-0.5, discount=0.5) == pytest.approx([1.4, 0.0, -0.8, -1.0])
    # discount 1: each chunk carries the log-ratio of the rest of the sample, the end included
    assert token_advantages(chunks, r, 4, end=-0.5, discount=1.0) == pytest.approx([0.25, -0.45, -0.65, -0.5])
    # |0.7| > 0.6 is masked: no term of its own, 0 in the returns before it (none here)
    assert token_advantages(chunks, r, 4, coef=2.0, end=-0.5, discount=0.5, mask_above=0.6) == pytest.approx(
        [None, 0.0, -0.8, -1.0]
    )


def test_chunk_returns_mask_outliers_out_of_the_returns_before_them():
    # r = 1, 5 (an outlier above 4), -1; end 0.5; γ 0.5: G_3 = -1 + 0.25 = -0.75, G_2 masked (0 ahead of
    # chunk 1: the outlier's 5 counts nowhere), G_1 = 1 + 0.5 · (0 + 0.5 · -0.75) = 0.8125
    returns, end = chunk_returns([1.0, 5.0, -1.0], end=0.5, discount=0.5, mask_above=4.0)
    assert returns == pytest.approx([0.8125, None, -0.75]) and end == 0.5
    assert chunk_returns([1.0, -2.0], end=-9.0, mask_above=4.0) == ([1.0, -2.0], None)  # an outlier end
    assert chunk_returns([], end=None) == ([], None)


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    from tiny import make_tokenizer  # tests/ is on sys.path (tests/conftest.py)

    teacher = make_tokenizer(tmp_path_factory.mktemp("t"), flavour="teacher", vocab_size=384)
    student = make_tokenizer(tmp_path_factory.mktemp("s"), flavour="student", vocab_size=320)
    return teacher, student


ALPHABET = list("abcdefghij klmnop0123456789+-=.,\n") + ["é", "ü"]


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.sampled_from(ALPHABET), min_size=1, max_size=60), st.integers(0, 2**31 - 1))
def test_chunk_log_ratios_sum_to_the_sequence_log_ratio_for_two_tokenizers(tokenizers, text, seed):
    teacher, student = tokenizers
    t_ids = teacher(text, add_special_tokens=False)["input_ids"]
    t_tokens = [TokenBytes(teacher)(i) for i in t_ids]
    if b"".join(t_tokens) != text.encode("utf-8"):
        return  # a text the teacher's tokenizer does not round-trip: scoring refuses it (tested there)
    s_tokens = [TokenBytes(student)(i) for i in student(text, add_special_tokens=False)["input_ids"]]
    if b"".join(s_tokens) != text.encode("utf-8"):
        return  # nor the student's (a normalising tokenizer): its sample would not be this text
    chunks = align(t_tokens, s_tokens, text.encode("utf-8"))
    rng = random.Random(seed)
    lp_t = [-rng.uniform(0, 5) for _ in t_tokens]
    lp_s = [-rng.uniform(0, 5) for _ in s_tokens]
    r = chunk_log_ratios(chunks, t_tokens, lp_t, lp_s)
    assert math.isclose(sum(r), sum(lp_t) - sum(lp_s), rel_tol=1e-9, abs_tol=1e-9)
    adv = token_advantages(chunks, r, len(s_tokens))
    # every student token carries its chunk's whole log-ratio, once per token of the chunk
    assert math.isclose(sum(a / (c.s1 - c.s0) for c in chunks for a in adv[c.s0 : c.s1]), sum(r), abs_tol=1e-9)


def test_with_one_tokenizer_the_advantages_are_the_per_token_reverse_kl(tokenizers):
    _, student = tokenizers
    text = "the answer is 42, then 7 + 8 = 15."
    tokens = [TokenBytes(student)(i) for i in student(text, add_special_tokens=False)["input_ids"]]
    rng = random.Random(1)
    lp_t = [-rng.uniform(0, 3) for _ in tokens]
    lp_s = [-rng.uniform(0, 3) for _ in tokens]
    chunks = align(tokens, list(tokens), text.encode())
    assert all(c.one_to_one for c in chunks)
    adv = token_advantages(chunks, chunk_log_ratios(chunks, tokens, lp_t, lp_s), len(tokens), coef=0.5)
    assert adv == pytest.approx([0.5 * (t - s) for t, s in zip(lp_t, lp_s, strict=True)])


def test_policy_gradient_matches_its_closed_form():
    torch.manual_seed(0)
    logits = torch.randn(6, 11, requires_grad=True)
    targets = torch.randint(0, 11, (6,))
    adv = torch.randn(6)
    w = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.5, 0.0])  # the last position is padding
    lp = torch.log_softmax(logits, -1).gather(1, targets[:, None]).squeeze(1)
    loss = policy_gradient_sum(lp, lp.detach(), adv, w)
    assert loss.item() == pytest.approx(-(w * adv).sum().item())  # ρ = 1 in value
    (grad,) = torch.autograd.grad(loss, logits)
    p = torch.softmax(logits.detach(), -1)
    onehot = torch.nn.functional.one_hot(targets, 11).float()
    expected = -(w * adv)[:, None] * (onehot - p)  # −w·A·∇ log p_S(y)
    assert torch.allclose(grad, expected, atol=1e-6)
    # an older sampler: the importance weight scales each term
    stale = lp.detach() - 0.3
    loss2 = policy_gradient_sum(lp, stale, adv, w)
    assert loss2.item() == pytest.approx(-(w * adv).sum().item() * math.exp(0.3), rel=1e-5)


@pytest.mark.parametrize("chunked", [True, False])
def test_a_sample_trained_as_weighted_ce_has_the_policy_gradient(student_dir, chunked):
    """What the loop back-propagates for on-policy samples (``Sample.example``: CE weighted by
    A_j / N, packed with another sample, through ``Forward`` with and without the chunked head)
    has the gradient of ``policy_gradient_sum`` over the student's own logprobs (autograd)."""
    from accelerate import Accelerator

    from dante.models import load_causal_lm
    from dante.tokens import TokenLogprobs
    from dante.train.objective.forward import Forward
    from dante.train.sources.collate import collate
    from dante.train.sources.on_policy import Sample

    model = load_causal_lm(str(student_dir), dtype="float32")
    samples = []
    for prompt, ids in (([5, 6, 7], [30, 31, 32, 33]), ([8, 9], [40, 41, 42])):
        chunks = [Chunk(j, j + 1, j, j + 1, j, j + 1) for j in range(len(ids))]  # one token a chunk
        score = TokenLogprobs([b"x"] * len(ids), [-0.2 * (j + 1) for j in range(len(ids))])
        samples.append(Sample("p", prompt, ids, [-1.0] * len(ids), chunks, score, len(ids)))
    n = sum(len(s.ids) for s in samples)
    pg = PolicyGradientSettings(kl_coef=0.7)
    made = [s.example(1.0 / n, pg) for s in samples]
    batch = collate([e for e, _ in made], [w for _, w in made], packing=True, pad_id=0)
    forward = Forward(model, model, Accelerator(cpu=True), chunked_ce=chunked, packed_attention=True)
    (got,) = torch.autograd.grad(forward.loss_sums(batch)["objective"], [model.get_input_embeddings().weight])

    total = 0
    for s in samples:
        seq = torch.tensor([s.prompt_ids + s.ids])
        logits = model(input_ids=seq).logits[0, len(s.prompt_ids) - 1 : -1]
        lp = torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(s.ids)[:, None]).squeeze(1)
        adv = torch.tensor(s.advantages(pg))
        total = total + policy_gradient_sum(lp, lp.detach(), adv, torch.full_like(lp, 1.0 / n))
    (want,) = torch.autograd.grad(total, [model.get_input_embeddings().weight])
    assert torch.allclose(got, want, atol=1e-6, rtol=1e-4)
    assert samples[0].advantages(pg) == pytest.approx([0.7 * (-0.2 * (j + 1) + 1.0) for j in range(4)])


def test_the_end_of_turn_and_the_baseline_in_a_samples_advantages_by_hand():
    """A sample the student ended: its end-of-sequence token (outside the text's chunks) carries
    log p_T(end) − log p_S(end) when the teacher scored the end, nothing when it did not; the
    baseline b is taken off every token that has a term, and the weights are (A − b) / N."""
    from dante.tokens import TokenLogprobs
    from dante.train.sources.on_policy import Sample

    chunks = [Chunk(0, 2, 0, 2, 0, 1), Chunk(2, 3, 2, 3, 1, 2)]  # "12" as one student token, "3" as one
    score = TokenLogprobs([b"1", b"2", b"3"], [-0.1, -0.2, -0.3])
    ids, lps = [11, 12, 2], [-1.0, -0.5, -0.7]  # 2: the student's end of sequence
    ended = Sample("p", [5, 6], ids, lps, chunks, score, text_tokens=2, end_logprob=-0.2)
    assert ended.log_ratios == pytest.approx([-0.3 + 1.0, -0.3 + 0.5])
    assert ended.end_log_ratio == pytest.approx(-0.2 + 0.7)
    pg = PolicyGradientSettings(kl_coef=2.0)
    assert ended.advantages(pg) == pytest.approx([1.4, 0.4, 1.0])
    assert ended.advantages(pg, baseline=0.5) == pytest.approx([0.9, -0.1, 0.5])
    _, weights = ended.example(0.25, pg, baseline=0.5)
    assert weights == pytest.approx([0.0, 0.9 / 4, -0.1 / 4, 0.5 / 4, 0.0])  # prompt 5 -> 0, then A − b, pad
    unscored = Sample("p", [5, 6], ids, lps, chunks, score, text_tokens=2)  # the end not scored: no term
    assert unscored.end_log_ratio is None and unscored.advantages(pg, baseline=0.5)[-1] is None
    assert unscored.example(0.25, pg, baseline=0.5)[1][-2] == 0.0
    # the discount carries the end's 0.5 back (γ 0.5: G_2 = 0.2 + 0.25, G_1 = 0.7 + 0.225); an outlier
    # mask above 0.6 leaves "12" (0.7) out: no term, not in the baseline's tokens, weight 0
    disc = PolicyGradientSettings(kl_coef=2.0, discount=0.5, mask_above=0.6)
    assert ended.advantages(disc) == pytest.approx([None, 0.9, 1.0]) and ended.masked(disc) == 1
    assert ended.example(0.25, disc)[1] == pytest.approx([0.0, 0.0, 0.9 / 4, 1.0 / 4, 0.0])
    assert ended.masked(pg) == 0
    cut = Sample("p", [5, 6], ids[:2], lps[:2], chunks, score, text_tokens=2, end_logprob=-0.2)  # not ended
    assert cut.end_log_ratio is None
