"""Sharpness-aware minimisation: one step serving GSAM (FTD's flat experts) and plain SAM (FTD's SAM evaluation)."""
from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Iterator

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm


def _norm(tensors: list[Tensor]) -> Tensor:
    """The 2-norm of all `tensors` taken together as one vector."""
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors]))


@contextlib.contextmanager
def _frozen_running_stats(norms: list[_BatchNorm]) -> Iterator[None]:
    """BatchNorm momentum 0 inside the block (as FTD's GSAM), and the batch counter restored after, so a forward
    pass at the perturbed weights leaves every running statistic as it was."""
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


class SharpnessAware:
    """Wraps a base optimizer (SGD) so that each step descends along the gradient at a nearby worst-case point.

    step(closure): g = ∇L(w); e = ρ·s⊙g/(‖s⊙g‖₂ + eps) with s = |w| when `adaptive` (ASAM/GSAM,
    i.e. e = ρ·w²⊙g/(‖|w|⊙g‖₂ + eps)) or s = 1 (plain SAM); g_p = ∇L(w + e); w restored exactly;
    then the GSAM direction d = g_p − α·g_⊥ with g_⊥ = g − (⟨g, g_p⟩/‖g_p‖²)·g_p (α = 0 gives SAM);
    p.grad = d; base.step().
    Norms and inner products run over all parameters jointly (one global vector); parameters without a
    gradient are skipped. If `model` is given, its BatchNorm layers get momentum 0 during the perturbed pass
    (as FTD's reference) and their batch counters are restored, so running statistics see only the pass at w.
    """

    def __init__(self, params: Iterable[Tensor], base: torch.optim.Optimizer, rho: float, alpha: float = 0.0,
                 adaptive: bool = False, eps: float = 1e-12, model: nn.Module | None = None) -> None:
        if not rho > 0:
            raise ValueError(f"SharpnessAware rho must be > 0 (got {rho})")
        if not alpha >= 0:
            raise ValueError(f"SharpnessAware alpha must be >= 0 (got {alpha})")
        self.params = list(params)
        self.base, self.rho, self.alpha, self.adaptive, self.eps = base, rho, alpha, adaptive, eps
        self.norms = [m for m in model.modules() if isinstance(m, _BatchNorm)] if model is not None else []

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor]) -> Tensor:
        """One sharpness-aware update; `closure` zeroes grads, computes the loss, calls backward and returns it.
        Returns the loss at the unperturbed weights."""
        with torch.enable_grad():
            loss = closure()
        params = [p for p in self.params if p.grad is not None]
        if not params:
            return loss.detach()
        weights = [p.detach().clone() for p in params]
        grads = [p.grad.detach().clone() for p in params]
        scaled = [w.abs() * g for w, g in zip(weights, grads)] if self.adaptive else grads
        scale = self.rho / (_norm(scaled) + self.eps)
        for p, w, s in zip(params, weights, scaled):
            p.add_((w.abs() * s if self.adaptive else s) * scale)
        self.zero_grad()
        with torch.enable_grad(), _frozen_running_stats(self.norms):
            closure()
        for p, w in zip(params, weights):
            p.copy_(w)
        perturbed = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
        if self.alpha > 0:
            inner = sum((g * gp).sum() for g, gp in zip(grads, perturbed))
            coef = inner / (_norm(perturbed) ** 2 + self.eps)
            perturbed = [gp - self.alpha * (g - coef * gp) for g, gp in zip(grads, perturbed)]
        for p, d in zip(params, perturbed):
            p.grad = d
        self.base.step()
        return loss.detach()

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of the wrapped parameters."""
        for p in self.params:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.zero_()
