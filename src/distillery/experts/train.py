"""Train one expert on real data and record its parameters after every epoch."""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from distillery.augment import dsa
from distillery.data import load_meta, load_split, load_zca
from distillery.evaluate import accuracy
from distillery.experts.recipes import Recipe, get_recipe
from distillery.experts.smooth import epoch_lr, expert_loss
from distillery.experts.store import save_expert
from distillery.functional import FlatModel
from distillery.models import build_model
from distillery.progress import Progress
from distillery.sam import SharpnessAware
from distillery.seeds import generator, seeded


def make_optimizer(model: torch.nn.Module, recipe: Recipe) -> tuple[torch.optim.Optimizer | SharpnessAware,
                                                                       torch.optim.Optimizer]:
    """The recipe's optimizer, and the torch optimizer inside it (itself unless GSAM) whose lr the schedule sets."""
    if recipe.optimizer == "adam":
        base = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    else:
        base = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                               weight_decay=recipe.weight_decay)
    if recipe.optimizer == "gsam":
        return SharpnessAware(model.parameters(), base, recipe.rho, recipe.alpha, recipe.adaptive, model=model), base
    return base, base


def train_expert(images: Tensor, labels: Tensor, model_name: str, num_classes: int, recipe: Recipe,
                 seed: int, role: str = "expert",
                 on_batch: Callable[[Tensor, Tensor], None] | None = None) -> tuple[Tensor, torch.nn.Module]:
    """Train a fresh `model_name` on (images, labels) with `recipe`.

    Returns the trajectory [epochs+1, P] (initialisation, then one snapshot per epoch; with `final_only`
    [2, P]: initialisation and the final weights, never a test-selected epoch) on the CPU,
    and the trained model. Images and labels stay on their device for the whole run. Random streams are
    the `role`-init/-shuffle/-dsa roles of `seed`; `on_batch(indices, logits)` sees every training batch's
    detached logits (e.g. to count forgetting events) without changing the run; with GSAM, the logits of the
    first (unperturbed) pass, and both passes see the same augmented batch. The loss is the recipe's
    (experts.smooth.expert_loss: clipped CE and gradient penalty, on the same augmented batch, one forward pass).
    """
    device = images.device
    channels, size = images.shape[1], images.shape[-1]
    with seeded(seed, f"{role}-init"):
        model = build_model(model_name, channels, num_classes, size)
    model.to(device).train()
    flat = FlatModel(model)
    opt, base = make_optimizer(model, recipe)
    shuffle, aug = generator(seed, f"{role}-shuffle"), generator(seed, f"{role}-dsa")
    trajectory = torch.empty(2 if recipe.final_only else recipe.epochs + 1, flat.num_params)
    trajectory[0] = flat.flatten().cpu()
    progress = Progress(recipe.epochs, f"{role} {seed}")
    for epoch in range(recipe.epochs):
        for group in base.param_groups:  # the schedule changes the lr only: momentum and Adam state are kept
            group["lr"] = epoch_lr(recipe, epoch)
        order = torch.randperm(len(images), generator=shuffle).to(device)
        total = 0.0
        for start in range(0, len(images), recipe.batch):
            idx = order[start:start + recipe.batch]
            x = dsa(images[idx], aug) if recipe.dsa else images[idx]  # one draw, shared by both GSAM passes
            if recipe.gp_weight > 0:
                x = x.detach().requires_grad_()  # the penalty differentiates the logits w.r.t. the inputs
            seen: list[Tensor] = []

            def closure() -> Tensor:
                logits = model(x)
                seen.append(logits.detach())
                loss = expert_loss(logits, labels[idx], x, recipe, epoch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                return loss

            loss = opt.step(closure)
            if on_batch is not None:
                on_batch(idx, seen[0])
            total += loss.detach() * len(idx)
        if not recipe.final_only or epoch + 1 == recipe.epochs:
            trajectory[-1 if recipe.final_only else epoch + 1] = flat.flatten().cpu()
        progress.update(epoch + 1, loss=float(total) / len(images))
    progress.close()
    return trajectory, model


def run_expert_training(prepared_dir: str | Path, out_path: str | Path, model_name: str, recipe: str, seed: int,
                        zca_path: str | Path | None = None, overrides: dict | None = None,
                        device: str = "cpu") -> dict:
    """Train expert `seed` for a prepared dataset and save its trajectory with metadata; returns the metadata."""
    meta = load_meta(prepared_dir)
    zca = load_zca(zca_path) if zca_path else None
    images, labels = load_split(prepared_dir, "train", zca=zca, device=device)
    test_images, test_labels = load_split(prepared_dir, "test", zca=zca, device=device)
    chosen = get_recipe(recipe, **(overrides or {}))
    tic = time.perf_counter()
    trajectory, model = train_expert(images, labels, model_name, meta["num_classes"], chosen, seed)
    expert_meta = {"recipe": asdict(chosen), "seed": seed, "model": model_name, "dataset": meta["name"],
                   "dataset_sha256": meta["sha256"]["train.pt"], "zca": zca is not None,
                   "train_accuracy": accuracy(model, images, labels),
                   "test_accuracy": accuracy(model, test_images, test_labels),
                   "seconds": time.perf_counter() - tic}
    save_expert(out_path, trajectory, expert_meta)
    return expert_meta
