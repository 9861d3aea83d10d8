"""The TEA anchor (stage 4, the card's L_TEA): a forward hook on the student's input embedding
that measures ‖E − E₀‖²_F from the weight the module is using, once per step when armed.
The objective's TEA term (``dante.train.objective.terms.Tea``) arms it and adds λ_TEA(t)·L_TEA.
"""

from __future__ import annotations

import torch


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


class TeaAnchor(torch.nn.Module):
    """Holds E(θ₀), a detached copy of only the input embedding matrix, in the parameter dtype,
    on the parameter's device; a buffer (never in the optimizer, never saved with the model).

    ``attach(model)`` registers a forward hook on the input embedding module: when armed, the
    hook computes ‖E − E₀‖²_F from the weight the module is actually using in that forward pass.
    Computing it inside the forward makes it correct under FSDP (the full weight exists only
    while the module runs) as well as for plain, DDP and tied/untied models. Under FSDP each
    rank keeps a full copy of E₀ (V×H values): the price of an exact anchor.
    """

    def __init__(self, embedding_weight: torch.Tensor | None) -> None:
        super().__init__()
        if embedding_weight is not None:  # None: a subclass measures the drift without a snapshot
            self.register_buffer("snapshot", embedding_weight.detach().clone(), persistent=False)
        self.armed = False
        self.value: torch.Tensor | None = None

    def attach(self, model: torch.nn.Module, module: torch.nn.Module | None = None) -> TeaAnchor:
        """Hook the model's input embedding, or ``module`` (the embedding module that actually
        runs, e.g. the trained copy inside a LoRA student)."""
        (module or model.get_input_embeddings()).register_forward_hook(self._hook)
        return self

    def penalty(self, module: torch.nn.Module) -> torch.Tensor:
        """‖E − E₀‖²_F of the weight ``module`` is using in this forward pass."""
        weight = module.weight
        if self.snapshot.device != weight.device:
            self.snapshot = self.snapshot.to(weight.device)
        return tea_penalty(weight, self.snapshot)

    def _hook(self, module: torch.nn.Module, args, output) -> None:
        if self.armed:
            self.value = self.penalty(module)
            self.armed = False

    def arm(self) -> None:
        """Compute the penalty during the next forward pass (the last micro-batch of a step)."""
        self.armed, self.value = True, None

    def take(self) -> torch.Tensor:
        value, self.value = self.value, None
        if value is None:
            raise RuntimeError("TEA anchor was armed but the input embedding did not run")
        return value
