"""AST's smoothness terms for expert training (paper Eq. 19): a clipped (scaled) CE and a gradient penalty, and
the recipes' lr schedule."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillery.experts.recipes import Recipe


def decay_epoch(recipe: Recipe) -> int | None:
    """The first 0-based epoch at the decayed lr: ⌊lr_decay_at·epochs⌋ + lr_decay_delay (None: constant lr)."""
    if recipe.lr_decay_at is None:
        return None
    return int(recipe.lr_decay_at * recipe.epochs) + recipe.lr_decay_delay


def epoch_lr(recipe: Recipe, epoch: int) -> float:
    """The learning rate of 0-based `epoch`: recipe.lr, times lr_decay from decay_epoch on."""
    start = decay_epoch(recipe)
    return recipe.lr * recipe.lr_decay if start is not None and epoch >= start else recipe.lr


def restarts_optimizer(recipe: Recipe, epoch: int) -> bool:
    """Whether the optimizer starts afresh (momentum, Adam moments cleared) at `epoch`: AST's buffer.py rebuilds it
    when it decays the lr."""
    return recipe.lr_decay_reset and epoch == decay_epoch(recipe)


def clip_coefficient(recipe: Recipe, epoch: int) -> float:
    """λ_e, the CE scale of 0-based `epoch`: clip_start + (1 − clip_start)·e/clip_epochs below clip_epochs, else 1."""
    if epoch >= recipe.clip_epochs:
        return 1.0
    return recipe.clip_start + (1.0 - recipe.clip_start) * epoch / recipe.clip_epochs


def gradient_penalty(logits: Tensor, inputs: Tensor, target: float = 1.0, norm: str = "sample") -> Tensor:
    """mean (‖∇_x Σ_c logits_c‖₂ − target)² with G = ∇_x Σ_c logits_c (WGAN-GP).

    norm "sample": ‖G_i‖ over all of input i's dims, the mean over samples (the paper's Eq. 19); "pixel": ‖G_i,:,h,w‖
    over the channels of each pixel, the mean over (sample, pixel) (AST's utils.py:epoch_gp). `inputs` must require
    grad and `logits` come from them; the graph is kept so the penalty can be trained.
    """
    grads, = torch.autograd.grad(logits.sum(), inputs, create_graph=True)
    if norm == "pixel":
        norms = torch.linalg.vector_norm(grads, dim=1)
    elif norm == "sample":
        norms = torch.linalg.vector_norm(grads.flatten(1), dim=1)
    else:
        raise ValueError(f"gradient penalty norm {norm!r}: choose sample or pixel")
    return (norms - target).pow(2).mean()


def expert_loss(model: nn.Module, x: Tensor, clean: Tensor, labels: Tensor, recipe: Recipe,
                epoch: int) -> tuple[Tensor, Tensor]:
    """(λ_e·CE(model(x)) + μ·penalty, the logits of x): the recipe's loss on the (augmented) batch `x` whose
    un-augmented images are `clean`; plain CE for recipes without clipping or penalty.

    The penalty differentiates the training pass itself (gp_input "augmented": one forward pass) or a second pass
    on `clean` (gp_input "clean", as AST's code)."""
    penalised = recipe.gp_weight > 0
    if penalised and recipe.gp_input == "augmented":
        x = x.detach().requires_grad_()
    logits = model(x)
    loss = F.cross_entropy(logits, labels)
    scale = clip_coefficient(recipe, epoch)
    if scale != 1.0:
        loss = scale * loss
    if penalised:
        if recipe.gp_input == "clean":
            x = clean.detach().requires_grad_()
            penalty = gradient_penalty(model(x), x, recipe.gp_target, recipe.gp_norm)
        else:
            penalty = gradient_penalty(logits, x, recipe.gp_target, recipe.gp_norm)
        loss = loss + recipe.gp_weight * penalty
    return loss, logits
