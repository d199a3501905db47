"""APM's distillation cases: distill.py's main() from our state against distill_adversarial. `image_update`: the
first iteration in float64 with our students given to their image update (their epoch() casts every batch to
float32, so their student training cannot run in float64); `iteration` and `iteration_dsa`: the first iteration in
float32 with their train() training the students (augmentation off, or DSA with our draws); `iterations`: a few
iterations (two student refreshes, the subset drawn every iteration, lr_img's decay, the image momentum).

Their results are read back through their train() (the teacher's logits it was given, the checkpoints it returns),
Tensor.backward (each loss term of the image update) and a recording optimizer (the image gradient and values)."""
from __future__ import annotations

import copy
import time
from typing import Any, Sequence

import torch
from torch import Tensor

from distillery.distill import DistillConfig
from distillery.distill.apm import distill_adversarial, draw_subset, loss_and_gradient, predict, train_student
from distillery.distill.init import init_synthetic
from distillery.functional import FlatModel, snapshot_model
from distillery.parity.apm import (DISTILL, FLOAT32, OFF, WHAT, KeepDtype, apm_modules, common_patches,
                                   distill_argv, distill_config, flat, parse_with, student_init, teacher,
                                   write_teacher)
from distillery.parity.compare import CaseResult, Tolerance, compare_all
from distillery.parity.context import Context, default_dtype, finish, working_dir
from distillery.parity.lineage import Authors, dsa_draws, dsa_layout, loader_order
from distillery.parity.patches import Patches, given, randperm_from, recording_sgd
from distillery.parity.reference import quiet
from distillery.seeds import generator, role_seed

EXACT = ("updated",)


def initial_set(ctx: Context, cfg: DistillConfig, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """The initial images and labels distill_adversarial makes from cfg.seed (init_synthetic, role init)."""
    ws = ctx.ws
    return init_synthetic(ws.train[0].to(dtype), ws.train[1], ws.num_classes, cfg.ipc, cfg.init,
                          generator(cfg.seed, "init"))


def our_run(ctx: Context, cfg: DistillConfig, dtype: torch.dtype) -> Any:
    """distill_adversarial from cfg.seed for cfg.iterations, against our teacher."""
    ws, trajectory = ctx.ws, teacher(ctx).to(dtype)
    with default_dtype(dtype):
        return distill_adversarial(cfg, ws.train[0].to(dtype), ws.train[1], ws.num_classes,
                                   iter([trajectory] * (cfg.iterations + 1)))


def our_first_iteration(ctx: Context, cfg: DistillConfig, dtype: torch.dtype) -> dict[str, Any]:
    """The pieces of our first iteration from cfg.seed (the teacher's logits on the subset, the students, the loss
    and the image gradient), and the images after one whole iteration of distill_adversarial."""
    ws = ctx.ws
    images, labels = initial_set(ctx, cfg, dtype)
    with default_dtype(dtype):
        idx = draw_subset(len(images), cfg.batch_syn, generator(cfg.seed, "apm-select"), images.device)
        net = snapshot_model(teacher(ctx).to(dtype), cfg.model, ws.num_classes, images)
        targets = predict(net, images[idx], cfg.student_batch)
        students = train_student(images[idx], targets, cfg.model, ws.num_classes, cfg,
                                 role_seed(cfg.seed, "apm-refresh-0"))
        loss, grad = loss_and_gradient(images[idx], labels[idx], net, students, cfg)
    result = our_run(ctx, cfg, dtype)
    full = torch.zeros_like(images)
    full[idx] = grad
    out: dict[str, Any] = {"teacher_logits": targets}
    out.update({f"student_{k}": FlatModel(s).flatten() for k, s in enumerate(students)})
    out.update(loss=loss, grad_images=full, updated=1 - result.history[0]["skipped"], images_after=result.images)
    return out


class Recorded:
    """What a run of distill.py hands back: per train() call the targets and checkpoints, the loss terms of the
    image updates (outside train()), the optimizers' steps."""

    def __init__(self) -> None:
        self.targets: list[Tensor] = []
        self.students: list[list[Tensor]] = []
        self.terms: list[Tensor] = []
        self.steps: list[dict] = []
        self.training = False


def record_students(a: Authors, rec: Recorded, cfg: DistillConfig, streams: Sequence[torch.Generator],
                    given_students: Sequence[Tensor] | None) -> None:
    """Their train() with its targets and checkpoints kept, or, with `given_students`, our checkpoints in its place.
    At the k-th call each of `streams` (the student's batch order and DSA generators) restarts at refresh k's seed,
    as train_student draws them."""
    real = a.module("distill").train
    calls = iter(range(10 ** 6))

    def train(it: int, net: torch.nn.Module, images: Tensor, targets: Tensor, args: Any, middle: list,
              *rest: Any, **kwargs: Any) -> list:
        refresh = role_seed(cfg.seed, f"apm-refresh-{next(calls)}")
        for stream, role in zip(streams, ("apm-student-batches", "apm-student-dsa")):
            stream.set_state(generator(refresh, role).get_state())
        rec.targets.append(targets.detach().clone())
        rec.training = True
        if given_students is None:
            middle = real(it, net, images, targets, args, middle, *rest, **kwargs)
        else:
            for weights in given_students:
                copied = copy.deepcopy(net)
                torch.nn.utils.vector_to_parameters(weights.to(images.dtype).clone(), copied.parameters())
                middle.append(copied)
        rec.training = False
        rec.students.append([flat(n) for n in middle])
        return middle

    name = "recording-students" if given_students is None else "students"
    a.replace("distill", "train", train, name, WHAT[name])


def recording_backward(patches: Patches, rec: Recorded) -> None:
    """Tensor.backward keeps the value of every tensor it back-propagates outside their train()."""
    real = torch.Tensor.backward

    def backward(self: Tensor, *args: Any, **kwargs: Any) -> Any:
        if not rec.training:
            rec.terms.append(self.detach().clone())
        return real(self, *args, **kwargs)
    patches.set(torch.Tensor, "backward", backward, "recording-backward", WHAT["recording-backward"])


def their_run(ctx: Context, cfg: DistillConfig, dtype: torch.dtype, patches: Patches,
              given_students: Sequence[Tensor] | None) -> Recorded:
    """distill.py's main() from our state (initial images, subset draws, teacher, student initialisations, batch
    order, DSA draws) for cfg.iterations (+1) iterations; with `given_students` their train() returns ours."""
    ws = ctx.ws
    shape = (ws.train[0].shape[1], ws.num_classes, ws.train[0].shape[-1])
    rec, folder = Recorded(), ctx.fresh("distill")
    refreshes = cfg.iterations // (cfg.mid_gap + 1) + 1  # their loop's, its extra iteration included
    order, aug = torch.Generator(), torch.Generator()
    with apm_modules(ctx, patches, DISTILL) as m:
        write_teacher(m, ctx, teacher(ctx)[-1], folder)
        a = Authors(m, patches)
        parse_with(patches, distill_argv(ctx, cfg, folder, OFF if cfg.dsa == "none" else cfg.dsa))
        weights = [w for k in range(refreshes) for w in (teacher(ctx)[-1], student_init(cfg, shape, k))]
        common_patches(a, ctx, weights)
        start = initial_set(ctx, cfg, dtype)[0].requires_grad_(True)
        a.override("distill", "torch", "randn", given(iter([start]), "initial images"), "initial-images",
                   WHAT["initial-images"])
        a.override("distill", "torch", "randperm", randperm_from(generator(cfg.seed, "apm-select")), "subset",
                   WHAT["subset"])
        a.override("distill", "torch", "optim.SGD", recording_sgd(rec.steps), "recording-optimizer",
                   WHAT["recording-optimizer"])
        loader_order(a, "distill", order)
        if cfg.dsa != "none":
            dsa_draws(a, aug)
            dsa_layout(a, ["utils"])
        if dtype == torch.float64:
            a.replace("distill", "TensorDataset", KeepDtype, "float64", WHAT["float64"])
        record_students(a, rec, cfg, (order, aug), given_students)
        recording_backward(patches, rec)
        a.install()
        with default_dtype(dtype), working_dir(folder), quiet():
            m.distill.main()
    size = start.shape
    rec.steps = [r for r in rec.steps if len(r["values"]) == 1 and r["values"][0].shape == size]  # the images'
    return rec


def iteration_terms(rec: Recorded, cfg: DistillConfig) -> list[Tensor]:
    """Each iteration's loss: the sum of its terms, (K' + 1)·chunks of them (K' checkpoints, chunks of update_syn)."""
    chunks = -(-cfg.batch_syn // cfg.update_syn)
    per = (len(rec.students[0]) + 1) * chunks
    return [torch.stack([t.double() for t in rec.terms[i:i + per]]).sum() for i in range(0, len(rec.terms), per)]


NOTES = [
    "distill.py main() (--Iteration = our iterations; their loop runs one more update, not compared): their "
    "torch.randn answers with our initial images (our init real, role init), torch.randperm with our subset draws "
    "(role apm-select), load_teacher reads our teacher (recipe teacher), get_network holds our student "
    "initialisation and DataLoader yields our batch order (roles apm-student and apm-student-batches of refresh k's "
    "seed)",
    "loss: the sum of the terms their image update back-propagates (−|c|/batch_syn·L1 per checkpoint and chunk, "
    "|c|/batch_syn·ce·CE per chunk); gradient and updated images from their image optimizer's steps; over "
    "several iterations, image_change (final − initial images) is compared relative to its own scale, which the "
    "images' scale would hide",
]


def iteration_case(name: str, dtype: torch.dtype, tol: Tolerance, students: str, dsa: str = "none") -> Any:
    """The first iteration at `dtype`; students "ours" (given to their image update) or "theirs" (their train()
    runs, with DSA `dsa` drawn from our generators)."""
    def run(ctx: Context) -> CaseResult:
        started = time.perf_counter()
        cfg = distill_config(ctx.sizes, dsa)
        ours = our_first_iteration(ctx, cfg, dtype)  # our code runs outside every patch block
        given = [v for k, v in ours.items() if k.startswith("student_")] if students == "ours" else None
        with Patches() as patches:
            rec = their_run(ctx, cfg, dtype, patches, given)
        theirs: dict[str, Any] = {"teacher_logits": rec.targets[0]}
        if given is None:
            theirs.update({f"student_{k}": w for k, w in enumerate(rec.students[0])})
        else:  # our students on both sides: not a comparison
            ours = {k: v for k, v in ours.items() if not k.startswith("student_")}
        step = rec.steps[0]
        theirs.update(loss=iteration_terms(rec, cfg)[0], grad_images=step["grads"][0], updated=1,
                      images_after=step["values"][0])
        result = compare_all(name, ours, theirs, tol, exact=EXACT)
        kind = ("our students given to their image update (their train() replaced)" if given is not None
                else "their train() trains the students" + (f", DSA {dsa} with our draws (apm-student-dsa)"
                                                            if dsa != "none" else ", augmentation off"))
        result.notes = NOTES + [f"{dtype}".replace("torch.", "") + "; " + kind,
                                "ours: draw_subset, predict, train_student and loss_and_gradient from the same "
                                "state, then one iteration of distill_adversarial (the updated images)"]
        return finish(result, patches, ctx, started)
    return run


def iterations_case(ctx: Context) -> CaseResult:
    """`iterations` iterations in float32, their students trained by their train(), augmentation off: each
    iteration's loss and whether it updated, and the final images."""
    started = time.perf_counter()
    cfg = distill_config(ctx.sizes, iterations=ctx.sizes.iterations)
    start = initial_set(ctx, cfg, torch.float32)[0]
    result = our_run(ctx, cfg, torch.float32)
    with Patches() as patches:
        rec = their_run(ctx, cfg, torch.float32, patches, None)
    n = cfg.iterations
    ours = {"loss": torch.tensor([h["loss"] for h in result.history], dtype=torch.float64),
            "updated": torch.tensor([1 - h["skipped"] for h in result.history]), "images_after": result.images,
            "image_change": result.images - start}
    theirs = {"loss": torch.stack(iteration_terms(rec, cfg)[:n]), "updated": torch.ones(n, dtype=torch.long),
              "images_after": rec.steps[n - 1]["values"][0], "image_change": rec.steps[n - 1]["values"][0] - start}
    compared = compare_all("iterations", ours, theirs, FLOAT32, exact=EXACT)
    compared.notes = NOTES + [f"float32; {n} iterations, mid_gap {cfg.mid_gap}: students refreshed at iterations "
                              f"{', '.join(str(i + 1) for i in range(0, n, cfg.mid_gap + 1))} (1-based), a subset "
                              f"drawn every iteration, lr_img ×0.3 after iteration {n // 2}, image momentum "
                              f"{cfg.momentum}; augmentation off",
                              f"their {len(rec.students)} train() calls (the last in their extra iteration when it "
                              f"refreshes) against our run's history and final images"]
    return finish(compared, patches, ctx, started)
