"""The DANTE objective (stage 4), every formula of the card in one place: CWCE weights w(H),
the per-token weights u_t and the normaliser D, the weighted masked CE, the sparse top-K KL, the
on-policy chunk log-ratios and the λ schedules. The terms that use them are units in
``dante.train.objective.terms``; the fused lm_head form lives in ``chunked_ce``; L_TEA's
penalty, a hook on the embedding, in ``dante.train.model.anchor``.

    L(θ; t)   = λ_CE(t) · L_CWCE(θ) + λ_TEA(t) · L_TEA(θ)
    w(H)      = floor + span / (1 + exp(slope · (H − center)))      card: 0.30, 0.70, 1.5, 1.5
    L_TEA(θ)  = ‖E(θ) − E(θ₀)‖²_F
    λ_TEA(t)  = tea.start → tea.end, linear over the run               card: 1.0 → 0.1
    λ_CE(t)   = start + (end − start) · clamp((t − W) / (R − W))  (cwce.*)   card: 0.70 + 0.30·max(0, t−200)/1800

Token-level distillation (not in the card; ``token_kd`` > 0, docs/training.md) adds
λ_KD(t) · Σ_t u_t · KL_t / D over the positions aligned one to one with a teacher token
(``sparse_kd_sum``), with the same u_t and D as the CE. The chunk term (``chunk_kd`` > 0) adds
λ_chunk · Σ_c v_c · KL_c / D over every aligned chunk of the teacher's answer (``chunk_binary_kl``).

How CE_masked is averaged (``train.loss.cwce.normalise``). Every variant is written as one sum over
completion tokens t of the *global* batch (all micro-batches of the optimizer step, all ranks):

    L_CWCE = Σ_t u_t · CE_t / D

``token``    u_t = w(H_i) for every completion token of record i, D = Σ_t u_t.
             A token-level weighted mean: long completions count in proportion to their length.
``sequence`` u_t = w(H_i) / n_i (n_i = completion tokens of record i), D = Σ_i w(H_i).
             = Σ_i w_i · mean_t CE_i,t / Σ_i w_i: per-record mean CE, then a weighted mean.
``card``     u_t = w(H_i) / n_i, D = N (records in the global batch).
             = (1/N) Σ_i w_i · CE_i, the card's formula literally (CE_i a per-record mean).
             It equals ``sequence`` times mean(w), i.e. the weights also scale the step size.

With cwce=false every w is 1: ``token`` is the usual mean token CE of SFT, ``sequence`` and
``card`` the mean of per-record means. Because D is a global constant computed before the
forward passes (the weights are known from the data), each micro-batch contributes
Σ_{t in micro-batch} u_t·CE_t / D and the gradients of all micro-batches and ranks add up to
the gradient of the full-batch loss: accumulation and data parallelism do not change the
objective (the bug class of transformers issue 35203).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from dante.config import LossConfig
from dante.train.align import Chunk

_DEFAULT = LossConfig()
IGNORE = -100  # the target of a position that is not trained (prompt, padding): torch's ignore_index


def cwce_weight(entropy: float | torch.Tensor, cfg: LossConfig = _DEFAULT) -> float | torch.Tensor:
    """w(H) = floor + span / (1 + exp(slope · (H − center))); w(0)≈0.934, w(1.5)=0.65, w(∞)=0.30 (card).

    A confident (low-entropy) teacher completion gets close to full weight, an uncertain one
    down to ``floor``. Accepts a float or a tensor of entropies in nats.
    """
    if isinstance(entropy, torch.Tensor):
        return cfg.cwce.floor + cfg.cwce.span * torch.sigmoid(-cfg.cwce.slope * (entropy - cfg.cwce.center))
    z = cfg.cwce.slope * (float(entropy) - cfg.cwce.center)
    if z > 700:  # exp overflow: the weight is the floor
        return cfg.cwce.floor
    return cfg.cwce.floor + cfg.cwce.span / (1.0 + math.exp(z))


def lambda_ce(step: int, cfg: LossConfig = _DEFAULT) -> float:
    """λ_CE(t) = start + (end − start) · clamp((t − warmup_steps) / (ramp_end − warmup_steps), 0, 1) (``cwce.*``).

    Card: 0.70 up to step 200, then linear to 1.0 at step 2 000 (λ_CE(200)=0.70, λ_CE(2000)=1.0).
    ``step`` is the 1-based number of the optimizer update. cwce.schedule=false gives 1.0.
    """
    if not cfg.cwce.schedule:
        return 1.0
    span = max(1, cfg.cwce.ramp_end - cfg.cwce.warmup_steps)
    frac = min(1.0, max(0.0, (step - cfg.cwce.warmup_steps) / span))
    return cfg.cwce.start + (cfg.cwce.end - cfg.cwce.start) * frac


def lambda_tea(step: int, total_steps: int, cfg: LossConfig = _DEFAULT) -> float:
    """λ_TEA(t) = start + (end − start) · clamp((t − 1) / (T − 1), 0, 1).

    Linear over the run of T optimizer updates (1-based t): ``tea.start`` at the first update,
    end at the last (card: 1.0 → 0.1 over 2 000 steps). tea.enabled=false gives 0.0.
    """
    if not cfg.tea.enabled:
        return 0.0
    if total_steps <= 1:
        return cfg.tea.start
    frac = min(1.0, max(0.0, (step - 1) / (total_steps - 1)))
    return cfg.tea.start + (cfg.tea.end - cfg.tea.start) * frac


def lambda_kd(step: int, cfg: LossConfig = _DEFAULT) -> float:
    """λ_KD(t) = w (``token_kd.weight``), or with ``token_kd.schedule``
    s + (w − s) · clamp((t − cwce.warmup_steps) / (cwce.ramp_end − cwce.warmup_steps), 0, 1), s = ``token_kd.start``,
    on λ_CE's steps. 0 when w is 0."""
    kd = cfg.token_kd
    if kd.weight <= 0:
        return 0.0
    if not kd.schedule:
        return kd.weight
    span = max(1, cfg.cwce.ramp_end - cfg.cwce.warmup_steps)
    frac = min(1.0, max(0.0, (step - cfg.cwce.warmup_steps) / span))
    return kd.start + (kd.weight - kd.start) * frac


R_FLOOR = 1e-6  # the student's tail mass r_S is clamped here: the KL's gradient scales with r_T / r_S


def sparse_kd_sum(
    logits: torch.Tensor, ids: torch.Tensor, probs: torch.Tensor, weights: torch.Tensor, reverse: bool = False
) -> torch.Tensor:
    """Σ_t v_t · KL(q_t ‖ p_t) over the teacher's top-K tokens that the student's vocabulary has,
    with the rest of both distributions lumped into one tail outcome:

        M       = the mapped top-K ids of position t (ids ≥ 0; −1 pads)
        Q       = Σ_{k∈M} q_k,  r_T = max(0, 1 − Q)             teacher mass outside M
        P       = Σ_{k∈M} p_k,  r_S = max(R_FLOOR, 1 − P)        student mass outside M
        KL_t    = Σ_{k∈M} q_k (log q_k − log p_k) + r_T (log r_T − log r_S)

    A proper KL between two distributions on M ∪ {other}: with identical vocabularies M is the
    whole top-K and this is the exact sparse top-K KL with its tail; across vocabularies a
    teacher token the student cannot write as one token goes to the tail, so the student is
    never pushed away from tokens the teacher's top-K does not name (the X-Token pitfall).
    ``reverse``: KL(p_t ‖ q_t) on the same outcomes (``sparse_kl_terms``), mode-seeking, for the
    student's own samples (on-policy).
    logits: (N, V); ids, probs: (N, K); weights v: (N,) (0 where no teacher payload).
    """
    lp = torch.log_softmax(logits.float(), dim=-1).gather(1, ids.clamp_min(0))
    return (weights.float() * sparse_kl_terms(lp, ids, probs, reverse).kl).sum()


class SparseKL(NamedTuple):
    """KL_t per row of ``sparse_kd_sum`` and its gradient with respect to the student's logits z:
    dKL_t/dz_i = p_i · row_t + Σ_k at_ids_tk · 1[i = J_k] (J_k the mapped ids): the chunked kernel
    forms it in the logits tile it already holds."""

    kl: torch.Tensor  # (N,)
    row: torch.Tensor  # (N,) the factor of p_i
    at_ids: torch.Tensor  # (N, K) the terms at the mapped ids, 0 at pads


def sparse_kl_terms(lp: torch.Tensor, ids: torch.Tensor, probs: torch.Tensor, reverse: bool = False) -> SparseKL:
    """KL_t of ``sparse_kd_sum`` and its gradient from the student's log-probabilities ``lp``
    (N, K) at the mapped ids (any value at pads, ids −1). With p_k, q_k, P, Q, r_S, r_T as there:

    forward  KL = Σ_k q_k (log q_k − log p_k) + r_T (log r_T − log r_S)
             dKL/dz_i = (Q − ρP) p_i + Σ_k (ρ p_k − q_k) 1[i = J_k],  ρ = r_T / r_S
    reverse  KL = Σ_k p_k (log p_k − log q_k) + r_S (log r_S − log r_T),  r_T ≥ R_FLOOR
             dKL/dz_i = (cP − A) p_i + Σ_k (a_k − c p_k) 1[i = J_k],
             a_k = p_k (log p_k − log q_k + 1),  A = Σ_k a_k,  c = log r_S + 1 − log r_T

    (from dp_k/dz_i = p_k (1[i = J_k] − p_i) and dr_S/dz_i = −dP/dz_i). Where r_S sits at its
    floor the tail has no gradient (ρ = 0, c = 0)."""
    mask = ids >= 0
    zero = torch.zeros_like(lp)
    q = torch.where(mask, probs.float(), zero)
    p = torch.where(mask, lp.exp(), zero)
    big_q, big_p = q.sum(1), p.sum(1)
    r_s_raw = 1.0 - big_p
    r_s = r_s_raw.clamp_min(R_FLOOR)
    clamped = r_s_raw <= R_FLOOR
    if not reverse:
        r_t = (1.0 - big_q).clamp_min(0.0)
        head = torch.where(mask & (q > 0), q * (q.clamp_min(1e-30).log() - lp), zero).sum(1)
        tail = torch.where(r_t > 0, r_t * (r_t.clamp_min(1e-30).log() - r_s.log()), torch.zeros_like(r_t))
        rho = torch.where(clamped, torch.zeros_like(r_t), r_t / r_s)
        at_ids = torch.where(mask, rho[:, None] * p - q, zero)
        return SparseKL(head + tail, big_q - rho * big_p, at_ids)
    r_t = (1.0 - big_q).clamp_min(R_FLOOR)
    log_ratio = torch.where(mask, lp - q.clamp_min(1e-30).log(), zero)
    head = (p * log_ratio).sum(1)
    tail = r_s * (r_s.log() - r_t.log())
    a = torch.where(mask, p * (log_ratio + 1.0), zero)
    c = torch.where(clamped, torch.zeros_like(r_s), r_s.log() + 1.0 - r_t.log())
    at_ids = torch.where(mask, a - c[:, None] * p, zero)
    return SparseKL(head + tail, c * big_p - a.sum(1), at_ids)


# -- a term on every aligned chunk (approximate likelihood matching) ----------------------------

CHUNK_EPS = 1e-6  # ALM's ε: log p/τ − ε keeps each binarised probability below 1


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − exp(x)) for x < 0, stable on both sides of log ½ (Mächler 2012)."""
    return torch.where(x < -math.log(2.0), torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def chunk_binary_kl(l_student: torch.Tensor, l_teacher: torch.Tensor, temperature: float = 100.0) -> torch.Tensor:
    """τ · KL(Bern(q_c) ‖ Bern(p_c)) per aligned chunk c: approximate likelihood matching's binarised
    f-divergence (Minixhofer et al. 2025, tokenkit's ``binary_ce``, here less the teacher's own binary
    entropy so it is 0 at a match and ≥ 0), with

        a_c = l_T,c / τ − ε,   b_c = l_S,c / τ − ε,   q_c = e^{a_c},   p_c = e^{b_c}
        KL_c = τ · [ q_c (a_c − b_c) + (1 − q_c) (log(1 − q_c) − log(1 − p_c)) ]

    l_T,c: the teacher's log-likelihood of chunk c (the sum of its cached token logprobs), l_S,c the
    student's (the sum over its tokens in the chunk), both ≤ 0. Each chunk is one binary event, "the
    chunk's text is written", whose probability both models give whatever their tokenizers; τ (ALM's
    default 100) puts long chunks' small probabilities in a range where the binary divergence still
    separates them. As τ → ∞, KL_c → s_T log(s_T / s_S) − s_T + s_S with s = −l (the chunk
    surprisals), so the τ factor keeps the term's scale independent of τ. Its gradient is
    ``chunk_binary_kl_grad``."""
    tau = float(temperature)
    a = l_teacher.float() / tau - CHUNK_EPS
    b = l_student.float() / tau - CHUNK_EPS
    q = torch.exp(a)
    return tau * (q * (a - b) + (1.0 - q) * (log1mexp(a) - log1mexp(b)))


def chunk_binary_kl_grad(l_student: torch.Tensor, l_teacher: torch.Tensor, temperature: float = 100.0) -> torch.Tensor:
    """dKL_c / dl_S,c of ``chunk_binary_kl`` in closed form: (p_c − q_c) / (1 − p_c).

    (τ · d/db [−q b − (1 − q) log(1 − e^b)] · db/dl_S = −q + (1 − q) e^b / (1 − e^b) = (e^b − q)/(1 − e^b).)
    Since dl_S,c / dz_t = onehot(y_t) − softmax(z_t) for every student token t of the chunk, the
    term's gradient on the logits is that of Σ_t (−g_c) · CE_t with g_c this value held fixed: a
    re-weighted CE whose weight is positive where the student gives the chunk less probability than
    the teacher (raise it) and negative where it gives more (lower it); the fused lm_head runs it as
    such (``terms.ChunkLikelihood``)."""
    tau = float(temperature)
    a = l_teacher.float() / tau - CHUNK_EPS
    b = l_student.float() / tau - CHUNK_EPS
    return (torch.exp(b) - torch.exp(a)) / -torch.expm1(b)


# -- on-policy distillation across tokenizers (the student writes, the teacher scores) ---------


def chunk_log_ratios(
    chunks: Sequence[Chunk],
    teacher_tokens: Sequence[bytes],
    teacher_logprobs: Sequence[float],
    student_logprobs: Sequence[float],
) -> list[float]:
    """r_c = Σ_{teacher tokens in c} log p_T − Σ_{student tokens in c} log p_S for each aligned
    chunk c of a student sample (``dante.train.align``: both tokenizations of the same text cut
    at their common boundaries).

    Every non-empty teacher token and every student token of the text lies in exactly one chunk,
    so Σ_c r_c = log p_T(y) − log p_S(y) exactly, whatever the two tokenizers: the sample's
    sequence-level log-ratio is split without approximation. Only where *inside* a chunk the
    credit goes is a choice (``token_advantages``). Empty teacher tokens (special tokens, end of
    sequence) are in no chunk; the end of the sequence is a term of its own.
    """
    out = []
    for c in chunks:
        lp_s = sum(student_logprobs[j] for j in range(c.s0, c.s1))
        out.append(teacher_chunk_logprob(c, teacher_tokens, teacher_logprobs) - lp_s)
    return out


def teacher_chunk_logprob(c: Chunk, teacher_tokens: Sequence[bytes], teacher_logprobs: Sequence[float]) -> float:
    """l_T,c: the sum of the teacher's logprobs over the non-empty tokens of chunk c (empty ones,
    special tokens and the end of sequence, are in no chunk's text)."""
    return sum(teacher_logprobs[i] for i in range(c.t0, c.t1) if teacher_tokens[i])


def chunk_returns(
    log_ratios: Sequence[float], end: float | None = None, discount: float = 0.0, mask_above: float | None = None
) -> tuple[list[float | None], float | None]:
    """The advantage of each chunk, in text order, and of the end (None: no term), before β:
    G_c = r_c + γ·G_{c+1} (the end's term after the last chunk), γ = ``discount``. γ 0 gives each
    chunk its own r_c (on-policy distillation's per-token reverse KL, discount 0); γ 1 the whole
    log-ratio of the rest of the sample, REINFORCE's return for the sequence-level reverse KL
    (unbiased, noisier): tinker-cookbook's ``kl_discount_factor``, with chunks as the steps.
    ``mask_above``: a chunk (or end) whose |r| exceeds it is an outlier (a digit the teacher
    finds near-impossible, a seam the two tokenizations cut oddly) and carries no term: None, and
    0 in the returns of the chunks before it."""
    kept = [None if mask_above is not None and abs(r) > mask_above else r for r in log_ratios]
    end_kept = None if end is None or (mask_above is not None and abs(end) > mask_above) else end
    out: list[float | None] = [None] * len(kept)
    ahead = end_kept or 0.0
    for c in range(len(kept) - 1, -1, -1):
        g = (kept[c] or 0.0) + discount * ahead
        out[c] = g if kept[c] is not None else None
        ahead = g
    return out, end_kept


def token_advantages(
    chunks: Sequence[Chunk],
    log_ratios: Sequence[float],
    n_student: int,
    coef: float = 1.0,
    end: float | None = None,
    discount: float = 0.0,
    mask_above: float | None = None,
) -> list[float | None]:
    """A_j = coef · G_c for every student token j of chunk c (``chunk_returns``: G_c = r_c at
    discount 0); ``end`` (log p_T(eos) − log p_S(eos) of a sample the student ended) goes to its
    last token, the end-of-sequence one, outside the text's chunks. None for a token with no term:
    in no chunk, or in a masked one.

    Why every token of a chunk gets the whole G_c: the chunk is the smallest piece of text both
    models assign a probability to, so it is the action; the REINFORCE estimate of the gradient of
    its reverse KL is r_c · ∇ log p_S(chunk) and log p_S(chunk) = Σ_{j ∈ c} log p_S(y_j). With one
    tokenizer every chunk is one token and A_j = coef · (log p_T(y_j) − log p_S(y_j)), the
    per-token reverse KL advantage of on-policy distillation (discount 0: a token is not credited
    with the chunks after it).
    """
    returns, end_return = chunk_returns(log_ratios, end, discount, mask_above)
    adv: list[float | None] = [None] * n_student
    for c, g in zip(chunks, returns, strict=True):
        for j in range(c.s0, c.s1):
            adv[j] = None if g is None else coef * g
    if end_return is not None and n_student:
        adv[-1] = coef * end_return
    return adv


def policy_gradient_sum(
    logprobs: torch.Tensor, sampling_logprobs: torch.Tensor, advantages: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """L_PG = −Σ_j w_j · ρ_j · A_j with ρ_j = exp(log p_S(y_j) − log p_samp(y_j)), the importance
    weight of the current student against the one that sampled (1 in value when they agree; its
    gradient is then −Σ w·A·∇ log p_S, the policy gradient). A and the sampling logprobs are
    constants. ``weights`` w carry the normaliser (and 0 at padding)."""
    ratio = torch.exp(logprobs.float() - sampling_logprobs.detach().float())
    return -(weights.float() * ratio * advantages.detach().float()).sum()


def weighted_ce_sum(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ_t u_t · CE_t over positions whose target is not −100, in float32; also the plain CE sum.

    logits: (..., V) already aligned with ``targets`` (position p predicts targets[p]; no shift
    here). weights: same shape as targets (u_t; zero where masked). Returns (Σ u·CE, Σ CE).
    """
    logits = logits.reshape(-1, logits.shape[-1]).float()
    targets = targets.reshape(-1)
    weights = weights.reshape(-1).to(logits.dtype)
    ce = F.cross_entropy(logits, targets.clamp_min(0), reduction="none")
    keep = targets != -100
    ce = torch.where(keep, ce, torch.zeros_like(ce))
    return (weights * ce).sum(), ce.sum()


def record_weight(entropy: float | None, cfg: LossConfig = _DEFAULT) -> float:
    """w_i of record i: ``cwce_weight(H_i)`` with CWCE on; 1.0 with it off or without an entropy
    (a teacher that returned no logprobs)."""
    if not cfg.cwce.weighted or entropy is None:
        return 1.0
    return float(cwce_weight(entropy, cfg))


def token_weights(weight: float, n_completion: int, normalise: str) -> float:
    """u_t of one completion token of a record with weight w_i and n_i completion tokens:
    w_i for ``token``, w_i / n_i for ``sequence`` and ``card`` (see the module doc)."""
    if normalise == "token":
        return weight
    return weight / max(1, n_completion)


def normaliser(n_completion: Sequence[int], u: Sequence[float], normalise: str) -> float:
    """D of the global batch: Σ_t u_t over every completion token (Σ_i u_i · n_i), or N for 'card'."""
    if normalise == "card":
        return float(len(n_completion))
    return float(sum(u_i * n_i for u_i, n_i in zip(u, n_completion, strict=True)))


def batch_weights(
    entropies: Sequence[float | None], n_completion: Sequence[int], cfg: LossConfig = _DEFAULT
) -> tuple[list[float], float]:
    """(u_i per record, D) of one global batch: every token of record i gets weight u_i, and
    L_CWCE = Σ_t u_t · CE_t / D. Known before any forward pass, so micro-batches and ranks
    each add their share Σ u·CE / D and the sum is the full-batch loss."""
    u = [
        token_weights(record_weight(h, cfg), n, cfg.cwce.normalise)
        for h, n in zip(entropies, n_completion, strict=True)
    ]
    return u, normaliser(n_completion, u, cfg.cwce.normalise)
