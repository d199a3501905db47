"""Train one expert on real data and record its parameters after every epoch."""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from distillery.augment import dsa
from distillery.checkpoint import Checkpoint, checkpoint_path
from distillery.data import load_meta, load_split, load_zca
from distillery.evaluate import accuracy
from distillery.experts.recipes import Recipe, get_recipe
from distillery.experts.smooth import epoch_lr, expert_loss
from distillery.experts.store import save_expert
from distillery.functional import FlatModel
from distillery.models import build_model
from distillery.progress import Progress
from distillery.sam import SharpnessAware
from distillery.seeds import generator, role_seeds, seeded


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
                 seed: int, role: str = "expert", on_batch: Callable[[Tensor, Tensor], None] | None = None,
                 checkpoint: Checkpoint | None = None) -> tuple[Tensor, torch.nn.Module]:
    """Train a fresh `model_name` on (images, labels) with `recipe`.

    Returns the trajectory [epochs+1, P] (initialisation, then one snapshot per epoch; with `final_only`
    [2, P]: initialisation and the final weights, never a test-selected epoch) on the CPU,
    and the trained model. Images and labels stay on their device for the whole run. Random streams are
    the `role`-init/-shuffle/-dsa roles of `seed`; `on_batch(indices, logits)` sees every training batch's
    detached logits (e.g. to count forgetting events) without changing the run; with GSAM, the logits of the
    first (unperturbed) pass, and both passes see the same augmented batch. The loss is the recipe's
    (experts.smooth.expert_loss: clipped CE and gradient penalty, on the same augmented batch, one forward pass).
    `checkpoint` saves the state (model, optimiser, trajectory, random streams, the epoch's order and position)
    every `every` epochs and, after SIGTERM, at the next batch; a resumed run equals an uninterrupted one.
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
    first_epoch, position, order, total = 0, 0, None, torch.zeros((), device=device)

    def state(resume_at: int) -> dict:
        """What a restart needs to continue at epoch `resume_at` (at `position` within it, when `order` is set);
        its `step` is the epochs done, as Checkpoint logs it."""
        return {"step": resume_at, "position": position, "order": None if order is None else order.cpu(),
                "total": total.cpu(), "model": model.state_dict(), "optimizer": base.state_dict(),
                "trajectory": trajectory, "shuffle": shuffle.get_state(), "aug": aug.get_state()}

    saved = checkpoint.resume() if checkpoint is not None else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        base.load_state_dict(saved["optimizer"])
        trajectory.copy_(saved["trajectory"])
        shuffle.set_state(saved["shuffle"])
        aug.set_state(saved["aug"])
        first_epoch, position, total = saved["step"], saved["position"], saved["total"].to(device)
        order = None if saved["order"] is None else saved["order"].to(device)
    progress = Progress(recipe.epochs, f"{role} {seed}", done=first_epoch + position / len(images))
    for epoch in range(first_epoch, recipe.epochs):
        for group in base.param_groups:  # the schedule changes the lr only: momentum and Adam state are kept
            group["lr"] = epoch_lr(recipe, epoch)
        if order is None:
            order, position, total = torch.randperm(len(images), generator=shuffle).to(device), 0, total.zero_()
        while position < len(images):
            idx = order[position:position + recipe.batch]
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
            position += recipe.batch
            if position < len(images):
                progress.update(epoch + position / len(images))  # no loss here: reading it would wait for the GPU
                if checkpoint is not None:
                    checkpoint.poll(lambda: state(epoch))
        if not recipe.final_only or epoch + 1 == recipe.epochs:
            trajectory[-1 if recipe.final_only else epoch + 1] = flat.flatten().cpu()
        progress.update(epoch + 1, loss=float(total) / len(images))
        order = None
        if checkpoint is not None:
            checkpoint.step(epoch + 1, lambda: state(epoch + 1))
    progress.close()
    return trajectory, model


def run_expert_training(prepared_dir: str | Path, out_path: str | Path, model_name: str, recipe: str, seed: int,
                        zca_path: str | Path | None = None, overrides: dict | None = None,
                        device: str = "cpu", checkpoint_every: int = 5) -> dict:
    """Train expert `seed` for a prepared dataset and save its trajectory with metadata; returns the metadata.
    Checkpoints every `checkpoint_every` epochs and on SIGTERM beside `out_path`; a rerun resumes from there."""
    meta = load_meta(prepared_dir)
    zca = load_zca(zca_path) if zca_path else None
    images, labels = load_split(prepared_dir, "train", zca=zca, device=device)
    test_images, test_labels = load_split(prepared_dir, "test", zca=zca, device=device)
    chosen = get_recipe(recipe, **(overrides or {}))
    identity = {"recipe": asdict(chosen), "seed": seed, "model": model_name, "zca": zca is not None,
                "dataset_sha256": meta["sha256"]["train.pt"]}
    tic = time.perf_counter()
    with Checkpoint(checkpoint_path(out_path), checkpoint_every, identity) as checkpoint:
        trajectory, model = train_expert(images, labels, model_name, meta["num_classes"], chosen, seed,
                                         checkpoint=checkpoint)
    expert_meta = {**identity, "dataset": meta["name"],
                   "seeds": role_seeds(seed, ("expert-init", "expert-shuffle", "expert-dsa")),
                   "train_accuracy": accuracy(model, images, labels),
                   "test_accuracy": accuracy(model, test_images, test_labels),
                   "seconds": time.perf_counter() - tic}
    save_expert(out_path, trajectory, expert_meta)
    checkpoint.clear()
    return expert_meta
