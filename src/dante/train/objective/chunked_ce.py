"""The chunked lm_head kernel (stage 4's memory lever): the objective's terms (``terms``: each
term's tile form) computed token chunk by chunk inside the student's own lm_head, so the
(tokens x vocabulary) logits are never built. Same value and gradients as the plain form.
"""

from __future__ import annotations

import torch

from dante.train.model.modules import active_module
from dante.train.objective.losses import IGNORE
from dante.train.objective.terms import CrossEntropy, Inputs, Parts, Term, Tile, TokenKD


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


class _ChunkedTerms(torch.autograd.Function):
    """Σ_k κ_k·S_k of the objective's terms on ``hidden @ weight.T`` without building the (N × V) logits.

    Forward walks the tokens in chunks: logits tile z = h·Wᵀ, its softmax statistics, and each
    term's tile form (``terms.Term.tile``): its sums and κ·dS/dz = row·p + Σ at·1[i = ids]. The
    gradient of the whole objective with respect to the tile is formed in place and turned into
    dL/dh and dL/dW at once, so no tile outlives its chunk. Backward only scales them by the
    incoming gradient (the loss is a scalar). With the CE alone: the same three matmuls as plain CE.
    """

    @staticmethod
    def forward(ctx, hidden, weight, terms, kappas, inputs, chunk_tokens, compute_dtype, want_grad):
        n_tok, vocab = hidden.shape[0], weight.shape[0]
        grad_hidden = torch.empty(hidden.shape, dtype=torch.float32, device=hidden.device) if want_grad else None
        # a frozen head (LoRA) needs no weight gradient: one (V × H) buffer and a third of the matmuls saved
        want_weight_grad = want_grad and weight.requires_grad
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_weight_grad else None
        w = weight.to(compute_dtype)
        tile_buf = torch.empty((min(chunk_tokens, n_tok), vocab), dtype=compute_dtype, device=hidden.device)
        zero = torch.zeros((), dtype=torch.float64, device=hidden.device)
        inputs = [
            term.prepare(_target_logp(hidden, w, term.ids(given)[:, 0], chunk_tokens, tile_buf), given)
            if term.needs_logp
            else given
            for term, given in zip(terms, inputs, strict=True)
        ]
        sums: dict[str, torch.Tensor] = {name: zero for t in terms for name in (t.name, *t.logs)}
        for start in range(0, n_tok, chunk_tokens):
            stop = min(start + chunk_tokens, n_tok)
            h = hidden[start:stop].to(compute_dtype)
            z = torch.mm(h, w.t(), out=tile_buf[: stop - start])
            z = z if z.dtype == torch.float32 else z.float()
            part = [tuple(x[start:stop] for x in given) for given in inputs]
            ids = [term.ids(given) for term, given in zip(terms, part, strict=True)]
            z_at = [None if i is None else z.gather(1, i.clamp_min(0)) for i in ids]
            z_max = z.amax(1)
            z.sub_(z_max[:, None]).exp_()  # the tile now holds exp(z − max)
            sum_exp = z.sum(1)
            row, at = None, []
            for term, kappa, given, i, zi in zip(terms, kappas, part, ids, z_at, strict=True):
                form = term.tile(Tile(zi, z_max, sum_exp), given, kappa)
                for name, value in form.sums.items():
                    sums[name] = sums[name] + value
                row = form.row if row is None else row + form.row
                if form.at is not None:
                    at.append((i.clamp_min(0), form.at))
            if want_grad:
                z.mul_((row / sum_exp)[:, None])  # Σ_k κ_k·row_k·p
                for i, values in at:
                    z.scatter_add_(1, i, values)
                g = z.to(compute_dtype)
                if compute_dtype == torch.float32:
                    torch.mm(g, w, out=grad_hidden[start:stop])
                else:
                    grad_hidden[start:stop] = torch.mm(g, w).float()
                if grad_weight is not None:
                    _addmm_fp32(grad_weight, g.t(), h)
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.dtypes = (hidden.dtype, weight.dtype)
        total = None
        for term, kappa in zip(terms, kappas, strict=True):
            value = sums[term.name] if kappa == 1.0 else kappa * sums[term.name]
            total = value if total is None else total + value
        others = [v.float() for v in sums.values()]
        ctx.mark_non_differentiable(*others)
        return (total.float(), *others)

    @staticmethod
    def backward(ctx, grad_total, *_grad_sums):
        grad_hidden, grad_weight = ctx.saved_tensors
        if grad_total is None or grad_hidden is None:
            return (None,) * 8
        g = grad_total.float()  # scaled in place: no second (V × H) allocation
        return (
            grad_hidden.mul_(g).to(ctx.dtypes[0]),
            None if grad_weight is None else grad_weight.mul_(g).to(ctx.dtypes[1]),
            *(None,) * 6,
        )


def _target_logp(
    hidden: torch.Tensor, w: torch.Tensor, targets: torch.Tensor, chunk_tokens: int, tile_buf: torch.Tensor
) -> torch.Tensor:
    """log softmax(h·Wᵀ)[target] of every position, tile by tile in float32, without gradient."""
    out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
    for start in range(0, hidden.shape[0], chunk_tokens):
        stop = min(start + chunk_tokens, hidden.shape[0])
        z = torch.mm(hidden[start:stop].to(w.dtype), w.t(), out=tile_buf[: stop - start])
        z = z if z.dtype == torch.float32 else z.float()
        at = z.gather(1, targets[start:stop].clamp_min(0)[:, None]).squeeze(1)
        out[start:stop] = at - torch.logsumexp(z, dim=1)
    return out


def chunked_parts(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    terms: list[Term],
    kappas: list[float],
    inputs: list[Inputs],
    chunk_tokens: int | None = None,
) -> Parts:
    """The parts of ``terms`` (κ-weighted into ``objective``) on the logits ``hidden @ weight.T``,
    computed chunk by chunk over the tokens, never holding the (tokens × V) logits: the memory lever
    for large vocabularies. Only positions with a target are computed.

    hidden: (..., H) inputs of the lm_head (bias-free), weight: (V, H); ``inputs[k]``: term k's
    tensors, each shaped like ``targets`` plus trailing dimensions. The softmax and the terms run in
    float32; the matmuls in the autocast dtype when autocast is on. Value and gradients equal the
    plain computation (``terms.plain_parts``) up to float rounding. Only ``objective`` has gradients.
    """
    d = hidden.shape[-1]
    keep = (targets.reshape(-1) != IGNORE).nonzero().squeeze(1)
    h = hidden.reshape(-1, d).index_select(0, keep)
    rows = [tuple(x.reshape(-1, *x.shape[targets.dim() :]).index_select(0, keep) for x in given) for given in inputs]
    dtype = torch.get_autocast_dtype(h.device.type) if torch.is_autocast_enabled(h.device.type) else h.dtype
    want_grad = torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad)  # not under no_grad (eval)
    with torch.autocast(h.device.type, enabled=False):
        chunk = chunk_tokens or ce_chunk_tokens(weight.shape[0], h.device)
        out = _ChunkedTerms.apply(h, weight, terms, kappas, rows, chunk, dtype, want_grad)
    names = [name for t in terms for name in (t.name, *t.logs)]
    return {"objective": out[0], **dict(zip(names, out[1:], strict=True))}


def chunked_loss_parts(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    chunk_tokens: int | None = None,
    kd: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    kd_scale: float = 1.0,
    reverse: bool = False,
) -> Parts:
    """``chunked_parts`` of the weighted CE (``cwce``, ``ce``) and, with ``kd`` = (ids, probs, v) of
    shapes (..., K), (..., K), (...), κ·``sparse_kd_sum`` (``token_kd``; κ = ``kd_scale``,
    ``reverse``: KL(p ‖ q)): the kernel next to the plain functions it equals."""
    terms: list[Term] = [CrossEntropy()]
    inputs: list[Inputs] = [(targets, weights)]
    if kd is not None:
        term = TokenKD()
        term.reverse = reverse
        terms.append(term)
        inputs.append(tuple(kd))
    return chunked_parts(hidden, weight, targets, terms, [1.0, kd_scale][: len(terms)], inputs, chunk_tokens)


def chunked_weighted_ce_sum(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    chunk_tokens: int | None = None,
    kd: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Σ u·CE + Σ v·KL, Σ CE, Σ v·KL) of ``chunked_loss_parts`` with κ = 1."""
    parts = chunked_loss_parts(hidden, weight, targets, weights, chunk_tokens, kd)
    return parts["objective"], parts["ce"], parts.get("token_kd", torch.zeros((), device=hidden.device))


class ChunkedCEHead:
    """Makes a causal LM's own forward compute the weighted CE sums in its lm_head, chunked.

    ``arm(targets, terms, kappas, inputs)`` before a forward pass: the lm_head then returns its
    input instead of logits and stores ``chunked_parts`` of it, taken with ``take()``. Doing this
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
        self.value: Parts | None = None

    def _forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.pending is None:
            return self._plain(hidden)
        (targets, terms, kappas, inputs), self.pending = self.pending, None
        self.value = chunked_parts(hidden, self.head.weight, targets, terms, kappas, inputs)
        return hidden  # stands in for the logits, which are never built

    def arm(self, targets: torch.Tensor, terms: list[Term], kappas: list[float], inputs: list[Inputs]) -> None:
        """The next forward pass computes these terms' parts in the lm_head (``chunked_parts``)."""
        self.pending, self.value = (targets, terms, kappas, inputs), None

    def take(self) -> Parts:
        value, self.value, self.pending = self.value, None, None
        if value is None:
            raise RuntimeError("chunked CE head was armed but the lm_head did not run")
        return value
