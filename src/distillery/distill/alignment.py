"""AST's student-side parts (Shen et al. 2023): balanced inner loss (Eq. 20), intermediate matching points
(Sec. IV-D1) and filter-normalised weight perturbation of the expert start (Eq. 23)."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from distillery.functional import FlatModel


def balance_coefficient(t: int, max_start_epoch: int, theta: float) -> float:
    """ν(t) = ln(t − h + ϑ) if t ≥ h, else 1 / ln(h − t + ϑ), with h = max_start_epoch // 2 (Eq. 20).

    The paper writes log; the authors' code uses log base 5, i.e. ν_code = ν / ln 5 (and ln 5 · ν below h).
    """
    middle = max_start_epoch // 2
    if t >= middle:
        return math.log(t - middle + theta)
    return 1.0 / math.log(middle - t + theta)


def intermediate_points(syn_steps: int, expert_epochs: int) -> list[int]:
    """ξ_i = ⌊i·N/M⌋ for i = 1..M−1: student step ξ_i is matched to expert epoch t + i."""
    return [i * syn_steps // expert_epochs for i in range(1, expert_epochs)]


def intermediate_weights(mode: str, expert_epochs: int) -> list[float]:
    """β_i: 1 for "equal", i/M for "varied" (the paper's scale growing with ξ_i), none for "none"."""
    if mode == "none":
        return []
    if mode == "equal":
        return [1.0] * (expert_epochs - 1)
    if mode == "varied":
        return [i / expert_epochs for i in range(1, expert_epochs)]
    raise ValueError(f"unknown intermediate matching '{mode}'; choose none, equal or varied")


def filter_mask(student: FlatModel) -> list[bool]:
    """Which flat parameters have filters: conv and linear weights (norm parameters and biases do not)."""
    layers = dict(student.module.named_modules())
    mask = []
    for name in student.names:
        owner, _, leaf = name.rpartition(".")
        mask.append(leaf == "weight" and isinstance(layers[owner], (nn.modules.conv._ConvNd, nn.Linear)))
    return mask


def filter_perturbation(start: Tensor, shapes: Sequence[torch.Size], scale: float, generator: torch.Generator,
                        mask: Sequence[bool] | None = None) -> Tensor:
    """θ*_t + ρ·d (Eq. 23): per output filter j of each masked parameter, d_j ~ N(0, I) rescaled to ‖θ_j‖_F.

    `mask` defaults to every parameter with at least 2 dims. The noise is drawn on the CPU from `generator`,
    parameter by parameter. The authors' code perturbs only 4-D conv weights (and scales by W elementwise).
    """
    if mask is None:
        mask = [len(shape) >= 2 for shape in shapes]
    pieces = []
    for piece, shape, perturbed in zip(start.split([math.prod(s) for s in shapes]), shapes, mask):
        if perturbed:
            filters = piece.view(shape[0], -1)
            d = torch.randn(filters.shape, generator=generator, dtype=start.dtype).to(start.device)
            d = d / d.norm(dim=1, keepdim=True) * filters.norm(dim=1, keepdim=True)
            piece = (filters + scale * d).reshape(-1)
        pieces.append(piece)
    return torch.cat(pieces)
