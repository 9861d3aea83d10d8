"""The chunked lm_head + CE kernel (stage 4's memory lever): ``weighted_ce_sum`` of
``dante.train.losses`` computed token chunk by chunk inside the student's own lm_head, so the
(tokens x vocabulary) logits are never built. Same value and gradients as the plain form.
"""

from __future__ import annotations

import torch

from dante.train.lora import active_module
from dante.train.losses import LossParts, sparse_kl_terms


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
    """Σ u_t·CE_t (+ κ·Σ v_t·KL_t) of ``hidden @ weight.T`` without building the (N × V) logits.

    Forward walks the tokens in chunks: logits tile z = h·Wᵀ, CE = logsumexp(z) − z[y]; the
    gradient of Σ u·CE w.r.t. the tile, u·(softmax(z) − onehot(y)), is formed in place and
    turned into dL/dh and dL/dW at once, so no tile outlives its chunk. Backward only scales
    them by the incoming gradient (the loss is a scalar). Same three matmuls as plain CE.
    """

    @staticmethod
    def forward(
        ctx,
        hidden,
        weight,
        targets,
        weights,
        chunk_tokens,
        compute_dtype,
        want_grad,
        kd=None,
        kd_scale=1.0,
        reverse=False,
    ):
        n_tok, vocab = hidden.shape[0], weight.shape[0]
        kdsum = torch.zeros((), dtype=torch.float64, device=hidden.device)
        grad_hidden = torch.empty(hidden.shape, dtype=torch.float32, device=hidden.device) if want_grad else None
        # a frozen head (LoRA) needs no weight gradient: one (V × H) buffer and a third of the matmuls saved
        want_weight_grad = want_grad and weight.requires_grad
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_weight_grad else None
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
            z_kd = z.gather(1, kd[0][start:stop].clamp_min(0)) if kd is not None else None
            z.sub_(z_max[:, None]).exp_()  # the tile now holds exp(z − max)
            sum_exp = z.sum(1)
            ce = z_max + sum_exp.log() - z_target
            wsum += (u * ce).sum()
            cesum += ce.sum()
            scale, extra = u, None
            if kd is not None:  # the sparse top-K KL of losses.sparse_kd_sum, value and gradient in the same tile
                value, scale, extra = _kd_tile(
                    z_kd, z_max, sum_exp, kd[0][start:stop], kd[1][start:stop], kd[2][start:stop], u, kd_scale, reverse
                )
                kdsum += value
            if want_grad:
                z.mul_((scale / sum_exp)[:, None]).scatter_add_(1, y, -u[:, None])  # u·(p − onehot(y)) (+ KL's part)
                if extra is not None:
                    z.scatter_add_(1, kd[0][start:stop].clamp_min(0), extra)
                g = z.to(compute_dtype)
                if compute_dtype == torch.float32:
                    torch.mm(g, w, out=grad_hidden[start:stop])
                else:
                    grad_hidden[start:stop] = torch.mm(g, w).float()
                if grad_weight is not None:
                    _addmm_fp32(grad_weight, g.t(), h)
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.dtypes = (hidden.dtype, weight.dtype)
        total = (wsum + kd_scale * kdsum).float()
        cesum, kdsum, wsum = cesum.float(), kdsum.float(), wsum.float()
        ctx.mark_non_differentiable(cesum, kdsum, wsum)
        return total, cesum, kdsum, wsum

    @staticmethod
    def backward(ctx, grad_wsum, _grad_cesum, _grad_kdsum, _grad_weighted):
        grad_hidden, grad_weight = ctx.saved_tensors
        if grad_wsum is None or grad_hidden is None:
            return (None,) * 11
        g = grad_wsum.float()  # scaled in place: no second (V × H) allocation
        return (
            grad_hidden.mul_(g).to(ctx.dtypes[0]),
            None if grad_weight is None else grad_weight.mul_(g).to(ctx.dtypes[1]),
            *(None,) * 9,
        )


def _kd_tile(z_kd, z_max, sum_exp, ids, probs, v, u, kd_scale=1.0, reverse=False):
    """Σ v·KL_t of one tile and the coefficients of the gradient of κ·Σ v·KL_t
    (``losses.sparse_kl_terms``: dKL_t/dz_i = row_t·p_i + Σ_k at_ids_tk·1[i = J_k]). Returns the
    value (unscaled), the per-row factor of p (u + κv·row) and the values added at the mapped
    ids (κv·at_ids)."""
    t = sparse_kl_terms(z_kd - z_max[:, None] - sum_exp.log()[:, None], ids, probs, reverse)
    value = (v * t.kl).sum()
    v = v * kd_scale if kd_scale != 1.0 else v
    return value, u + v * t.row, v[:, None] * t.at_ids


def chunked_loss_parts(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    chunk_tokens: int | None = None,
    kd: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    kd_scale: float = 1.0,
    reverse: bool = False,
) -> LossParts:
    """``weighted_ce_sum(hidden @ weight.T, targets, weights)`` computed chunk by chunk over the
    tokens, never holding the (tokens × V) logits: the memory lever for large vocabularies.

    hidden: (..., H) inputs of the lm_head (bias-free), weight: (V, H). Only positions with a
    target are computed. The softmax and CE run in float32; the matmuls in the autocast dtype
    when autocast is on. Value and gradients equal the plain computation up to float rounding.
    ``kd`` = (ids, probs, v) of shapes (..., K), (..., K), (...) adds κ · ``sparse_kd_sum`` in the
    same tiles (κ = ``kd_scale``; ``reverse``: KL(p ‖ q)). Returns the ``LossParts``; only
    ``objective`` has gradients.
    """
    d = hidden.shape[-1]
    targets = targets.reshape(-1)
    keep = (targets != -100).nonzero().squeeze(1)
    h = hidden.reshape(-1, d).index_select(0, keep)
    y, u = targets.index_select(0, keep), weights.reshape(-1).index_select(0, keep)
    if kd is not None:
        k = kd[0].shape[-1]
        kd = (
            kd[0].reshape(-1, k).index_select(0, keep),
            kd[1].reshape(-1, k).index_select(0, keep).float(),
            kd[2].reshape(-1).index_select(0, keep).float(),
        )
    dtype = torch.get_autocast_dtype(h.device.type) if torch.is_autocast_enabled(h.device.type) else h.dtype
    want_grad = torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad)  # not under no_grad (eval)
    with torch.autocast(h.device.type, enabled=False):
        chunk = chunk_tokens or ce_chunk_tokens(weight.shape[0], h.device)
        return LossParts(*_ChunkedWeightedCE.apply(h, weight, y, u, chunk, dtype, want_grad, kd, kd_scale, reverse))


def chunked_weighted_ce_sum(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    chunk_tokens: int | None = None,
    kd: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Σ u·CE + Σ v·KL, Σ CE, Σ v·KL) of ``chunked_loss_parts`` with κ = 1: the kernel next to
    the plain ``weighted_ce_sum`` and ``sparse_kd_sum`` it equals."""
    parts = chunked_loss_parts(hidden, weight, targets, weights, chunk_tokens, kd)
    return parts.objective, parts.ce, parts.token_kd


class ChunkedCEHead:
    """Makes a causal LM's own forward compute the weighted CE sums in its lm_head, chunked.

    ``arm(targets, weights)`` before a forward pass: the lm_head then returns its input instead
    of logits and stores ``chunked_loss_parts`` of it, taken with ``take()``. Doing this
    inside the lm_head's forward keeps it correct where the weight only exists during that
    call (FSDP, ZeRO-3) and for tied embeddings. Unarmed, the head is the plain lm_head.
    """

    _SCALED = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier", "lm_head_multiplier")

    @classmethod
    def supports(cls, model: torch.nn.Module) -> bool:
        """A bias-free nn.Linear head whose output is used as the logits unchanged (no softcap or scale)."""
        head = active_module(model.get_output_embeddings()) if hasattr(model, "get_output_embeddings") else None
        config = getattr(model, "config", None)
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        return (
            type(head) is torch.nn.Linear
            and head.bias is None
            and all(getattr(text, k, None) in (None, 1.0) for k in cls._SCALED)
        )

    def __init__(self, model: torch.nn.Module) -> None:
        self.head = active_module(model.get_output_embeddings())  # a trained head copy under LoRA (modules_to_save)
        self._plain = self.head.forward
        self.head.forward = self._forward
        self.pending: tuple | None = None
        self.value: LossParts | None = None

    def _forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.pending is None:
            return self._plain(hidden)
        (targets, weights, kd, kd_scale, reverse), self.pending = self.pending, None
        self.value = chunked_loss_parts(
            hidden, self.head.weight, targets, weights, kd=kd, kd_scale=kd_scale, reverse=reverse
        )
        return hidden  # stands in for the logits, which are never built

    def arm(
        self, targets: torch.Tensor, weights: torch.Tensor, kd=None, kd_scale: float = 1.0, reverse: bool = False
    ) -> None:
        self.pending, self.value = (targets, weights, kd, kd_scale, reverse), None

    def take(self) -> LossParts:
        value, self.value, self.pending = self.value, None, None
        if value is None:
            raise RuntimeError("chunked CE head was armed but the lm_head did not run")
        return value
