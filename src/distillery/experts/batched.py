"""Several plain-SGD experts trained at once: one vmapped forward/backward over their stacked parameters.

Expert k sees exactly what `train_expert(..., seeds[k])` sees (its init, shuffle and DSA streams), so its
trajectory is the same up to floating-point summation order; only the arithmetic is batched (torch.func).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import grad_and_value, vmap

from distillery.augment import dsa
from distillery.checkpoint import Checkpoint, LoopState
from distillery.experts.recipes import Recipe
from distillery.experts.smooth import epoch_lr, restarts_optimizer
from distillery.functional import FlatModel
from distillery.models import build_model, parse_convnet_name
from distillery.progress import Progress
from distillery.runtime import to_device
from distillery.seeds import generator, seeded


def check_batchable(model_name: str, recipe: Recipe) -> None:
    """Raise a ValueError naming what batched training cannot reproduce: only plain (momentum) SGD with CE
    and a ConvNet without BatchNorm (running statistics are buffers that vmap cannot update per expert)."""
    unsupported = []
    if recipe.optimizer != "sgd":
        unsupported.append(f"optimizer '{recipe.optimizer}'")
    if recipe.gp_weight > 0:
        unsupported.append(f"the gradient penalty (gp_weight {recipe.gp_weight})")
    if recipe.clip_epochs > 0:
        unsupported.append(f"the clipped loss (clip_epochs {recipe.clip_epochs})")
    if unsupported:
        raise ValueError(f"batched expert training supports plain SGD recipes (momentum, weight decay, lr "
                         f"schedule) only; recipe '{recipe.name}' uses {', '.join(unsupported)}: train it with "
                         f"train_expert, one expert per job")
    convnet = parse_convnet_name(model_name)
    if convnet is None or convnet.get("norm") == "batchnorm":
        raise ValueError(f"batched expert training supports ConvNet models without BatchNorm (e.g. the default "
                         f"instance-norm 'ConvNet'); got model '{model_name}': train it with train_expert")


def train_experts_batched(images: Tensor, labels: Tensor, model_name: str, num_classes: int, recipe: Recipe,
                          seeds: list[int], role: str = "expert", checkpoint: Checkpoint | None = None) -> Tensor:
    """Train one expert per seed together; returns their trajectories [K, epochs+1, P] on the CPU ([K, 2, P]
    with `final_only`), row k equal to `train_expert(images, labels, model_name, num_classes, recipe,
    seeds[k], role)[0]`: the same init, batches, augmentation, SGD (torch's momentum and weight-decay rule)
    and lr schedule (with its optimizer restart). Pays where one expert leaves the device idle (small models or
    batches). `checkpoint` saves the state every `every` epochs and, after SIGTERM, at the next batch; a resumed
    run equals an uninterrupted one."""
    check_batchable(model_name, recipe)
    if not seeds:
        raise ValueError("seeds is empty: give one seed per expert to train")
    device = images.device
    channels, size = images.shape[1], images.shape[-1]
    starts = []
    for seed in seeds:
        with seeded(seed, f"{role}-init"):
            model = build_model(model_name, channels, num_classes, size)
        starts.append(FlatModel(model).flatten())
    student = FlatModel(model.to(device))  # the last one's module: a skeleton whose parameters are replaced
    if any(True for _ in student.module.buffers()):
        raise ValueError(f"model '{model_name}' has buffers, which batched training cannot update per expert: "
                         f"train it with train_expert")
    theta = torch.stack(starts).to(device)  # [K, P]
    shuffles = [generator(seed, f"{role}-shuffle") for seed in seeds]
    augs = [generator(seed, f"{role}-dsa") for seed in seeds]

    def loss_fn(flat: Tensor, x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(student(flat, x), y)

    step = vmap(grad_and_value(loss_fn))
    # rows still to come are 0, so a checkpoint of the loop's state holds no uninitialised memory
    trajectory = torch.zeros(len(seeds), 2 if recipe.final_only else recipe.epochs + 1, student.num_params,
                             dtype=theta.dtype)
    trajectory[:, 0] = theta.cpu()
    # `step` is the epochs done; `position` the images done of the next, when `orders` is set
    loop = LoopState(device, kept=dict(trajectory=trajectory, shuffles=shuffles, augs=augs),
                     values=dict(step=0, position=0, orders=None, total=None, theta=theta, momentum=None))
    loop.resume(checkpoint)
    progress = Progress(recipe.epochs, f"{role} {seeds[0]}..{seeds[-1]} (x{len(seeds)})")
    for epoch in range(loop.step, recipe.epochs):
        lr = epoch_lr(recipe, epoch)
        if loop.orders is None:  # a fresh epoch (not one resumed mid-way)
            if restarts_optimizer(recipe, epoch):
                loop.momentum = None
            loop.orders = [to_device(torch.randperm(len(images), generator=g), device) for g in shuffles]
            loop.position, loop.total = 0, torch.zeros(len(seeds), device=device, dtype=loop.theta.dtype)
        while loop.position < len(images):
            idx = [order[loop.position:loop.position + recipe.batch] for order in loop.orders]
            x = torch.stack([dsa(images[i], g) if recipe.dsa else images[i] for i, g in zip(idx, augs)])
            y = torch.stack([labels[i] for i in idx])
            grads, losses = step(loop.theta, x, y)
            # torch.optim.SGD (no dampening, no Nesterov): d = g + wd·θ; m = d first, then μ·m + d; θ −= lr·m
            if recipe.weight_decay != 0:
                grads = grads.add(loop.theta, alpha=recipe.weight_decay)
            if recipe.momentum != 0:
                if loop.momentum is None:
                    loop.momentum = grads.clone()
                else:
                    loop.momentum.mul_(recipe.momentum).add_(grads)
                grads = loop.momentum
            loop.theta = loop.theta.add(grads, alpha=-lr)
            loop.total += losses.detach() * len(idx[0])
            loop.position += recipe.batch
            if checkpoint is not None and loop.position < len(images):
                checkpoint.poll(loop.capture)
        if not recipe.final_only or epoch + 1 == recipe.epochs:
            trajectory[:, -1 if recipe.final_only else epoch + 1] = loop.theta.cpu()
        progress.update(epoch + 1, loss=float(loop.total.mean()) / len(images))
        loop.orders, loop.step = None, epoch + 1
        if checkpoint is not None:
            checkpoint.step(epoch + 1, loop.capture)
    progress.close()
    return trajectory
