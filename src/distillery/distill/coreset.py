"""Coreset baselines (the first rows of MTT Table 1): random, herding, forgetting and k-means (AST's
representative init) selections of real images."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from distillery.distill.config import SELECTS
from distillery.distill.init import init_synthetic
from distillery.experts.recipes import Recipe
from distillery.experts.train import train_expert
from distillery.needs import check_class_size


def class_members(labels: Tensor, c: int, ipc: int) -> Tensor:
    """Indices (ascending, on the CPU) of class `c`; an IPC larger than the class is an error, as for init."""
    idx = (labels.cpu() == c).nonzero().squeeze(1)
    check_class_size(ipc, len(idx), f"class {c}")
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


def cluster_quotas(sizes: list[int], ipc: int) -> list[int]:
    """⌊ipc/K⌋ picks per cluster, one more for each of the (ipc mod K) largest (ties: the lower cluster index)."""
    quotas = [ipc // len(sizes)] * len(sizes)
    for k in sorted(range(len(sizes)), key=lambda k: -sizes[k])[:ipc % len(sizes)]:
        quotas[k] += 1
    return quotas


def representative_picks(feats: Tensor, ipc: int, clusters: int, seed: int) -> list[int]:
    """Rows of one class's `feats` [n, D]: k-means with K = min(ipc, clusters), then each cluster's quota of its
    members nearest its centre (the members' mean); a cluster short of members takes the nearest unpicked rows."""
    from sklearn.cluster import KMeans  # imported here: only this selection needs scikit-learn

    k = min(ipc, clusters)
    fit = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(feats.numpy())
    assigned = fit.labels_.tolist()
    centres = torch.from_numpy(fit.cluster_centers_).to(feats.dtype)
    for j in range(k):
        members = [i for i, a in enumerate(assigned) if a == j]
        if members:
            centres[j] = feats[members].mean(0)
    quotas = cluster_quotas([assigned.count(j) for j in range(k)], ipc)
    # rows by distance to each centre; the stable sort sends ties to the lower row
    orders = [torch.sort(torch.cdist(centres[j:j + 1], feats)[0], stable=True).indices.tolist() for j in range(k)]
    chosen = [[i for i in orders[j] if assigned[i] == j][:quotas[j]] for j in range(k)]
    taken = {i for group in chosen for i in group}
    for j in range(k):
        fill = [i for i in orders[j] if i not in taken][:quotas[j] - len(chosen[j])]
        chosen[j] += fill
        taken.update(fill)
    return [i for group in chosen for i in group]


def nearest_to_centres(feats: Tensor, ipc: int, clusters: int, seed: int) -> list[int]:
    """AST's code (distill.py:160-175 @8030869): k-means with `clusters` centres on one class's rows (n_init 10,
    scikit-learn's default then), then for each centre in k-means' order the ipc // clusters rows nearest it among
    all the class's rows (a row nearest two centres is taken twice, as there; ties to the lower row)."""
    from sklearn.cluster import KMeans  # imported here: only this selection needs scikit-learn

    fit = KMeans(n_clusters=clusters, n_init=10, random_state=seed).fit(feats.numpy())
    centres = torch.from_numpy(fit.cluster_centers_).to(feats.dtype)
    return [i for centre in centres
            for i in torch.sort(((feats - centre) ** 2).sum(1), stable=True).indices[:ipc // clusters].tolist()]


def kmeans_indices(features: Tensor, labels: Tensor, num_classes: int, ipc: int, clusters: int = 10,
                   seed: int = 0, per_centre: bool = False) -> Tensor:
    """AST's representative initialisation as a selection: `representative_picks` (or, `per_centre`, the code's
    `nearest_to_centres`) on each class's features (float64, CPU) with k-means random_state `seed`; class 0's `ipc`
    indices, then class 1's, ..."""
    pick = nearest_to_centres if per_centre else representative_picks
    picks = []
    for c in range(num_classes):
        idx = class_members(labels, c, ipc)
        feats = features[idx.to(features.device)].double().cpu()
        picks.append(idx[pick(feats, ipc, clusters, seed)])
    return torch.cat(picks)


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
                   generator: torch.Generator, features: Tensor | None = None, counts: Tensor | None = None,
                   clusters: int = 10, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Return (images [C*ipc, ...], labels [0]*ipc + [1]*ipc + ...) of real images chosen by `select`.

    `clusters` and `seed` (k-means' random_state) are used by kmeans only.
    """
    if select not in SELECTS:
        raise ValueError(f"unknown coreset select '{select}'; choose one of: {', '.join(SELECTS)}")
    if select == "random":
        return init_synthetic(images, labels, num_classes, ipc, "real", generator)
    if select in ("herding", "kmeans"):
        if features is None:
            raise ValueError(f"coreset select '{select}' needs features (the embeddings of the training images)")
        if select == "herding":
            chosen = herding_indices(features, labels, num_classes, ipc)
        else:
            chosen = kmeans_indices(features, labels, num_classes, ipc, clusters, seed)
    else:
        if counts is None:
            raise ValueError("coreset select 'forgetting' needs counts (forgetting events per training image)")
        chosen = forgetting_indices(counts, labels, num_classes, ipc, generator)
    syn_labels = torch.arange(num_classes).repeat_interleave(ipc).to(images.device)
    return images[chosen.to(images.device)].clone(), syn_labels
