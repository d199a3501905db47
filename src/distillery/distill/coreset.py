"""Coreset baselines (the first rows of MTT Table 1): random, herding and forgetting selections of real images."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from distillery.distill.config import SELECTS
from distillery.distill.init import init_synthetic
from distillery.experts.recipes import Recipe
from distillery.experts.train import train_expert


def class_members(labels: Tensor, c: int, ipc: int) -> Tensor:
    """Indices (ascending, on the CPU) of class `c`; an IPC larger than the class is an error, as for init."""
    idx = (labels.cpu() == c).nonzero().squeeze(1)
    if len(idx) < ipc:
        raise ValueError(f"IPC {ipc} is larger than class {c}'s {len(idx)} training images; lower the IPC")
    return idx


def check_ipc(labels: Tensor, num_classes: int, ipc: int) -> None:
    """Fail before any compute if some class has fewer than `ipc` training images."""
    for c in range(num_classes):
        class_members(labels, c, ipc)


def herding_indices(features: Tensor, labels: Tensor, num_classes: int, ipc: int) -> Tensor:
    """Greedy herding per class: each pick brings the running mean of the picks closest (L2) to the class mean.

    Deterministic, ties go to the lowest index; returns class 0's `ipc` picks in pick order, then class 1's, ...
    """
    picks = []
    for c in range(num_classes):
        idx = class_members(labels, c, ipc)
        feats = features[idx.to(features.device)].double()
        target, total = feats.mean(0), torch.zeros_like(feats[0])
        free = torch.ones(len(idx), dtype=torch.bool, device=feats.device)
        for t in range(1, ipc + 1):
            dist = ((total + feats) / t - target).norm(dim=1).masked_fill(~free, float("inf"))
            best = int(torch.argmin(dist))  # the first minimum: the lowest index on ties
            total = total + feats[best]
            free[best] = False
            picks.append(int(idx[best]))
    return torch.tensor(picks, dtype=torch.long)


class ForgettingTracker:
    """Per example: forgetting events (correct -> incorrect between consecutive presentations) and presentations."""

    def __init__(self, num_examples: int, device: torch.device | str = "cpu"):
        self.last = torch.zeros(num_examples, dtype=torch.bool, device=device)
        self.learned = torch.zeros(num_examples, dtype=torch.bool, device=device)
        self.events = torch.zeros(num_examples, dtype=torch.long, device=device)
        self.presented = torch.zeros(num_examples, dtype=torch.long, device=device)

    def update(self, indices: Tensor, correct: Tensor) -> None:
        """Record one presentation of each of `indices` (distinct, as in a minibatch) and whether it was correct."""
        self.events[indices] += (self.last[indices] & ~correct).long()
        self.last[indices] = correct
        self.learned[indices] |= correct
        self.presented[indices] += 1

    def counts(self) -> Tensor:
        """Forgetting events per example; never-learned examples get their presentation count, more than any
        learned example can have (at most half its presentations), so they rank most forgettable (Toneva: inf)."""
        return torch.where(self.learned, self.events, self.presented).cpu()


def count_forgetting(correct_history: Tensor) -> Tensor:
    """Forgetting counts from a [presentations, N] (or [presentations]) correctness history, via the tracker."""
    history = correct_history.bool().reshape(len(correct_history), -1)
    tracker = ForgettingTracker(history.shape[1], history.device)
    everyone = torch.arange(history.shape[1], device=history.device)
    for correct in history:
        tracker.update(everyone, correct)
    return tracker.counts().reshape(correct_history.shape[1:])


def forgetting_counts(images: Tensor, labels: Tensor, model_name: str, num_classes: int, recipe: Recipe,
                      seed: int) -> Tensor:
    """Train a fresh network with `recipe` (roles forgetting-*) and count every example's forgetting events.

    Correctness is the argmax of the training-batch logits (with the recipe's augmentation), as Toneva et al. 2019.
    """
    tracker = ForgettingTracker(len(images), images.device)

    def on_batch(idx: Tensor, logits: Tensor) -> None:
        tracker.update(idx, logits.argmax(1) == labels[idx])

    train_expert(images, labels, model_name, num_classes, recipe, seed, role="forgetting", on_batch=on_batch)
    return tracker.counts()


def forgetting_indices(counts: Tensor, labels: Tensor, num_classes: int, ipc: int,
                       generator: torch.Generator) -> Tensor:
    """Per class the `ipc` examples forgotten most often (ties in random order from `generator`), class by class."""
    counts = counts.cpu()
    picks = []
    for c in range(num_classes):
        idx = class_members(labels, c, ipc)
        shuffled = idx[torch.randperm(len(idx), generator=generator)]
        order = torch.sort(counts[shuffled], descending=True, stable=True).indices
        picks.append(shuffled[order[:ipc]])
    return torch.cat(picks)


@torch.no_grad()
def embed(module: nn.Module, images: Tensor, batch: int = 512) -> Tensor:
    """The module's `embed` features of `images` [N, D], in eval mode and batches, without augmentation."""
    was_training = module.training
    module.eval()
    features = torch.cat([module.embed(images[start:start + batch]) for start in range(0, len(images), batch)])
    module.train(was_training)
    return features


def select_coreset(select: str, images: Tensor, labels: Tensor, num_classes: int, ipc: int,
                   generator: torch.Generator, features: Tensor | None = None,
                   counts: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Return (images [C*ipc, ...], labels [0]*ipc + [1]*ipc + ...) of real images chosen by `select`."""
    if select not in SELECTS:
        raise ValueError(f"unknown coreset select '{select}'; choose one of: {', '.join(SELECTS)}")
    if select == "random":
        return init_synthetic(images, labels, num_classes, ipc, "real", generator)
    if select == "herding":
        if features is None:
            raise ValueError("coreset select 'herding' needs features (the embeddings of the training images)")
        chosen = herding_indices(features, labels, num_classes, ipc)
    else:
        if counts is None:
            raise ValueError("coreset select 'forgetting' needs counts (forgetting events per training image)")
        chosen = forgetting_indices(counts, labels, num_classes, ipc, generator)
    syn_labels = torch.arange(num_classes).repeat_interleave(ipc).to(images.device)
    return images[chosen.to(images.device)].clone(), syn_labels
