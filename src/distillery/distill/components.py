"""The method components the matching engine switches on, one room for all: AST's balanced inner loss (Eq. 20),
intermediate matching points (Sec. IV-D1) and expert-start perturbations (filter-normalised, Eq. 23, or its code's
weightPerturb); FTD's gaussian start perturbation; ATT's nearest match step; DATM's start-epoch window, the soft
cross-entropy of learned logits, and the initial images and logits from experts that classify them correctly."""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillery.distill.config import DistillConfig
from distillery.functional import FlatModel
from distillery.metrics import soft_cross_entropy
from distillery.runtime import host_read, to_device


def balance_coefficient(t: int, max_start_epoch: int, theta: float, base: float) -> float:
    """ν(t) = log_b(t − h + ϑ) if t ≥ h, else 1 / log_b(h − t + ϑ), with h = max_start_epoch // 2 (Eq. 20).

    The paper writes log (base e); AST's distill.py:532-536 uses math.log(·, 5).
    """
    middle = max_start_epoch // 2
    if t >= middle:
        return math.log(t - middle + theta) / math.log(base)
    return 1.0 / (math.log(middle - t + theta) / math.log(base))


def intermediate_points(syn_steps: int, expert_epochs: int, spacing: str) -> list[int]:
    """The student steps ξ_i, i = 1..M−1, matched to expert epochs t + i: i·⌊N/M⌋ ("multiple", AST's
    distill.py:492-496) or ⌊i·N/M⌋ ("floor", the paper's Sec. IV-D1); they differ where M does not divide N."""
    if spacing == "multiple":
        return [i * (syn_steps // expert_epochs) for i in range(1, expert_epochs)]
    if spacing == "floor":
        return [i * syn_steps // expert_epochs for i in range(1, expert_epochs)]
    raise ValueError(f"unknown intermediate spacing '{spacing}'; choose multiple or floor")


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
            d = to_device(torch.randn(filters.shape, generator=generator, dtype=start.dtype), start.device)
            d = d / d.norm(dim=1, keepdim=True) * filters.norm(dim=1, keepdim=True)
            piece = (filters + scale * d).reshape(-1)
        pieces.append(piece)
    return torch.cat(pieces)


def weight_perturbation(start: Tensor, shapes: Sequence[torch.Size], alpha: float,
                        generator: torch.Generator) -> Tensor:
    """AST's code (distill.py:252-267, called with alpha 1 at :470-471): every 4-D (conv) weight W becomes
    W + α·D̂⊙W, D ~ N(0, I) of W's shape, D̂ = D/‖D‖_F; every other parameter is unchanged.

    Since ‖D̂‖_F = 1, ‖(W' − W)⊘W‖_F = α and each entry moves by about α/√numel of itself. The noise is drawn on
    the CPU from `generator`, parameter by parameter.
    """
    pieces = []
    for piece, shape in zip(start.split([math.prod(s) for s in shapes]), shapes):
        if len(shape) == 4:
            d = to_device(torch.randn(piece.shape, generator=generator, dtype=start.dtype), start.device)
            piece = piece + alpha * (d / d.norm()) * piece
        pieces.append(piece)
    return torch.cat(pieces)


def perturb_start(start: Tensor, cfg: DistillConfig, noise: torch.Generator) -> Tensor:
    """The student's start: θ*_t, or θ*_t + ε with ε ~ N(0, σ²I) (FTD Eq. 9, "MTT + Robust Learning")."""
    if cfg.perturb == "none":
        return start
    eps = torch.randn(start.shape, generator=noise) * cfg.perturb_scale
    return start + to_device(eps, start.device)


def nearest_step(path: Sequence[Tensor], target: Tensor, distance: str) -> int:
    """ATT's match step: the 1-based k whose θ̂_k in `path` (θ̂_1 … θ̂_N) is nearest `target`.

    l1 is ATT's code (distill_ATT.py: L1 distance, running minimum with `>=`, so ties go to the later step);
    l2 is its paper's squared L2, ties to the earliest step (the shortest trajectory that gets as close). The
    code's initial bound of 10000 (no step below it leaves the index unset) is not kept: the minimum is taken
    over all N steps. No gradient flows through the choice; a non-finite distance is picked like any other,
    so the loss shows it. The index is read to the host (ATT's second read of an iteration): the backward then
    runs through the first k steps only, not all N."""
    with torch.no_grad():
        gaps = torch.stack([(theta - target).pow(2).sum() if distance == "l2" else (theta - target).abs().sum()
                            for theta in path])
        if distance == "l1":  # the last minimum: the first of the reversed distances
            return len(gaps) - int(host_read(torch.argmin(gaps.flip(0)))[0])
        return int(host_read(torch.argmin(gaps))[0]) + 1


def start_upper_bound(done: int, first: int | None, last: int, over: int) -> int:
    """DATM's window [min_start_epoch, upper): after `done` iterations upper = min(last, first + ⌊(last − first)·
    done/over⌋), growing linearly from `first` to `last` (max_start_epoch) over `over` iterations (DATM.py:485-489,
    Sequential_Generation); `first` None: the fixed upper bound `last`."""
    if first is None:
        return last
    return min(last, first + (last - first) * done // over)


def inner_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """The student's loss on a synthetic batch: soft cross-entropy for learned logits (float labels), else CE."""
    if labels.is_floating_point():
        return soft_cross_entropy(logits, labels)
    return F.cross_entropy(logits, labels)


def expert_logits(student: FlatModel, weights: Tensor, images: Tensor, batch: int = 256) -> Tensor:
    """The logits of the network at flat `weights` on `images`, in eval mode (as DATM's Temp_net.eval()), in
    batches, without a graph."""
    weights, was_training = to_device(weights, images.device), student.module.training
    student.module.eval()
    with torch.no_grad():
        logits = torch.cat([student(weights, images[i:i + batch]) for i in range(0, len(images), batch)])
    student.module.train(was_training)
    return logits


Classifier = Callable[[Tensor], Tensor]  # images -> logits of one expert's final network


def pick_correct(images: Tensor, labels: Tensor, num_classes: int, ipc: int, classifiers: Sequence[Classifier],
                 generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """DATM's `samples_predicted_correctly` (DATM.py:185-236): per class, the first `ipc` images of a random order
    that expert 0 classifies correctly; when that expert has too few, the next expert's correct ones among the
    rest, and so on. Returns (images [C·ipc, ...], labels [0]*ipc + [1]*ipc + ...)."""
    labels_cpu, picks = labels.cpu(), []
    for c in range(num_classes):
        idx = (labels_cpu == c).nonzero().squeeze(1)
        rest, chosen = idx[torch.randperm(len(idx), generator=generator)], []
        for classify in classifiers:
            if sum(map(len, chosen)) == ipc or not len(rest):
                break
            right = (classify(images[to_device(rest, images.device)]).argmax(1) == c).cpu()
            chosen.append(rest[right][:ipc - sum(map(len, chosen))])
            rest = rest[~right]
        found = sum(map(len, chosen))
        if found < ipc:
            raise ValueError(f"init 'correct': the {len(classifiers)} expert(s) classify only {found} of class {c}'s "
                             f"{len(idx)} training images correctly, fewer than IPC {ipc}; lower the IPC, train more "
                             f"or better experts, or use init 'real'")
        picks.append(torch.cat(chosen))
    chosen = to_device(torch.cat(picks), images.device)
    return images[chosen].clone(), to_device(torch.arange(num_classes).repeat_interleave(ipc), images.device)


def correct_logits(images: Tensor, labels: Tensor, classifiers: Sequence[Classifier]) -> Tensor:
    """DATM's initial soft labels (DATM.py:270-307): per image, the mean of the logits of the experts that classify
    it correctly. An image no expert classifies correctly has no such mean: an error (DATM divides by zero)."""
    total, count = None, torch.zeros(len(images), device=images.device)
    for classify in classifiers:
        logits = classify(images)
        right = (logits.argmax(1) == labels).to(logits.dtype)
        total = logits * right[:, None] if total is None else total + logits * right[:, None]
        count = count + right
    if total is None or not bool((count > 0).all()):
        raise ValueError("learned labels: some synthetic images are classified correctly by no expert, so they have "
                         "no mean of correct logits; use init 'correct' (which picks such images) or more experts")
    return total / count[:, None]
