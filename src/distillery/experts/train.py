"""Train one expert on real data and record its parameters after every epoch."""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor

from distillery.augment import dsa
from distillery.checkpoint import Checkpoint, checkpoint_path
from distillery.data import index_device, load_meta, load_split, load_zca
from distillery.evaluate import accuracy
from distillery.experts.batched import train_experts_batched
from distillery.experts.recipes import Recipe, get_recipe
from distillery.experts.smooth import epoch_lr, expert_loss, restarts_optimizer
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
    and the trained model. Images and labels stay on their device for the whole run (images may be a
    data.HostSplit, whose batches move there one at a time). Random streams are
    the `role`-init/-shuffle/-dsa roles of `seed`; `on_batch(indices, logits)` sees every training batch's
    detached logits (e.g. to count forgetting events) without changing the run; with GSAM, the logits of the
    first (unperturbed) pass, and both passes see the same augmented batch. The loss is the recipe's
    (experts.smooth.expert_loss: clipped CE and gradient penalty, the penalty on the augmented batch's pass or on
    a second pass of the un-augmented one); the lr schedule is epoch_lr's, the optimizer restarting where the
    recipe says (restarts_optimizer).
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
        order = None if saved["order"] is None else saved["order"].to(index_device(images))
    progress = Progress(recipe.epochs, f"{role} {seed}", done=first_epoch + position / len(images))
    for epoch in range(first_epoch, recipe.epochs):
        for group in base.param_groups:  # the schedule changes the lr; the state is kept unless restarted
            group["lr"] = epoch_lr(recipe, epoch)
        if order is None and restarts_optimizer(recipe, epoch):  # a fresh epoch (not one resumed mid-way)
            base.state.clear()  # as a rebuilt torch optimizer: no momentum buffers, Adam moments and step 0
        if order is None:
            order = torch.randperm(len(images), generator=shuffle).to(index_device(images))
            position, total = 0, total.zero_()
        while position < len(images):
            idx = order[position:position + recipe.batch]
            clean = images[idx]  # one gather (a HostSplit's: one transfer) for both uses
            x = dsa(clean, aug) if recipe.dsa else clean  # one draw, shared by both GSAM passes
            seen: list[Tensor] = []

            def closure() -> Tensor:
                loss, logits = expert_loss(model, x, clean, labels[idx], recipe, epoch)
                seen.append(logits.detach())
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


def expert_identity(recipe: Recipe, seed: int, model_name: str, zca: bool, meta: dict) -> dict:
    """How an expert was trained, as its file records it (and its checkpoint's identity)."""
    return {"recipe": asdict(recipe), "seed": seed, "model": model_name, "zca": zca,
            "dataset_sha256": meta["sha256"]["train.pt"]}


def expert_meta(identity: dict, meta: dict, model: torch.nn.Module, train: tuple[Tensor, Tensor],
                test: tuple[Tensor, Tensor], seconds: float) -> dict:
    """An expert file's metadata: its identity, dataset, seeds, the final weights' train and test accuracy, seconds."""
    return {**identity, "dataset": meta["name"],
            "seeds": role_seeds(identity["seed"], ("expert-init", "expert-shuffle", "expert-dsa")),
            "train_accuracy": accuracy(model, *train), "test_accuracy": accuracy(model, *test), "seconds": seconds}


def run_expert_training(prepared_dir: str | Path, out_path: str | Path, model_name: str, recipe: str, seed: int,
                        zca_path: str | Path | None = None, overrides: dict | None = None,
                        device: str = "cpu", checkpoint_every: int = 5, gpu_memory_gb: float | None = None) -> dict:
    """Train expert `seed` for a prepared dataset and save its trajectory with metadata; returns the metadata.
    Checkpoints every `checkpoint_every` epochs and on SIGTERM beside `out_path`; a rerun resumes from there.
    `gpu_memory_gb` (runtime.gpu_memory_gb) keeps a split too large for the GPU on the host (data.load_split)."""
    meta = load_meta(prepared_dir)
    zca = load_zca(zca_path) if zca_path else None
    images, labels = load_split(prepared_dir, "train", zca=zca, device=device, gpu_memory_gb=gpu_memory_gb)
    test_images, test_labels = load_split(prepared_dir, "test", zca=zca, device=device, gpu_memory_gb=gpu_memory_gb)
    chosen = get_recipe(recipe, **(overrides or {}))
    identity = expert_identity(chosen, seed, model_name, zca is not None, meta)
    tic = time.perf_counter()
    with Checkpoint(checkpoint_path(out_path), checkpoint_every, identity) as checkpoint:
        trajectory, model = train_expert(images, labels, model_name, meta["num_classes"], chosen, seed,
                                         checkpoint=checkpoint)
    expert = expert_meta(identity, meta, model, (images, labels), (test_images, test_labels),
                         time.perf_counter() - tic)
    save_expert(out_path, trajectory, expert)
    checkpoint.clear()
    return expert


def run_expert_group(prepared_dir: str | Path, out_paths: Sequence[str | Path], model_name: str, recipe: str,
                     seeds: Sequence[int], zca_path: str | Path | None = None, overrides: dict | None = None,
                     device: str = "cpu", checkpoint_every: int = 5) -> list[dict]:
    """Train experts `seeds` together in one job (train_experts_batched, for a GPU that one expert leaves idle) and
    save each to its `out_paths` entry as run_expert_training would (trajectories equal up to rounding; `seconds`
    is the group's time over its size); returns their metadata. Checkpoints beside the first path."""
    if len(out_paths) != len(seeds) or not seeds:
        raise ValueError(f"an expert group needs one output path per seed; got {len(out_paths)} paths for seeds "
                         f"{list(seeds)}")
    meta = load_meta(prepared_dir)
    zca = load_zca(zca_path) if zca_path else None
    images, labels = load_split(prepared_dir, "train", zca=zca, device=device)
    test_images, test_labels = load_split(prepared_dir, "test", zca=zca, device=device)
    chosen = get_recipe(recipe, **(overrides or {}))
    identities = [expert_identity(chosen, seed, model_name, zca is not None, meta) for seed in seeds]
    tic = time.perf_counter()
    with Checkpoint(checkpoint_path(out_paths[0]), checkpoint_every, {"group": identities}) as checkpoint:
        trajectories = train_experts_batched(images, labels, model_name, meta["num_classes"], chosen, list(seeds),
                                             checkpoint=checkpoint)
    seconds = (time.perf_counter() - tic) / len(seeds)
    model = build_model(model_name, images.shape[1], meta["num_classes"], images.shape[-1]).to(device)
    experts = []
    for path, identity, trajectory in zip(out_paths, identities, trajectories):
        torch.nn.utils.vector_to_parameters(trajectory[-1].to(device), model.parameters())  # the final weights
        experts.append(expert_meta(identity, meta, model, (images, labels), (test_images, test_labels), seconds))
        save_expert(path, trajectory, experts[-1])
    checkpoint.clear()
    return experts
