"""Adversarial prediction matching (APM, Chen et al. 2024): fresh students learn a teacher's logits on the
synthetic images; the images then ascend the student–teacher disagreement while the teacher keeps classifying
them as their class (Algorithm 1, Eq. 4 without the log). One forward/backward per chunk, no unrolling."""
from __future__ import annotations

import copy
import math
import time
from itertools import chain
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillery.augment import dsa
from distillery.checkpoint import Checkpoint, LoopState
from distillery.distill.config import DistillConfig
from distillery.distill.init import init_synthetic
from distillery.distill.snapshots import Snapshots
from distillery.functional import frozen, snapshot_model
from distillery.models import build_model
from distillery.progress import Progress
from distillery.runtime import host_read, to_device
from distillery.seeds import generator, role_seed, seeded
from distillery.synset import DistillationError, DistillResult


def disagreement(student_logits: Tensor, teacher_logits: Tensor, kind: str) -> Tensor:
    """l1: mean |s − t|; l2: mean (s − t)²; cosine: mean over samples of 1 − cos(s, t)."""
    if kind == "l1":
        return (student_logits - teacher_logits).abs().mean()
    if kind == "l2":
        return (student_logits - teacher_logits).pow(2).mean()
    if kind == "cosine":
        return (1 - F.cosine_similarity(student_logits, teacher_logits, dim=1)).mean()
    raise ValueError(f"unknown disagreement '{kind}'; choose l1, l2 or cosine")


@torch.no_grad()
def predict(net: nn.Module, images: Tensor, batch: int) -> Tensor:
    """The logits of `net` on `images`, `batch` at a time, without a graph."""
    return torch.cat([net(images[i:i + batch]) for i in range(0, len(images), batch)])


def checkpoint_epochs(epochs: int, checkpoints: int) -> list[int]:
    """The epochs (0-based, of 0 … E) after which a student is kept, as APM's distill.py:58-59 (@53c8847):
    np.arange(0, E, E // K)[1:] + [E], i.e. every E // K epochs and the last (K of them when K divides E)."""
    step = epochs // checkpoints
    return list(range(step, epochs, step)) + [epochs]


def train_student(images: Tensor, targets: Tensor, model_name: str, num_classes: int, cfg: DistillConfig,
                  seed: int) -> list[nn.Module]:
    """Train a fresh `model_name` for epochs 0 … E (E = cfg.student_epochs: `range(Epoch+1)`, distill.py:61) to
    regress `targets` (a teacher's logits) with F.l1_loss; returns frozen copies taken after checkpoint_epochs.

    SGD(lr_net, momentum 0.9, wd 5e-4) with MultiStepLR([E//2+1], 0.1) stepped after each epoch (distill.py:43-44,
    :69): lr ×0.1 from epoch E//2+1 on, the momentum kept; minibatches of student_batch, DSA on every batch. As in
    the authors' code the caller computes `targets` on the un-augmented images, so the student sees augmented views
    of an image paired with the teacher's logits on the clean one.
    """
    with seeded(seed, "apm-student"):
        model = build_model(model_name, images.shape[1], num_classes, images.shape[-1])
    model.to(images.device, images.dtype, non_blocking=True).train()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr_net, momentum=0.9, weight_decay=5e-4)
    aug, order = generator(seed, "apm-student-dsa"), generator(seed, "apm-student-batches")
    epochs = cfg.student_epochs
    marks = set(checkpoint_epochs(epochs, cfg.checkpoints))
    images, targets = images.detach(), targets.detach()
    kept = []
    for epoch in range(epochs + 1):
        if epoch == epochs // 2 + 1:
            for group in opt.param_groups:
                group["lr"] = cfg.lr_net * 0.1
        for idx in to_device(torch.randperm(len(images), generator=order), images.device).split(cfg.student_batch):
            loss = F.l1_loss(model(dsa(images[idx], aug, cfg.dsa)), targets[idx])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        if epoch in marks:
            kept.append(frozen(copy.deepcopy(model)))
    return kept


def image_loss(images: Tensor, labels: Tensor, teacher: nn.Module, students: Sequence[nn.Module],
               cfg: DistillConfig) -> Tensor:
    """Eq. 4 without the log: −Σ_k d(S_k(x), T(x)) + α·CE(T(x), y), on un-augmented images.

    Gradients reach `images` through every student and the teacher; the nets should be frozen (eval mode).
    """
    teacher_logits = teacher(images)
    loss = cfg.alpha * F.cross_entropy(teacher_logits, labels)
    for student in students:
        loss = loss - disagreement(student(images), teacher_logits, cfg.disagreement)
    return loss


def loss_and_gradient(images: Tensor, labels: Tensor, teacher: nn.Module, students: Sequence[nn.Module],
                      cfg: DistillConfig) -> tuple[Tensor, Tensor]:
    """image_loss (a 0-dim tensor on the images' device, not read to the host) and its gradient w.r.t. `images`, in
    chunks of cfg.update_syn images.

    Each chunk's loss is weighted |c|/|images|, so the sums equal the unchunked loss and gradient. Within a
    chunk the teacher's graph is kept and each term is back-propagated on its own (as the authors' code), so
    the peak memory is one chunk through two nets.
    """
    n = len(images)
    size = cfg.update_syn or n
    grad = torch.zeros_like(images)
    total = torch.zeros((), device=images.device, dtype=images.dtype)
    for start in range(0, n, size):
        x = images[start:start + size].detach().requires_grad_(True)
        weight = len(x) / n
        teacher_logits = teacher(x)
        # lazily: each student runs forward only when its term is reached, after the previous backward
        terms = chain([cfg.alpha * F.cross_entropy(teacher_logits, labels[start:start + size])],
                      (-disagreement(student(x), teacher_logits, cfg.disagreement) for student in students))
        for i, term in enumerate(terms):
            (part,) = torch.autograd.grad(weight * term, x, retain_graph=i < len(students))
            grad[start:start + size] += part
            total += weight * term.detach()
    return total, grad


def image_gradient(images: Tensor, labels: Tensor, teacher: nn.Module, students: Sequence[nn.Module],
                   cfg: DistillConfig) -> Tensor:
    """The gradient of image_loss w.r.t. `images`, accumulated over chunks of cfg.update_syn."""
    return loss_and_gradient(images, labels, teacher, students, cfg)[1]


def draw_subset(n: int, size: int, select: torch.Generator, device: torch.device) -> Tensor:
    """`size` distinct random indices of the `n` synthetic images (the first `size` of a permutation)."""
    return to_device(torch.randperm(n, generator=select)[:size], device)


def peek_soft_labels(teachers, cfg: DistillConfig, num_classes: int, images: Tensor) -> Tensor:
    """The soft labels a run stopped now would end with (the next teacher's logits on `images`), with the teachers'
    order left as it was, so peeking changes nothing that follows."""
    state = teachers.state()
    teacher = snapshot_model(next(teachers), cfg.model, num_classes, images)
    teachers.load_state(state)
    return predict(teacher, images, cfg.student_batch)


def distill_adversarial(cfg: DistillConfig, images: Tensor, labels: Tensor, num_classes: int,
                        teachers: Iterator[Tensor], init: tuple[Tensor, Tensor] | None = None,
                        checkpoint: Checkpoint | None = None, max_bad: int = 10,
                        snapshots: Snapshots | None = None) -> DistillResult:
    """Run cfg.iterations APM iterations; `teachers` yields [rows, P] files whose last row is a teacher.

    Every iteration draws batch_syn random synthetic images (distill.py:301 @53c8847, inside the iteration loop)
    and takes one SGD(lr_img, momentum) step of them on image_loss; lr_img × lr_img_decay for iterations after
    iterations//2. Every mid_gap+1 iterations (1, mid_gap+2, ...) that iteration's draw also brings the next
    teacher, its logits on those images and a fresh student (K checkpoints) trained on them (the paper's
    Algorithm 1 draws one mini-batch per refresh instead: `apm_subset: refresh`, preset apm_paper). `init` is a
    starting (images, labels); by default init_synthetic (real or noise). The result's soft labels are the
    logits of one more teacher on the final images (APM evaluates with them); its lr is lr_net.

    A non-finite loss or gradient skips the step (logged); more than `max_bad` in a row stop the run. With
    `checkpoint` the state is saved only at the end of a refresh period (where no student is live), so a
    SIGTERM is honoured within mid_gap+1 iterations; what it saves is the LoopState declared below, and
    `teachers` then needs state()/load_state().
    `snapshots` keeps the images at its iterations (distill/snapshots.py) with the soft labels the run would end
    with there: the next teacher's logits (peek_soft_labels; `teachers` then needs state()/load_state()).
    """
    device = images.device
    if init is None:
        if cfg.init == "representative":
            raise ValueError(f"method '{cfg.method}': kind adversarial supports init real or noise")
        init = init_synthetic(images, labels, num_classes, cfg.ipc, cfg.init, generator(cfg.seed, "init"))
    syn_images = init[0].detach().clone().to(device).requires_grad_(True)
    syn_labels = init[1].to(device)
    opt = torch.optim.SGD([syn_images], lr=cfg.lr_img, momentum=cfg.momentum)
    select = generator(cfg.seed, "apm-select")
    n = len(syn_images)
    chosen = min(cfg.batch_syn or n, n)
    loop = LoopState(device, kept=dict(images=syn_images, opt=opt, select=select, teachers=teachers),
                     values=dict(step=0, history=[], refreshes=0, bad=0))
    resumed = loop.resume(checkpoint)

    def snapshot(it: int) -> None:
        if snapshots is not None and snapshots.due(it):
            result = syn_images.detach()
            snapshots.save(it, result, syn_labels, cfg.lr_net, peek_soft_labels(teachers, cfg, num_classes, result))

    if snapshots is not None:
        snapshots.start(resumed)
    if loop.step == 0:
        snapshot(0)
    progress = Progress(cfg.iterations, f"{cfg.method} ipc{cfg.ipc}", done=loop.step)
    for it in range(loop.step + 1, cfg.iterations + 1):
        tic = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = cfg.lr_img * (cfg.lr_img_decay if it > cfg.iterations // 2 else 1.0)
        refresh = (it - 1) % (cfg.mid_gap + 1) == 0
        if refresh or cfg.apm_subset == "iteration":
            idx = draw_subset(n, chosen, select, device)
        if refresh:
            teacher = snapshot_model(next(teachers), cfg.model, num_classes, syn_images)
            subset = syn_images.detach()[idx]
            targets = predict(teacher, subset, cfg.student_batch)
            students = train_student(subset, targets, cfg.model, num_classes, cfg,
                                     role_seed(cfg.seed, f"apm-refresh-{loop.refreshes}"))
            loop.refreshes += 1
        total, grad = loss_and_gradient(syn_images.detach()[idx], syn_labels[idx], teacher, students, cfg)
        loss, grad_sum = host_read(total, grad.sum())  # the iteration's one host read
        skipped = not (math.isfinite(loss) and math.isfinite(grad_sum))
        if not skipped:
            syn_images.grad = torch.zeros_like(syn_images)
            syn_images.grad[idx] = grad
            opt.step()
        loop.bad = loop.bad + 1 if skipped else 0
        loop.history.append({"iteration": it, "loss": loss, "lr": cfg.lr_net, "skipped": int(skipped),
                              "seconds": time.perf_counter() - tic})
        if loop.bad > max_bad:
            raise DistillationError(f"{cfg.method}: {loop.bad} skipped iteration(s) in a row: a non-finite image loss "
                                    f"({loss}) or gradient, up to iteration {it}; lower lr_img (now {cfg.lr_img}) or "
                                    f"lr_net (now {cfg.lr_net})", it, loss, cfg.lr_net)
        progress.update(it, loss=loss, lr=cfg.lr_net)
        loop.step = it
        snapshot(it)
        if checkpoint is not None and it % (cfg.mid_gap + 1) == 0:
            checkpoint.step(it, loop.capture)
    progress.close()
    result = syn_images.detach()
    soft_labels = predict(snapshot_model(next(teachers), cfg.model, num_classes, result), result, cfg.student_batch)
    return DistillResult(result, syn_labels, cfg.lr_net, loop.history, soft_labels=soft_labels)
