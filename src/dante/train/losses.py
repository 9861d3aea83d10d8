"""The DANTE objective as pure functions: CWCE weights, the weighted masked CE, the TEA anchor
and the two schedules. The train loop (train/loop.py) only combines them.

    L(θ; t)   = λ_CE(t) · L_CWCE(θ) + λ_TEA(t) · L_TEA(θ)
    w(H)      = floor + span / (1 + exp(slope · (H − center)))      card: 0.30, 0.70, 1.5, 1.5
    L_TEA(θ)  = ‖E(θ) − E(θ₀)‖²_F
    λ_TEA(t)  = tea_start → tea_end, linear over the run               card: 1.0 → 0.1
    λ_CE(t)   = ce_start + (ce_end − ce_start) · clamp((t − W) / (R − W))   card: 0.70 + 0.30·max(0, t−200)/1800

How CE_masked is averaged (``LossConfig.normalise``). Every variant is written as one sum over
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

import torch
import torch.nn.functional as F

from dante.config import LossConfig

_DEFAULT = LossConfig()


def cwce_weight(entropy: float | torch.Tensor, cfg: LossConfig = _DEFAULT) -> float | torch.Tensor:
    """w(H) = floor + span / (1 + exp(slope · (H − center))); w(0)≈0.934, w(1.5)=0.65, w(∞)=0.30 (card).

    A confident (low-entropy) teacher completion gets close to full weight, an uncertain one
    down to ``floor``. Accepts a float or a tensor of entropies in nats.
    """
    if isinstance(entropy, torch.Tensor):
        return cfg.cwce_floor + cfg.cwce_span * torch.sigmoid(-cfg.cwce_slope * (entropy - cfg.cwce_center))
    z = cfg.cwce_slope * (float(entropy) - cfg.cwce_center)
    if z > 700:  # exp overflow: the weight is the floor
        return cfg.cwce_floor
    return cfg.cwce_floor + cfg.cwce_span / (1.0 + math.exp(z))


def lambda_ce(step: int, cfg: LossConfig = _DEFAULT) -> float:
    """λ_CE(t) = ce_start + (ce_end − ce_start) · clamp((t − ce_warmup_steps) / (ce_ramp_end − ce_warmup_steps), 0, 1).

    Card: 0.70 up to step 200, then linear to 1.0 at step 2 000 (λ_CE(200)=0.70, λ_CE(2000)=1.0).
    ``step`` is the 1-based number of the optimizer update. ce_schedule=false gives 1.0.
    """
    if not cfg.ce_schedule:
        return 1.0
    span = max(1, cfg.ce_ramp_end - cfg.ce_warmup_steps)
    frac = min(1.0, max(0.0, (step - cfg.ce_warmup_steps) / span))
    return cfg.ce_start + (cfg.ce_end - cfg.ce_start) * frac


def lambda_tea(step: int, total_steps: int, cfg: LossConfig = _DEFAULT) -> float:
    """λ_TEA(t) = tea_start + (tea_end − tea_start) · clamp((t − 1) / (T − 1), 0, 1).

    Linear over the run of T optimizer updates (1-based t): tea_start at the first update,
    tea_end at the last (card: 1.0 → 0.1 over 2 000 steps). tea=false gives 0.0.
    """
    if not cfg.tea:
        return 0.0
    if total_steps <= 1:
        return cfg.tea_start
    frac = min(1.0, max(0.0, (step - 1) / (total_steps - 1)))
    return cfg.tea_start + (cfg.tea_end - cfg.tea_start) * frac


def tea_penalty(embedding: torch.Tensor, snapshot: torch.Tensor) -> torch.Tensor:
    """L_TEA = ‖E − E₀‖²_F, the squared Frobenius distance of the input embedding matrix to its
    snapshot at initialisation, summed in float32 (bf16 squares of small differences underflow).

    The gradient is 2(E − E₀) on E only; the snapshot must not require grad. With tied
    embeddings E is also the output projection, so the anchor pulls on both roles at once.
    """
    if snapshot.requires_grad:
        raise ValueError("the TEA snapshot must be detached (not a trainable parameter)")
    return _SquaredDistance.apply(embedding, snapshot)


class _SquaredDistance(torch.autograd.Function):
    """‖E − E₀‖²_F with one (V × H) temporary: the difference, which backward turns into the
    gradient 2(E − E₀)·g in place (an embedding-sized allocation costs page faults on CPU)."""

    @staticmethod
    def forward(ctx, embedding, snapshot):
        diff = embedding.float() - snapshot.float()
        flat = diff.reshape(-1)
        ctx.save_for_backward(diff)
        ctx.dtype = embedding.dtype
        return torch.dot(flat, flat)

    @staticmethod
    def backward(ctx, grad):
        (diff,) = ctx.saved_tensors  # a second backward (retain_graph) fails torch's in-place version check
        return diff.mul_(2.0 * grad).to(ctx.dtype), None


def weighted_ce_sum(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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


def ce_chunk_tokens(vocab_size: int, device: torch.device) -> int:
    """Tokens per chunk of ``chunked_weighted_ce_sum``: a (chunk × V) fp32 tile of ~16 MB on CPU
    (reused for every chunk: under glibc's 32 MB mmap ceiling, no page faults per chunk) and ~256 MB
    on GPU (few, large matmuls). At least 128 tokens: each chunk re-reads the (V × H) weight gradient."""
    budget = (256 << 20) if device.type == "cuda" else (16 << 20)
    return max(128, budget // (4 * vocab_size))


def _addmm_fp32(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """acc += a @ b with an fp32 accumulator; half inputs multiply in half precision on CUDA."""
    if acc.device.type == "cuda" and a.dtype in (torch.bfloat16, torch.float16):
        try:
            torch.addmm(acc, a, b.to(a.dtype), out_dtype=torch.float32, out=acc)
            return
        except (TypeError, RuntimeError):  # torch without out_dtype for addmm
            pass
    acc.addmm_(a.float(), b.float())


class _ChunkedWeightedCE(torch.autograd.Function):
    """Σ u_t·CE_t of ``hidden @ weight.T`` without building the (N × V) logits.

    Forward walks the tokens in chunks: logits tile z = h·Wᵀ, CE = logsumexp(z) − z[y]; the
    gradient of Σ u·CE w.r.t. the tile, u·(softmax(z) − onehot(y)), is formed in place and
    turned into dL/dh and dL/dW at once, so no tile outlives its chunk. Backward only scales
    them by the incoming gradient (the loss is a scalar). Same three matmuls as plain CE.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, weights, chunk_tokens, compute_dtype, want_grad):
        n_tok, vocab = hidden.shape[0], weight.shape[0]
        grad_hidden = torch.empty(hidden.shape, dtype=torch.float32, device=hidden.device) if want_grad else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_grad else None
        w = weight.to(compute_dtype)
        tile_buf = torch.empty((min(chunk_tokens, n_tok), vocab), dtype=compute_dtype, device=hidden.device)
        wsum = torch.zeros((), dtype=torch.float64, device=hidden.device)
        cesum = torch.zeros((), dtype=torch.float64, device=hidden.device)
        for start in range(0, n_tok, chunk_tokens):
            stop = min(start + chunk_tokens, n_tok)
            h, y, u = hidden[start:stop].to(compute_dtype), targets[start:stop, None], weights[start:stop].float()
            z = torch.mm(h, w.t(), out=tile_buf[: stop - start])
            z = z if z.dtype == torch.float32 else z.float()
            z_target = z.gather(1, y).squeeze(1)
            z_max = z.amax(1)
            z.sub_(z_max[:, None]).exp_()  # the tile now holds exp(z − max)
            sum_exp = z.sum(1)
            ce = z_max + sum_exp.log() - z_target
            wsum += (u * ce).sum()
            cesum += ce.sum()
            if want_grad:
                z.mul_((u / sum_exp)[:, None]).scatter_add_(1, y, -u[:, None])  # u·(p − onehot(y))
                g = z.to(compute_dtype)
                if compute_dtype == torch.float32:
                    torch.mm(g, w, out=grad_hidden[start:stop])
                else:
                    grad_hidden[start:stop] = torch.mm(g, w).float()
                _addmm_fp32(grad_weight, g.t(), h)
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.dtypes = (hidden.dtype, weight.dtype)
        ctx.mark_non_differentiable(cesum)
        return wsum.float(), cesum.float()

    @staticmethod
    def backward(ctx, grad_wsum, _grad_cesum):
        grad_hidden, grad_weight = ctx.saved_tensors
        if grad_wsum is None or grad_hidden is None:
            return None, None, None, None, None, None, None
        g = grad_wsum.float()  # scaled in place: no second (V × H) allocation
        return grad_hidden.mul_(g).to(ctx.dtypes[0]), grad_weight.mul_(g).to(ctx.dtypes[1]), None, None, None, None, None


def chunked_weighted_ce_sum(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
                            chunk_tokens: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``weighted_ce_sum(hidden @ weight.T, targets, weights)`` computed chunk by chunk over the
    tokens, never holding the (tokens × V) logits: the memory lever for large vocabularies.

    hidden: (..., H) inputs of the lm_head (bias-free), weight: (V, H). Only positions with a
    target are computed. The softmax and CE run in float32; the matmuls in the autocast dtype
    when autocast is on. Value and gradients equal the plain computation up to float rounding.
    """
    d = hidden.shape[-1]
    targets = targets.reshape(-1)
    keep = (targets != -100).nonzero().squeeze(1)
    h = hidden.reshape(-1, d).index_select(0, keep)
    y, u = targets.index_select(0, keep), weights.reshape(-1).index_select(0, keep)
    dtype = torch.get_autocast_dtype(h.device.type) if torch.is_autocast_enabled(h.device.type) else h.dtype
    want_grad = torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad)  # not under no_grad (eval)
    with torch.autocast(h.device.type, enabled=False):
        chunk = chunk_tokens or ce_chunk_tokens(weight.shape[0], h.device)
        return _ChunkedWeightedCE.apply(h, weight, y, u, chunk, dtype, want_grad)


class ChunkedCEHead:
    """Makes a causal LM's own forward compute the weighted CE sums in its lm_head, chunked.

    ``arm(targets, weights)`` before a forward pass: the lm_head then returns its input instead
    of logits and stores ``chunked_weighted_ce_sum`` of it, taken with ``take()``. Doing this
    inside the lm_head's forward keeps it correct where the weight only exists during that
    call (FSDP, ZeRO-3) and for tied embeddings. Unarmed, the head is the plain lm_head.
    """

    _SCALED = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier", "lm_head_multiplier")

    @classmethod
    def supports(cls, model: torch.nn.Module) -> bool:
        """A bias-free nn.Linear head whose output is used as the logits unchanged (no softcap or scale)."""
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        config = getattr(model, "config", None)
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        return (type(head) is torch.nn.Linear and head.bias is None
                and all(getattr(text, k, None) in (None, 1.0) for k in cls._SCALED))

    def __init__(self, model: torch.nn.Module) -> None:
        self.head = model.get_output_embeddings()
        self._plain = self.head.forward
        self.head.forward = self._forward
        self.pending: tuple[torch.Tensor, torch.Tensor] | None = None
        self.value: tuple[torch.Tensor, torch.Tensor] | None = None

    def _forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.pending is None:
            return self._plain(hidden)
        (targets, weights), self.pending = self.pending, None
        self.value = chunked_weighted_ce_sum(hidden, self.head.weight, targets, weights)
        return hidden  # stands in for the logits, which are never built

    def arm(self, targets: torch.Tensor, weights: torch.Tensor) -> None:
        self.pending, self.value = (targets, weights), None

    def take(self) -> tuple[torch.Tensor, torch.Tensor]:
        value, self.value, self.pending = self.value, None, None
        if value is None:
            raise RuntimeError("chunked CE head was armed but the lm_head did not run")
        return value


def token_weights(record_weight: float, n_completion: int, normalise: str) -> float:
    """u_t of one completion token of a record with weight w and n completion tokens (see module doc)."""
    if normalise == "token":
        return record_weight
    return record_weight / max(1, n_completion)


class TeaAnchor(torch.nn.Module):
    """Holds E(θ₀), a detached copy of only the input embedding matrix, in the parameter dtype,
    on the parameter's device; a buffer (never in the optimizer, never saved with the model).

    ``attach(model)`` registers a forward hook on the input embedding module: when armed, the
    hook computes ‖E − E₀‖²_F from the weight the module is actually using in that forward pass.
    Computing it inside the forward makes it correct under FSDP (the full weight exists only
    while the module runs) as well as for plain, DDP and tied/untied models. Under FSDP each
    rank keeps a full copy of E₀ (V×H values): the price of an exact anchor.
    """

    def __init__(self, embedding_weight: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("snapshot", embedding_weight.detach().clone(), persistent=False)
        self.armed = False
        self.value: torch.Tensor | None = None

    def attach(self, model: torch.nn.Module) -> "TeaAnchor":
        model.get_input_embeddings().register_forward_hook(self._hook)
        return self

    def _hook(self, module: torch.nn.Module, args, output) -> None:
        if self.armed:
            weight = module.weight
            if self.snapshot.device != weight.device:
                self.snapshot = self.snapshot.to(weight.device)
            self.value = tea_penalty(weight, self.snapshot)
            self.armed = False

    def arm(self) -> None:
        """Compute the penalty during the next forward pass (the last micro-batch of a step)."""
        self.armed, self.value = True, None

    def take(self) -> torch.Tensor:
        value, self.value = self.value, None
        if value is None:
            raise RuntimeError("TEA anchor was armed but the input embedding did not run")
        return value
