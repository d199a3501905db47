"""Trajectory matching (MTT): unroll N student steps on synthetic data from an expert snapshot and
match the expert M epochs later; the images and the student's learning rate descend that loss."""
from __future__ import annotations

import math
import time
from typing import Sequence

import torch
from torch import Tensor

from distillery.augment import dsa
from distillery.checkpoint import Checkpoint, LoopState
from distillery.distill.components import (Classifier, balance_coefficient, correct_logits, filter_mask,
                                          filter_perturbation, intermediate_points, intermediate_weights,
                                          nearest_step, perturb_start, pick_correct, start_upper_bound,
                                          weight_perturbation)
from distillery.distill.config import DistillConfig
from distillery.distill.coreset import kmeans_indices, select_coreset
from distillery.distill.init import init_synthetic
from distillery.distill.memory import memory_unroll, step_gradient, velocity
from distillery.distill.snapshots import Snapshots
from distillery.functional import FlatModel
from distillery.needs import check_expert_epochs, expert_epochs_needed
from distillery.progress import Progress
from distillery.runtime import host_read, to_device
from distillery.seeds import generator
from distillery.synset import DistillationError, DistillResult


class Batches:
    """Synthetic minibatches of `size` indices: chunks of a fresh random permutation taken from the last, as in MTT's
    inner loop (distill.py:345-349: torch.split, then list.pop()), so when `size` does not divide n the short chunk
    comes first in each pass."""

    def __init__(self, n: int, size: int | None, generator: torch.Generator, device: torch.device):
        self.n, self.size, self.generator, self.device = n, size or n, generator, device
        self.chunks: list[Tensor] = []

    def next(self) -> Tensor:
        if not self.chunks:
            perm = to_device(torch.randperm(self.n, generator=self.generator), self.device)
            self.chunks = list(perm.split(self.size))
        return self.chunks.pop()

    def state(self) -> dict:
        return {"chunks": [chunk.cpu() for chunk in self.chunks], "generator": self.generator.get_state()}

    def load_state(self, state: dict) -> None:
        self.chunks = [to_device(chunk, self.device) for chunk in state["chunks"]]
        self.generator.set_state(state["generator"])


def unroll_path(student: FlatModel, start: Tensor, images: Tensor, labels: Tensor, lr: Tensor, steps: int,
                batches: Batches, aug: torch.Generator, strategy: str, points: Sequence[int] = (),
                scale: float = 1.0, memory: str = "full", chunk: int | None = None,
                momentum: float = 0.0) -> list[Tensor]:
    """N differentiable SGD steps θ_{n+1} = θ_n − lr·b_n on g_n = ∇(scale·CE(A(x_b); θ_n)) (soft CE for learned
    logits as `labels`, differentiable in them too), with the velocity
    b_0 = g_0, b_n = momentum·b_{n−1} + g_n (momentum 0: plain SGD, MTT's; 0.9: AST's distill.py:547-556).

    Returns [θ_n for n in points] + [θ_N], each with its graph. `memory` full keeps every step's graph; recompute
    (exact) and constant (TESLA, first order) replay the steps in the backward (distill/memory.py). `chunk`
    splits each step's minibatch into pieces of that many images without changing the result.
    """
    if memory != "full":
        return memory_unroll(student, start, images, labels, lr, steps, batches, aug, strategy, points, scale,
                             chunk, memory, momentum)
    theta, kept, b = start, [], None
    for n in range(1, steps + 1):
        idx = batches.next()
        grad = step_gradient(student, theta, dsa(images[idx], aug, strategy), labels[idx], scale, chunk,
                             create_graph=True)
        b = velocity(b, grad, momentum)
        theta = theta - lr * b
        if n in points:
            kept.append(theta)
    return kept + [theta]


def unroll(student: FlatModel, start: Tensor, images: Tensor, labels: Tensor, lr: Tensor, steps: int,
           batches: Batches, aug: torch.Generator, strategy: str) -> Tensor:
    """N differentiable SGD steps θ_{n+1} = θ_n − lr·∇CE(A(x_b); θ_n); returns θ_N with its graph."""
    return unroll_path(student, start, images, labels, lr, steps, batches, aug, strategy)[-1]


def matching_loss(theta: Tensor, start: Tensor, target: Tensor) -> Tensor:
    """‖θ̂_N − θ*_{t+M}‖² / ‖θ*_t − θ*_{t+M}‖² (MTT Eq. 2)."""
    return (theta - target).pow(2).sum() / (start - target).pow(2).sum()


def trajectory_loss(cfg: DistillConfig, student: FlatModel, trajectory: Tensor, t: int, images: Tensor,
                    labels: Tensor, lr: Tensor, batches: Batches, aug: torch.Generator,
                    noise: torch.Generator) -> tuple[Tensor, int]:
    """One iteration's matching loss from expert epoch `t`, and the student step it matched (N unless adaptive).

    MTT's loss, plus AST's switches when on: perturb=filter or weight moves the expert start itself (student start
    and every denominator); gaussian moves only the student start. With intermediate matching the loss is
    L_main + Σ β_i L_i, L_i matching θ̂_{ξ_i} to θ*_{t+i}. With match=adaptive (ATT) the target is matched at
    the nearest of the N steps, so images and lr learn only through the steps up to it; combined with intermediate
    matching, the points divide that shorter path: ξ_i as for N = k, the match step (points on step 0 skipped).
    """
    device = images.device
    start = to_device(trajectory[t], device)
    if cfg.perturb == "filter":
        start = filter_perturbation(start, student.shapes, cfg.perturb_scale, noise, filter_mask(student))
    elif cfg.perturb == "weight":
        start = weight_perturbation(start, student.shapes, cfg.perturb_scale, noise)
    student_start = perturb_start(start, cfg, noise) if cfg.perturb == "gaussian" else start
    if cfg.match == "adaptive":
        points = range(1, cfg.syn_steps)
    elif cfg.intermediate != "none":
        points = intermediate_points(cfg.syn_steps, cfg.expert_epochs, cfg.intermediate_spacing)
    else:
        points = []
    scale = balance_coefficient(t, cfg.max_start_epoch, cfg.balance_theta, cfg.balance_base) if cfg.balance else 1.0
    path = unroll_path(student, student_start.requires_grad_(True), images, labels, lr, cfg.syn_steps, batches, aug,
                       cfg.dsa, points, scale, cfg.memory, cfg.chunk, cfg.inner_momentum)
    target = to_device(trajectory[t + cfg.expert_epochs], device)
    step, final, matched = cfg.syn_steps, path[-1], path[:-1]
    if cfg.match == "adaptive":  # path is θ̂_1 … θ̂_N
        step = nearest_step(path, target, cfg.match_distance)
        final = path[step - 1]
        matched = [path[xi - 1] if xi > 0 else None
                   for xi in intermediate_points(step, cfg.expert_epochs, cfg.intermediate_spacing)]
    loss = matching_loss(final, start, target)
    for i, (theta, beta) in enumerate(zip(matched, intermediate_weights(cfg.intermediate, cfg.expert_epochs)), 1):
        if theta is not None:
            loss = loss + beta * matching_loss(theta, start, to_device(trajectory[t + i], device))
    return loss, step


def initial_images(cfg: DistillConfig, images: Tensor, labels: Tensor, num_classes: int,
                   features: Tensor | None, classifiers: Sequence[Classifier] = ()) -> tuple[Tensor, Tensor]:
    """The starting synthetic set: real or noise (init_synthetic), AST's representative k-means picks, or DATM's
    images that the experts' final networks (`classifiers`) classify correctly."""
    if cfg.init == "correct":
        if not classifiers:
            raise ValueError(f"method '{cfg.method}': init 'correct' needs the experts' final networks")
        return pick_correct(images, labels, num_classes, cfg.ipc, classifiers, generator(cfg.seed, "init"))
    if cfg.init != "representative":
        return init_synthetic(images, labels, num_classes, cfg.ipc, cfg.init, generator(cfg.seed, "init"))
    if features is None:
        raise ValueError(f"method '{cfg.method}': init 'representative' needs the expert features of the training "
                         f"images")
    if cfg.representative == "logits":  # AST's code: IPC // init_clusters images nearest each centre
        chosen = kmeans_indices(features, labels, num_classes, cfg.ipc, cfg.init_clusters, cfg.seed, per_centre=True)
        syn_labels = torch.arange(num_classes).repeat_interleave(cfg.ipc)
        return images[chosen.to(images.device)].clone(), syn_labels.to(images.device)
    return select_coreset("kmeans", images, labels, num_classes, cfg.ipc, generator(cfg.seed, "init"),
                          features=features, clusters=cfg.init_clusters, seed=cfg.seed)


def initial_logits(cfg: DistillConfig, syn_images: Tensor, syn_labels: Tensor,
                   classifiers: Sequence[Classifier]) -> Tensor:
    """DATM's initial learned labels: the mean logits of the experts that classify each image correctly (init
    correct, DATM.py:270-307), else the first expert's logits (DATM.py:309-319)."""
    if not classifiers:
        raise ValueError(f"method '{cfg.method}': learn_labels needs the experts' final networks for its initial "
                         f"logits")
    if cfg.init == "correct":
        return correct_logits(syn_images, syn_labels, classifiers)
    return classifiers[0](syn_images)


def start_epoch(cfg: DistillConfig, done: int, starts: torch.Generator) -> int:
    """The iteration's expert start epoch, uniform in [min_start_epoch, upper) after `done` iterations."""
    upper = start_upper_bound(done, cfg.current_max_start_epoch, cfg.max_start_epoch, cfg.expansion_end_epoch)
    return int(torch.randint(cfg.min_start_epoch, upper, (1,), generator=starts))


def check_length(epochs: int, cfg: DistillConfig) -> None:
    """Expert trajectories must reach epoch max_start_epoch − 1 + expert_epochs (the last start plus M)."""
    check_expert_epochs(epochs, expert_epochs_needed(cfg.max_start_epoch, cfg.expert_epochs), "an expert trajectory")


OVER_THRESHOLD = "the matching loss is above the threshold"


def update(syn_images: Tensor, syn_lr: Tensor, opt_img: torch.optim.Optimizer, opt_lr: torch.optim.Optimizer,
           loss: Tensor, opt_y: torch.optim.Optimizer | None = None,
           threshold: float | None = None) -> tuple[str | None, float, float]:
    """Step the lr, then the images (and learned labels), unless the loss or a gradient is not finite, the new lr
    leaves (0, ∞) or the loss exceeds `threshold` (DATM.py:556-561; OVER_THRESHOLD): then undo the lr step (value
    and momentum) and say why. Returns (why or None, loss, new lr): the iteration's one host read, which the log
    uses too."""
    before = syn_lr.detach().clone(), {k: v.clone() for k, v in opt_lr.state[syn_lr].items()
                                       if isinstance(v, Tensor)}
    opt_lr.step()  # a non-finite lr gradient makes the new lr non-finite, caught below
    grad_sum = syn_images.grad.sum()
    if opt_y is not None:  # the learned labels' gradient is checked with the images'
        grad_sum = grad_sum + opt_y.param_groups[0]["params"][0].grad.sum()
    loss_value, new_lr, grad_sum = host_read(loss, syn_lr, grad_sum)
    problem = None
    if not (math.isfinite(loss_value) and math.isfinite(grad_sum)):
        problem = f"the matching loss ({loss_value:.4g}) or a gradient is not finite"
    elif not 0 < new_lr < math.inf:
        problem = f"the learned learning rate would become {new_lr:.3g}"
    elif threshold is not None and loss_value > threshold:
        problem = OVER_THRESHOLD
    if problem is not None:
        with torch.no_grad():
            syn_lr.copy_(before[0])
        opt_lr.state[syn_lr].update(before[1])
        if not before[1]:
            opt_lr.state.pop(syn_lr, None)
        return problem, loss_value, new_lr
    opt_img.step()
    if opt_y is not None:
        opt_y.step()
    return None, loss_value, new_lr


def distill_trajectory(cfg: DistillConfig, images: Tensor, labels: Tensor, num_classes: int,
                       student: FlatModel, experts, features: Tensor | None = None,
                       checkpoint: Checkpoint | None = None, max_bad: int = 10,
                       classifiers: Sequence[Classifier] = (), snapshots: Snapshots | None = None) -> DistillResult:
    """Run `cfg.iterations` MTT iterations; `experts` yields [epochs+1, P] trajectories.

    `features` (the training images' embeddings) are needed only for init=representative; `classifiers` (the
    experts' final networks) for init=correct and learn_labels. With learn_labels the labels are logits, learned
    by their own SGD (lr_y, momentum_y) and returned as soft_labels. Start epochs come from DATM's window
    [min_start_epoch, upper); an iteration whose loss exceeds `cfg.threshold` updates nothing and is logged
    as skipped with over_threshold 1 (it does not count towards `max_bad`).

    With `cfg.ema_decay` the result is the EMA e ← d·e + (1−d)·x of the images after every update (FTD),
    started at the initial images; it never feeds back into distillation.

    An iteration whose loss or gradients are not finite, or whose step would take the learned lr out of
    (0, ∞), changes nothing and is logged as skipped; more than `max_bad` in a row stop the run with a
    DistillationError (the last checkpoint is kept). `checkpoint` saves and restores the whole state, declared once
    in its LoopState (images, lr, optimisers, EMA, every random stream, the batch and expert order, history): a
    resumed run equals an uninterrupted one bit for bit on the CPU; `experts` then needs state()/load_state()
    (ExpertSampler). `snapshots` keeps the set (the EMA where there is one, the lr, the learned labels) at its
    iterations (distill/snapshots.py), before the checkpoint of the same iteration.
    """
    device = images.device
    syn_images, syn_labels = initial_images(cfg, images, labels, num_classes, features, classifiers)
    syn_y = initial_logits(cfg, syn_images, syn_labels, classifiers).detach().requires_grad_(True) \
        if cfg.learn_labels else None
    syn_images = syn_images.detach().requires_grad_(True)
    syn_lr = torch.tensor(cfg.lr_teacher, device=device, requires_grad=True)
    opt_img = torch.optim.SGD([syn_images], lr=cfg.lr_img, momentum=cfg.momentum)
    opt_lr = torch.optim.SGD([syn_lr], lr=cfg.lr_lr, momentum=cfg.momentum)
    opt_y = torch.optim.SGD([syn_y], lr=cfg.lr_y, momentum=cfg.momentum_y) if syn_y is not None else None
    ema = syn_images.detach().clone() if cfg.ema_decay is not None else None
    starts, aug = generator(cfg.seed, "start-epoch"), generator(cfg.seed, "dsa")
    noise = generator(cfg.seed, "perturb")
    batches = Batches(len(syn_images), cfg.batch_syn, generator(cfg.seed, "batches"), device)
    loop = LoopState(device, kept=dict(images=syn_images, lr=syn_lr, opt_img=opt_img, opt_lr=opt_lr, ema=ema,
                                       starts=starts, aug=aug, noise=noise, batches=batches, experts=experts,
                                       soft=syn_y, opt_soft=opt_y),
                     values=dict(step=0, history=[], bad=0))
    resumed = loop.resume(checkpoint)

    def snapshot(it: int) -> None:
        if snapshots is not None and snapshots.due(it):
            snapshots.save(it, ema if ema is not None else syn_images, syn_labels, host_read(syn_lr)[0], syn_y)

    if snapshots is not None:
        snapshots.start(resumed)
    if loop.step == 0:
        snapshot(0)
    first_lr = float(syn_lr.detach())
    progress = Progress(cfg.iterations, f"{cfg.method} ipc{cfg.ipc}", done=loop.step)
    for it in range(loop.step + 1, cfg.iterations + 1):
        tic = time.perf_counter()
        trajectory = next(experts)
        check_length(trajectory.shape[0] - 1, cfg)
        t = start_epoch(cfg, it - 1, starts)
        inner_labels = syn_labels if syn_y is None else syn_y
        loss, step = trajectory_loss(cfg, student, trajectory, t, syn_images, inner_labels, syn_lr, batches, aug,
                                     noise)
        for opt in (opt_img, opt_lr, opt_y):
            if opt is not None:
                opt.zero_grad(set_to_none=True)
        loss.backward()
        problem, loss_value, lr_value = update(syn_images, syn_lr, opt_img, opt_lr, loss, opt_y, cfg.threshold)
        skipped, over = problem is not None, problem == OVER_THRESHOLD
        if skipped:
            lr_value = loop.history[-1]["lr"] if loop.history else first_lr  # the lr step was undone
        elif ema is not None:
            ema.mul_(cfg.ema_decay).add_(syn_images.detach(), alpha=1 - cfg.ema_decay)
        loop.bad = loop.bad + 1 if skipped and not over else 0
        loop.history.append({"iteration": it, "loss": loss_value, "lr": lr_value, "start_epoch": t,
                              "match_step": step, "skipped": int(skipped), "over_threshold": int(over),
                              "seconds": time.perf_counter() - tic})
        if loop.bad > max_bad:
            where = f"; the last checkpoint {checkpoint.path} is kept" if checkpoint and checkpoint.path else ""
            raise DistillationError(f"{cfg.method}: {loop.bad} skipped iteration(s) in a row up to iteration {it}, "
                                    f"the last because {problem}{where}; lower lr_img (now {cfg.lr_img}) or lr_lr "
                                    f"(now {cfg.lr_lr})", it, loss_value, lr_value)
        progress.update(it, loss=loss_value, lr=lr_value)
        loop.step = it
        snapshot(it)
        if checkpoint is not None:
            checkpoint.step(it, loop.capture)
    progress.close()
    result = ema if ema is not None else syn_images.detach()
    return DistillResult(result, syn_labels, host_read(syn_lr)[0], loop.history,
                         soft_labels=None if syn_y is None else syn_y.detach())
