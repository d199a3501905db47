"""Memory modes of the student unroll: the gradient of a matching loss through N SGD steps without holding N
steps' activation graphs, and chunked inner steps whose peak activation memory is one chunk of `batch_syn`.

The unroll is θ_{i+1} = θ_i − lr·g_i, g_i = ∇_θ ℓ_i(θ_i, A_i(x_{b_i})), with ℓ_i the (scaled) cross-entropy of
step i's minibatch b_i under its DSA draw A_i. With a_{i+1} = ∂L/∂θ_{i+1} (the adjoint), reverse mode gives

    ∂L/∂x  += −lr·(∂g_i/∂x)ᵀ a_{i+1}        ∂L/∂lr += −a_{i+1}ᵀ g_i        a_i = a_{i+1} − lr·H_i a_{i+1}

plus, at a kept point i, that point's own gradient added to a_i. With inner momentum μ (b_0 = g_0,
b_i = μ·b_{i−1} + g_i, θ_{i+1} = θ_i − lr·b_i) the adjoint of b_i is c_i = ∂L/∂b_i = −lr·a_{i+1} + μ·c_{i+1}, i.e.
c_i = −lr·D_i with D_i = a_{i+1} + μ·D_{i+1} (D_N = 0), and g_i enters only through b_i, so

    ∂L/∂x  += −lr·(∂g_i/∂x)ᵀ D_i            ∂L/∂lr += −D_iᵀ g_i              a_i = a_{i+1} − lr·H_i D_i

(∂L/∂lr = −Σ_i a_{i+1}ᵀ b_i regrouped by g_i); μ = 0 gives D_i = a_{i+1}, the lines above. No velocity needs to be
stored. Modes:

- full: the create_graph unroll (matching.unroll_path); keeps every step's double-backward graph, so memory
  grows with N.
- recompute: exact. The forward runs the steps without a graph, storing θ_0 … θ_{N−1} (N·P floats) and each
  step's batch indices and DSA generator state; the backward walks i = N−1 … 0 recomputing one step's graph at
  a time (one Hessian-vector product per step), carrying D_i beside a_i.
- constant: TESLA (Cui et al. 2023). Memory independent of N: the forward keeps only θ_0; the backward replays
  the same batches and augmentations from θ_0 and accumulates the image and lr gradients with a_{i+1} taken as
  the sum of the gradients of the outputs after step i, i.e. it drops every H_i term. TESLA's paper calls the
  procedure exact; it is exact only where the Hessians vanish: for inner SGD without momentum the image
  gradient misses the terms through which an earlier batch moves the later θ_j, and the lr gradient likewise
  (a_i ≡ a_N instead of a_i = ∏(I − lr·H_j) a_N). With N = 1 the image and lr gradients are exact; the start's
  gradient is always a_1 (first order). Its error grows with lr·‖H‖ and N: on tests/test_memory.py's tiny
  float64 problem (lr 0.1, DSA, batch 4 of 9) the image gradient's relative error against `full` is 10% at N = 2,
  24% at N = 5 (lr gradient 14%) and 39% at N = 10; at lr 0.01, N = 5 it is 1.8%. With inner momentum μ its
  first-order analogue keeps a_{k+1} = Σ_{n>k} (output n's gradient), so D_i = Σ_{n>i} w_{n−i}·(output n's
  gradient), w_k = 1 + μ + … + μ^{k−1}; the replay carries b_i. The dropped terms grow with the effective step
  lr/(1 − μ): at μ = 0.9 on the same problem the image gradient's error is 7.8% at N = 2, 27% at N = 5 (lr gradient
  6%) and 65% at N = 10.

Learned labels (DATM: float logits y, the inner loss soft cross-entropy) enter g_i as the images do, so
∂L/∂y_b += −lr·(∂g_i/∂y_b)ᵀ D_i in recompute (exact) and with the first-order D_i in constant, taken in the same
replayed products.

Chunking (`chunk` images per piece) sums each step's gradient over chunks of the augmented minibatch, each
chunk's CE weighted by its share of the batch, so results equal the unchunked ones up to rounding. The whole
minibatch is augmented once before it is split, so chunking draws the same DSA parameters. Under `full` the
kept graphs still grow with N (one chunk is live per step during the forward, but all are kept for backward).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from distillery.augment import dsa
from distillery.distill.components import inner_loss
from distillery.functional import FlatModel


def step_gradient(student: FlatModel, theta: Tensor, x: Tensor, y: Tensor, scale: float, chunk: int | None,
                  create_graph: bool) -> Tensor:
    """∇_θ scale·CE(student(θ, x), y) over the whole batch, summed over chunks of `chunk` images when set (soft
    cross-entropy when `y` are learned logits).

    Unchunked it is exactly the original single call (so `full` results are unchanged); chunk c's mean CE is
    weighted by |c|/B, which makes the sum the batch mean.
    """
    if chunk is None or chunk >= len(x):
        loss = inner_loss(student(theta, x), y)
        if scale != 1.0:
            loss = scale * loss
        (grad,) = torch.autograd.grad(loss, theta, create_graph=create_graph)
        return grad
    total = None
    for xs, ys in zip(x.split(chunk), y.split(chunk)):
        loss = inner_loss(student(theta, xs), ys) * (scale * len(xs) / len(x))
        (grad,) = torch.autograd.grad(loss, theta, create_graph=create_graph)
        total = grad if total is None else total + grad
    return total


def velocity(previous: Tensor | None, grad: Tensor, momentum: float) -> Tensor:
    """The inner step's direction b_n: g_0 first, then momentum·b_{n−1} + g_n (no dampening, no Nesterov, no
    weight decay: AST's distill.py:548-556); g_n itself when momentum is 0. Run backwards over the adjoints a_{i+1}
    it gives D_i."""
    if previous is None or momentum == 0:
        return grad
    return momentum * previous + grad


def velocity_weight(momentum: float, k: int) -> float:
    """w_k = 1 + μ + … + μ^{k−1}: how much of the gradient of an output k steps after step i its velocity carries
    (first order); 1 without momentum."""
    return 1.0 if momentum == 0 else sum(momentum ** j for j in range(k))


@dataclass
class Unroll:
    """What an unroll needs besides its differentiable inputs (start θ_0, images, lr)."""

    student: FlatModel
    steps: int
    batches: object  # matching.Batches: .next() gives a step's indices
    aug: torch.Generator
    strategy: str
    points: Sequence[int]
    scale: float
    chunk: int | None
    mode: str
    momentum: float = 0.0


def _vjp_step(u: Unroll, theta: Tensor, images: Tensor, labels: Tensor, idx: Tensor, state: Tensor, adjoint: Tensor,
              want_hvp: bool, want_labels: bool) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """Replay step i at θ_i (same batch, same DSA draw) and return (g_i, (∂g_i/∂x_b)ᵀa, H_i a or None,
    (∂g_i/∂y_b)ᵀa or None).

    The minibatch is augmented once, then each chunk's double-backward graph lives only while its products are
    taken, so peak memory is one chunk of one step.
    """
    replay = torch.Generator(device="cpu")
    replay.set_state(state)
    with torch.enable_grad():
        xb = images.detach()[idx].requires_grad_(True)
        x_aug = dsa(xb, replay, u.strategy)
        xa = x_aug.detach().requires_grad_(True)
        th = theta.detach().requires_grad_(True)
        y = labels.detach()[idx].requires_grad_(want_labels)
        size = len(xa) if u.chunk is None else u.chunk
        grad, grad_x = torch.zeros_like(th), torch.zeros_like(xa)
        hvp = torch.zeros_like(th) if want_hvp else None
        grad_y = torch.zeros_like(y) if want_labels else None
        for start in range(0, len(xa), size):
            xs, ys = xa[start:start + size], y[start:start + size]
            loss = inner_loss(u.student(th, xs), ys)
            weight = u.scale * len(xs) / len(xa)
            if weight != 1.0:
                loss = loss * weight
            (g,) = torch.autograd.grad(loss, th, create_graph=True)
            wrt = (xa,) + ((y,) if want_labels else ()) + ((th,) if want_hvp else ())
            products = torch.autograd.grad(g, wrt, adjoint, materialize_grads=True)  # zeros where unused
            grad += g.detach()
            grad_x += products[0]
            if want_labels:
                grad_y += products[1]
            if want_hvp:
                hvp += products[-1]
        (grad_xb,) = torch.autograd.grad(x_aug, xb, grad_x) if x_aug is not xb else (grad_x,)
    return grad, grad_xb, hvp, grad_y


class _MemoryUnroll(torch.autograd.Function):
    """The unroll as one autograd node: outputs [θ_n for n in points] + [θ_N], gradients by replay."""

    @staticmethod
    def forward(ctx, start: Tensor, images: Tensor, lr: Tensor, labels: Tensor,  # type: ignore[override]
                u: Unroll):
        theta, lr_value, x_all, y_all, b = start.detach(), lr.detach(), images.detach(), labels.detach(), None
        thetas, idxs, states, kept = [], [], [], []
        for n in range(1, u.steps + 1):
            idx = u.batches.next()
            states.append(u.aug.get_state())
            x = dsa(x_all[idx], u.aug, u.strategy)
            with torch.enable_grad():
                grad = step_gradient(u.student, theta.requires_grad_(True), x, y_all[idx], u.scale, u.chunk,
                                     create_graph=False)
            theta = theta.detach()
            if u.mode == "recompute":
                thetas.append(theta)
            idxs.append(idx)
            b = velocity(b, grad, u.momentum)
            theta = theta - lr_value * b
            if n in u.points:
                kept.append(theta.clone())
        stored = torch.stack(thetas) if thetas else start.detach()
        ctx.save_for_backward(stored, images, lr)
        # labels by reference, not saved: the calibrated model of saved bytes counts learned labels on their own
        ctx.u, ctx.idxs, ctx.states, ctx.labels = u, idxs, states, labels
        return (*kept, theta)

    @staticmethod
    def backward(ctx, *grads: Tensor):  # type: ignore[override]
        stored, images, lr = ctx.saved_tensors
        u, idxs, states, labels = ctx.u, ctx.idxs, ctx.states, ctx.labels
        want_labels = ctx.needs_input_grad[3]
        at: dict[int, Tensor] = {}
        for n, grad in zip(list(u.points) + [u.steps], grads):
            at[n] = at[n] + grad if n in at else grad
        lr_value = lr.detach()
        grad_images = torch.zeros_like(images)
        grad_lr = torch.zeros_like(lr_value)
        grad_labels = torch.zeros_like(labels) if want_labels else None
        if u.mode == "recompute":
            adjoint = at.get(u.steps, torch.zeros_like(stored[0]))  # a_{i+1}
            later = None                                             # D_{i+1}
            for i in range(u.steps - 1, -1, -1):
                direction = velocity(later, adjoint, u.momentum)  # D_i = a_{i+1} + μ·D_{i+1}
                g, gx, hvp, gy = _vjp_step(u, stored[i], images, labels, idxs[i], states[i], direction,
                                           want_hvp=i > 0 or ctx.needs_input_grad[0], want_labels=want_labels)
                grad_lr -= direction.dot(g)
                grad_images.index_add_(0, idxs[i], gx * -lr_value)
                if want_labels:
                    grad_labels.index_add_(0, idxs[i], gy * -lr_value)
                if hvp is not None:
                    adjoint = adjoint - lr_value * hvp
                if i in at:
                    adjoint = adjoint + at[i]
                later = direction
            grad_start = adjoint
        else:  # constant: replay from θ_0, the adjoint of step i the later outputs' gradients, weighted by w_{n−i}
            theta, b = stored, None
            for i in range(u.steps):
                direction = sum(grad * velocity_weight(u.momentum, n - i) for n, grad in at.items() if n > i)
                if not torch.is_tensor(direction):
                    direction = torch.zeros_like(theta)
                g, gx, _, gy = _vjp_step(u, theta, images, labels, idxs[i], states[i], direction, want_hvp=False,
                                         want_labels=want_labels)
                grad_lr -= direction.dot(g)
                grad_images.index_add_(0, idxs[i], gx * -lr_value)
                if want_labels:
                    grad_labels.index_add_(0, idxs[i], gy * -lr_value)
                b = velocity(b, g, u.momentum)
                theta = theta - lr_value * b
            grad_start = sum(at.values())
        return (grad_start if ctx.needs_input_grad[0] else None,
                grad_images if ctx.needs_input_grad[1] else None,
                grad_lr if ctx.needs_input_grad[2] else None, grad_labels, None)


def memory_unroll(student: FlatModel, start: Tensor, images: Tensor, labels: Tensor, lr: Tensor, steps: int,
                  batches, aug: torch.Generator, strategy: str, points: Sequence[int], scale: float,
                  chunk: int | None, memory: str, momentum: float = 0.0) -> list[Tensor]:
    """unroll_path under memory `recompute` or `constant`: [θ_n for n in points] + [θ_N], differentiable in
    start, images, lr and (learned, float) labels, consuming the batch and DSA generators exactly as the full
    unroll does."""
    if memory not in ("recompute", "constant"):
        raise ValueError(f"memory={memory!r}: memory_unroll handles recompute and constant; full is unroll_path's")
    kept = tuple(n for n in range(1, steps + 1) if n in points)  # the full unroll's order: by step, no repeats
    u = Unroll(student, steps, batches, aug, strategy, kept, scale, chunk, memory, momentum)
    return list(_MemoryUnroll.apply(start, images, lr, labels, u))
