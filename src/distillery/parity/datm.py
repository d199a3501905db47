"""DATM's distillation parity cases against NUS-HPC-AI-Lab/DATM @97ae510, its code loaded at run time from the
checkout: a few iterations of distill/DATM.py's main (the start-epoch window growing, learned soft labels and their
gradient, float64, float32 and with the same DSA draws), the loss threshold (below and above the first loss), and
its `samples_predicted_correctly` initialisation (images, and labels as the mean correct logits of several experts).
The soft cross-entropy evaluation is datm_evaluation.py.

Each case runs their real `main` with the Namespace their own parser builds (DATM.py reads a yacs file: the harness
writes one from our settings), and ours on the same inputs. The inputs are ours and their random calls are
answered with ours: the real images through np.random.permutation (our init role), the start epochs through
np.random.randint (whose bounds are recorded: their window), the experts' order through random.shuffle, the
minibatches through torch.randperm, DSA through utils_baseline's torch.rand/randint. Their results are read back
through kept optimizers (initial values, first gradients, final values) and the wandb stand-in (losses, start
epochs, skipped iterations). DATM's expert training is FTD's buffer_FTD.py (the same file but for a commented
block, the same gsam/ and utils_gsam.epoch), so FTD's parity covers it."""
from __future__ import annotations

import itertools
import os
import time
import types
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import yaml
from torch import Tensor

from distillery.augment import DEFAULT_STRATEGY
from distillery.distill import DistillConfig
from distillery.distill.components import Classifier, expert_logits, start_upper_bound
from distillery.distill.matching import (Batches, distill_trajectory, initial_images, initial_logits, start_epoch,
                                         trajectory_loss)
from distillery.experts import get_recipe
from distillery.experts.train import train_expert
from distillery.functional import FlatModel
from distillery.models import build_model
from distillery.parity.compare import CaseResult, Tolerance, compare_all
from distillery.parity.context import Context, SharedSizes, default_dtype, finish, working_dir
from distillery.parity.lineage import (WHAT, Authors, dataset_branch, dsa_draws, dsa_layout, fixed_clock, on_cpu,
                                       wandb_stub)
from distillery.parity.mtt import as_float64
from distillery.parity.patches import Patches, randperm_from, recording_sgd
from distillery.parity.reference import Reference, authors_modules, quiet, script_args
from distillery.parity.workspace import export_experts
from distillery.seeds import generator

REFERENCE = Reference("datm", "NUS-HPC-AI-Lab/DATM", "97ae510",
                      files=("distill/DATM.py", "distill/evaluation.py", "utils/utils_baseline.py", "utils/cfg.py",
                             "networks.py", "reparam_module.py"),
                      search=("distill", "."))
UTILS = "utils.utils_baseline"  # DATM.py and evaluation.py import it as utils.utils_baseline (sys.path "../")
FLOAT64 = Tolerance(rtol=1e-6)
FLOAT32 = Tolerance(rtol=1e-4)
# compared bit for bit: the window [low, upper) of each draw, the start epochs, whether each iteration updated
EXACT_ITERATION = ("window", "start_epochs", "updated")
DSA = DEFAULT_STRATEGY  # the distill_iteration_dsa case: one group per call, drawn from our DSA generator
INITS = {"real": "real", "correct": "samples_predicted_correctly"}  # our init -> their pix_init
WHAT_DATM = {  # what each of this module's patches changes in DATM.py (the lineage's are in lineage.WHAT)
    "init-order": "DATM.py's np.random.permutation (get_images: a class's order, for init real and for "
                  "samples_predicted_correctly's scan) answers with our class orders, x[randperm(len(x))] from our "
                  "init role",
    "start-epoch": "DATM.py's np.random.randint(min_start_epoch, Upper_Bound) answers with our start epoch; each "
                   "call's bounds are kept (their window) and a start outside them is an error",
    "expert-order": "DATM.py's random.shuffle (the order of the buffer files and of the experts in a file) leaves "
                    "the list as it is: the experts in file order, as ours cycles them",
    "batches": "DATM.py's torch.randperm (the inner loop's minibatch permutations) draws from our batches "
               "generator",
    "recording-optimizer": "DATM.py's torch.optim.SGD (images, lr, labels) keeps each optimizer with its "
                           "parameters' initial values, and each step's gradients and updated values",
    "float64": "DATM.py's torch.load returns the buffer in float64 and its torch.randn drops dtype=torch.float, so "
               "with the default dtype float64 the whole run is float64",
}


@dataclass(frozen=True)
class Sizes(SharedSizes):
    """Small by default: seconds per case."""

    # distillation: `iterations` iterations, the window's upper bound growing from current_max_start_epoch to
    # max_start_epoch over expansion_end_epoch of them (1, 2, 3 by default: every bound differs)
    ipc: int = 2
    iterations: int = 3
    syn_steps: int = 4
    expert_epochs: int = 2
    min_start_epoch: int = 0
    current_max_start_epoch: int = 1
    max_start_epoch: int = 3
    expansion_end_epoch: int = 2
    batch_syn: int = 8               # 20 images in chunks 8, 8, 4
    lr_img: float = 1000.0
    lr_lr: float = 1e-5
    lr_teacher: float = 0.01
    lr_y: float = 2.0
    momentum_y: float = 0.9
    threshold: float = 1.0           # DATM's cfg.py default; the threshold case sets one below the first loss
    # the experts (our sgd recipe, max_start_epoch − 1 + expert_epochs epochs); init correct uses `experts` of them
    expert_lr: float = 0.05
    expert_batch: int = 64
    experts: int = 3
    correct_ipc: int = 1             # at IPC 1 their list(set(index)) cannot reorder a class's picks
    # evaluation (evaluation.py: evaluate_synset with their SoftCrossEntropy)
    eval_ipc: int = 5
    eval_epochs: int = 6
    eval_batch: int = 16


def experts(ctx: Context, n: int) -> tuple[list[Tensor], Path]:
    """`n` experts (seeds seed … seed+n−1) trained by our sgd recipe long enough for every start epoch, as tensors
    and exported (interop export_buffers) to the authors' buffer layout, one file; made once per run and n."""
    def make() -> tuple[list[Tensor], Path]:
        s, ws = ctx.sizes, ctx.ws
        recipe = get_recipe("sgd", epochs=s.max_start_epoch - 1 + s.expert_epochs, lr=s.expert_lr,
                            batch=s.expert_batch)
        trajectories = [train_expert(*ws.train, s.model, ws.num_classes, recipe, s.seed + k)[0] for k in range(n)]
        return trajectories, export_experts(ws, trajectories, s.model, "sgd", ctx.folder(f"ours-{n}"),
                                            ctx.folder(f"buffers-{n}"))
    return ctx.once(f"experts-{n}", make)


def config(s: Sizes, init: str = "real", dsa: str = "none", **changes: Any) -> DistillConfig:
    """Our datm settings at these sizes."""
    settings = dict(method="datm", kind="trajectory", ipc=s.ipc if init == "real" else s.correct_ipc, model=s.model,
                    iterations=s.iterations, syn_steps=s.syn_steps, expert_epochs=s.expert_epochs,
                    min_start_epoch=s.min_start_epoch, current_max_start_epoch=s.current_max_start_epoch,
                    max_start_epoch=s.max_start_epoch, expansion_end_epoch=s.expansion_end_epoch, lr_img=s.lr_img,
                    lr_lr=s.lr_lr, lr_teacher=s.lr_teacher, batch_syn=s.batch_syn, init=init, learn_labels=True,
                    lr_y=s.lr_y, momentum_y=s.momentum_y, threshold=s.threshold, dsa=dsa, seed=s.seed)
    return DistillConfig(**{**settings, **changes})


def classifiers(student: FlatModel, trajectories: Sequence[Tensor]) -> list[Classifier]:
    """The experts' final networks, as distill/run.py hands them to the loop."""
    return [lambda x, w=t[-1]: expert_logits(student, w, x) for t in trajectories]


def ours(ctx: Context, cfg: DistillConfig, trajectories: Sequence[Tensor], dtype: torch.dtype) -> dict[str, Any]:
    """Our first iteration's loss and gradients (trajectory_loss from the start distill_trajectory makes), then
    cfg.iterations iterations of distill_trajectory: window, start epochs, losses, updates and final values; and
    `masked`, how many (expert, image) pairs the initial label mean leaves out (a note, not compared)."""
    ws = ctx.ws
    trajectories = [t.to(dtype) for t in trajectories]
    with default_dtype(dtype):
        student = FlatModel(build_model(cfg.model, ws.train[0].shape[1], ws.num_classes, ws.train[0].shape[-1]))
        nets, real = classifiers(student, trajectories), ws.train[0].to(dtype)
        images, hard = initial_images(cfg, real, ws.train[1], ws.num_classes, None, nets)
        labels = initial_logits(cfg, images, hard, nets)
        with torch.no_grad():  # (expert, image) pairs the label mean leaves out: the mask is exercised when > 0
            masked = sum(int((net(images).argmax(1) != hard).sum()) for net in nets)
        x, y = images.clone().requires_grad_(True), labels.clone().requires_grad_(True)
        lr = torch.tensor(cfg.lr_teacher, requires_grad=True)
        first = start_epoch(cfg, 0, generator(cfg.seed, "start-epoch"))
        batches = Batches(len(x), cfg.batch_syn, generator(cfg.seed, "batches"), x.device)
        loss, _ = trajectory_loss(cfg, student, trajectories[0], first, x, y, lr, batches,
                                  generator(cfg.seed, "dsa"), generator(cfg.seed, "perturb"))
        loss.backward()
        result = distill_trajectory(cfg, real, ws.train[1], ws.num_classes, student, itertools.cycle(trajectories),
                                    classifiers=nets)
    history = result.history
    window = [[cfg.min_start_epoch, start_upper_bound(done, cfg.current_max_start_epoch, cfg.max_start_epoch,
                                                      cfg.expansion_end_epoch)] for done in range(cfg.iterations)]
    return {"window": torch.tensor(window), "start_epochs": torch.tensor([h["start_epoch"] for h in history]),
            "updated": torch.tensor([1 - h["skipped"] for h in history]),
            "losses": torch.tensor([h["loss"] for h in history], dtype=torch.float64),
            "images_initial": images, "labels_initial": labels, "first_loss": loss.detach(),
            "grad_images": x.grad, "grad_lr": lr.grad, "grad_labels": y.grad,
            "images_after": result.images, "lr_after": torch.tensor(result.lr, dtype=dtype),
            "labels_after": result.soft_labels, "masked": masked}


def yacs_stub() -> dict[str, types.ModuleType]:
    """A stand-in for yacs (utils/cfg.py's CfgNode; not in our environment): a dict with attribute access whose
    merge_from_file sets the keys of a YAML file, refusing keys the defaults lack (as yacs does)."""
    class CfgNode(dict):
        def __getattr__(self, name: str) -> Any:
            try:
                return self[name]
            except KeyError:
                raise AttributeError(name) from None

        def __setattr__(self, name: str, value: Any) -> None:
            self[name] = value

        def merge_from_file(self, path: str) -> None:
            with open(path) as f:
                values = yaml.safe_load(f) or {}
            unknown = sorted(set(values) - set(self))
            if unknown:
                raise KeyError(f"Non-existent config key(s): {', '.join(unknown)}")
            self.update(values)

    package, module = types.ModuleType("yacs"), types.ModuleType("yacs.config")
    module.CfgNode, package.config = CfgNode, module
    return {"yacs": package, "yacs.config": module}


def cfg_file(ctx: Context, cfg: DistillConfig, buffers: Path, folder: Path) -> Path:
    """DATM.py's --cfg file for `cfg`: every setting of ours under their key; no evaluation (skip_first_eva, eval_it
    past the last iteration); parall_eva True, which makes their device args.device (the CPU) instead of cuda:0."""
    values = {"dataset": ctx.ws.reference_name, "model": cfg.model, "ipc": cfg.ipc, "Iteration": cfg.iterations - 1,
              "syn_steps": cfg.syn_steps, "expert_epochs": cfg.expert_epochs, "min_start_epoch": cfg.min_start_epoch,
              "max_start_epoch": cfg.max_start_epoch, "Sequential_Generation": cfg.current_max_start_epoch is not None,
              "current_max_start_epoch": cfg.current_max_start_epoch or 0,
              "expansion_end_epoch": cfg.expansion_end_epoch, "lr_img": cfg.lr_img, "lr_lr": cfg.lr_lr,
              "lr_teacher": cfg.lr_teacher, "lr_y": cfg.lr_y, "Momentum_y": cfg.momentum_y,
              "threshold": float("inf") if cfg.threshold is None else cfg.threshold, "batch_syn": cfg.batch_syn,
              "pix_init": INITS[cfg.init], "dsa": True, "dsa_strategy": cfg.dsa, "zca": False, "parall_eva": True,
              "skip_first_eva": True, "eval_it": cfg.iterations, "num_eval": 0, "data_path": str(ctx.ws.root),
              "buffer_path": str(buffers), "project": "parity"}
    path = folder / "parity.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def permutation_from(g: torch.Generator) -> Callable[[Any], np.ndarray]:
    """np.random.permutation(x) answered from `g` as our init draws a class's order: x[randperm(len(x))]."""
    def permutation(x: Any) -> np.ndarray:
        x = np.asarray(x)
        return x[torch.randperm(len(x), generator=g).numpy()]
    return permutation


def window_from(starts: Sequence[int], seen: list[list[int]]) -> Callable[..., int]:
    """np.random.randint(low, high) answered with our next start epoch; each (low, high) is kept in `seen` (their
    window), and a start outside it is an error: their code could not have drawn it."""
    values = iter(starts)

    def randint(low: int, high: int, *_: Any) -> int:
        seen.append([int(low), int(high)])
        value = next(values)
        if not low <= value < high:
            raise RuntimeError(f"our start epoch {value} lies outside their window [{low}, {high})")
        return value
    return randint


def kept_sgd(records: list[dict], kept: list[Any]) -> type:
    """recording_sgd that also keeps each optimizer (in `kept`) with its parameters' initial values."""
    class Kept(recording_sgd(records)):  # type: ignore[misc]
        def __init__(self, params: Any, *args: Any, **kwargs: Any):
            super().__init__(params, *args, **kwargs)
            self.params = [p for group in self.param_groups for p in group["params"]]
            self.initial = [p.detach().clone() for p in self.params]
            kept.append(self)
    return Kept


def environment(patches: Patches) -> None:
    """Their main sets CUDA_VISIBLE_DEVICES and PYTHONHASHSEED (DATM.py:25, :35) in our process: kept, then put back."""
    for key in ("CUDA_VISIBLE_DEVICES", "PYTHONHASHSEED"):
        patches.set_item(os.environ, key, os.environ.get(key, "0"), "environment",
                         "CUDA_VISIBLE_DEVICES and PYTHONHASHSEED, which their main sets, are put back after the run")


def override(a: Authors, attr: str, key: str, value: Any, patch: str) -> None:
    """DATM.<attr>.<key> is `value` for their run, as patch `patch` described by WHAT_DATM."""
    a.override("DATM", attr, key, value, patch, WHAT_DATM[patch])


def theirs(ctx: Context, cfg: DistillConfig, dtype: torch.dtype, n: int, starts: Sequence[int],
           patches: Patches) -> dict[str, Any]:
    """DATM.py's main for cfg.iterations iterations from the same state, with `n` experts in its buffer file."""
    ws = ctx.ws
    _, buffers = experts(ctx, n)
    logged, records, kept, window = [], [], [], []
    folder = ctx.fresh("distill")
    patches.note("wandb", WHAT["wandb"])
    patches.note("yacs", "a stand-in yacs (not in our environment) for utils/cfg.py: CfgNode is a dict with "
                         "attribute access; merge_from_file sets a YAML file's keys and refuses unknown ones")
    with authors_modules(REFERENCE, ctx.reference, ("DATM", UTILS),
                         stubs={"wandb": wandb_stub(logged), **yacs_stub()}) as m:
        args = script_args(ctx.reference / "distill" / "DATM.py", ["--cfg", str(cfg_file(ctx, cfg, buffers, folder))],
                           patches, calls=2)
        a = Authors(m, patches)
        on_cpu(a, ["DATM", UTILS])
        dataset_branch(a, ["DATM"], ws.reference_name, (ws.train[0].to(dtype), ws.train[1]), ws.test, ws.meta)
        fixed_clock(a, cfg.seed, UTILS)
        environment(patches)
        override(a, "np", "random.permutation", permutation_from(generator(cfg.seed, "init")), "init-order")
        override(a, "np", "random.randint", window_from(starts, window), "start-epoch")
        override(a, "random", "shuffle", lambda x: None, "expert-order")
        override(a, "torch", "randperm", randperm_from(generator(cfg.seed, "batches")), "batches")
        override(a, "torch", "optim.SGD", kept_sgd(records, kept), "recording-optimizer")
        if cfg.dsa != "none":
            dsa_draws(a, generator(cfg.seed, "dsa"), UTILS)
            dsa_layout(a, ["DATM"], UTILS)
        if dtype == torch.float64:
            override(a, "torch", "load", lambda *x, **k: as_float64(torch.load(*x, **k)), "float64")
            override(a, "torch", "randn", lambda *x, dtype=None, **k: torch.randn(*x, **k), "float64")
        a.install()
        with default_dtype(dtype), working_dir(folder), quiet():
            m.DATM.main(args)
    by_dims = {opt.initial[0].dim(): opt for opt in kept}  # images 4-D, labels 2-D, lr 0-D
    images, labels, lr = by_dims[4], by_dims[2], by_dims[0]
    first = {name: next((r["grads"][0] for r in records if r["optimizer"] == id(opt)), None)
             for name, opt in (("images", images), ("lr", lr), ("labels", labels))}
    skipped = {row["_step"] for row in logged if "falts" in row}
    out = {"window": torch.tensor(window), "start_epochs": torch.tensor([r["Start_Epoch"] for r in logged
                                                                          if "Start_Epoch" in r]),
           "updated": torch.tensor([int(it not in skipped) for it in range(cfg.iterations)]),
           "losses": torch.stack([torch.as_tensor(r["Grand_Loss"]).double() for r in logged if "Grand_Loss" in r]),
           "images_initial": images.initial[0], "labels_initial": labels.initial[0],
           "images_after": images.params[0].detach(), "lr_after": lr.params[0].detach(),
           "labels_after": labels.params[0].detach()}
    if 0 not in skipped:  # their first iteration's gradients, recorded at its step
        out.update(first_loss=out["losses"][0], grad_images=first["images"], grad_lr=first["lr"],
                   grad_labels=first["labels"])
    return out


NOTES = [
    "their np.random.permutation answers with our class orders (role init), np.random.randint with our start epochs "
    "(role start-epoch; each call's window recorded), random.shuffle keeps the experts in file order, torch.randperm "
    "answers with our permutations (role batches)",
    "losses, start epochs and skipped iterations from their wandb log (Grand_Loss, Start_Epoch, falts); initial "
    "values, first-iteration gradients and final values from their optimizers",
    "ours: trajectory_loss from the start distill_trajectory makes (first loss, gradients), then distill_trajectory "
    "(window, start epochs, losses, updates, final images, lr and labels)",
]


def compare_run(ctx: Context, name: str, cfg: DistillConfig, dtype: torch.dtype, tol: Tolerance,
                patches: Patches) -> tuple[CaseResult, list[str]]:
    """Ours, then theirs (its patches into `patches`), from the same state; the comparison and its notes."""
    n = ctx.sizes.experts if cfg.init == "correct" else 1
    trajectories, _ = experts(ctx, n)
    mine = ours(ctx, cfg, trajectories, dtype)  # our code runs outside every patch block
    masked = mine.pop("masked")
    their = theirs(ctx, cfg, dtype, n, mine["start_epochs"].tolist(), patches)
    if "first_loss" not in their:  # their first iteration did not step: no gradients recorded
        for key in ("first_loss", "grad_images", "grad_lr", "grad_labels"):
            mine.pop(key)
    windows = ", ".join(f"[{low}, {high})" for low, high in their["window"].tolist())
    mask = (f"; {masked} of {n * len(mine['labels_initial'])} (expert, image) pairs misclassified, left out of "
            f"the label mean" if cfg.init == "correct" else "")
    notes = [f"{str(dtype).replace('torch.', '')}, init {cfg.init} ({n} expert(s){mask}), "
             f"{'DSA ' + cfg.dsa if cfg.dsa != 'none' else 'augmentation off'}, threshold {cfg.threshold:.6g}; "
             f"theirs: windows {windows}, start epochs {their['start_epochs'].tolist()}, losses "
             f"{[round(v, 4) for v in their['losses'].tolist()]}, updated {their['updated'].tolist()}"]
    return compare_all(name, mine, their, tol, exact=EXACT_ITERATION), notes


def iteration_case(name: str, dtype: torch.dtype, tol: Tolerance, init: str = "real",
                   dsa: str = "none") -> Callable[[Context], CaseResult]:
    """A case comparing `iterations` distillation iterations at `dtype` from init `init` (real: labels from expert
    0; correct: the mean correct logits of `experts` experts), augmentation `dsa`."""
    def run(ctx: Context) -> CaseResult:
        started = time.perf_counter()
        with Patches() as patches:
            result, notes = compare_run(ctx, name, config(ctx.sizes, init, dsa), dtype, tol, patches)
        result.notes = NOTES + notes
        return finish(result, patches, ctx, started)
    return run


def threshold_case(ctx: Context) -> CaseResult:
    """The loss threshold (float64), twice: just below the first iteration's loss (ours × (1 − 1e-3)), which then
    updates nothing, and just above it (× (1 + 1e-3)), which updates and leaves the later iterations to their
    losses; each iteration's `updated` is compared, and the values after it."""
    started = time.perf_counter()
    quantities, notes, patches_all = [], [], Patches()
    base = config(ctx.sizes)
    (trajectory,), _ = experts(ctx, 1)
    first = float(ours(ctx, replace(base, iterations=1), [trajectory], torch.float64)["first_loss"])
    for side, factor in (("below", 1 - 1e-3), ("above", 1 + 1e-3)):
        with Patches() as patches:
            part, note = compare_run(ctx, side, replace(base, threshold=first * factor), torch.float64, FLOAT64,
                                     patches)
        patches_all.absorb(patches)
        quantities += [replace(q, name=f"{side}.{q.name}") for q in part.quantities]
        notes += [f"{side}: {n}" for n in note]
    result = CaseResult("threshold", all(q.passed for q in quantities), FLOAT64, quantities, notes=NOTES + notes)
    return finish(result, patches_all, ctx, started)
