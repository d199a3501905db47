"""AST's smoothness terms for expert training (paper Eq. 19): a clipped (scaled) CE and a gradient penalty."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from distillery.experts.recipes import Recipe


def epoch_lr(recipe: Recipe, epoch: int) -> float:
    """The learning rate of 0-based `epoch`: recipe.lr, times lr_decay from epoch ⌊lr_decay_at·epochs⌋ on."""
    decayed = recipe.lr_decay_at is not None and epoch >= int(recipe.lr_decay_at * recipe.epochs)
    return recipe.lr * recipe.lr_decay if decayed else recipe.lr


def clip_coefficient(recipe: Recipe, epoch: int) -> float:
    """λ_e, the CE scale of 0-based `epoch`: clip_start + (1 − clip_start)·e/clip_epochs below clip_epochs, else 1."""
    if epoch >= recipe.clip_epochs:
        return 1.0
    return recipe.clip_start + (1.0 - recipe.clip_start) * epoch / recipe.clip_epochs


def gradient_penalty(logits: Tensor, inputs: Tensor, target: float = 1.0) -> Tensor:
    """mean_i (‖∇_{x_i} Σ_c logits_ic‖₂ − target)², the norm per sample over all input dims (WGAN-GP).

    `inputs` must require grad and `logits` come from them; the graph is kept so the penalty can be trained.
    (AST's code takes the norm over channels per pixel and runs a second pass on un-augmented inputs.)
    """
    grads, = torch.autograd.grad(logits.sum(), inputs, create_graph=True)
    norms = torch.linalg.vector_norm(grads.flatten(1), dim=1)
    return (norms - target).pow(2).mean()


def expert_loss(logits: Tensor, labels: Tensor, inputs: Tensor, recipe: Recipe, epoch: int) -> Tensor:
    """λ_e·CE + μ·penalty (paper Eq. 19); plain CE for recipes without clipping or penalty."""
    loss = F.cross_entropy(logits, labels)
    scale = clip_coefficient(recipe, epoch)
    if scale != 1.0:
        loss = scale * loss
    if recipe.gp_weight > 0:
        loss = loss + recipe.gp_weight * gradient_penalty(logits, inputs, recipe.gp_target)
    return loss
