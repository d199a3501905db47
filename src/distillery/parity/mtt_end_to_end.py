"""MTT end to end, statistically: the authors' buffer.py trains the experts (their own draws, DSA on, seeded), our
`interop import-buffers` reads them, and then a few distillation seeds run on each side from those same experts,
their distill.py's main (their own init, start epochs, batches and DSA draws) and our run_distillation; every set is
evaluated by our protocol (the same for both), and both sides' mean ± std are compared with their spread."""
from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import torch

from distillery.augment import DEFAULT_STRATEGY
from distillery.distill import DistillConfig
from distillery.distill.matching import initial_images
from distillery.distill.run import run_distillation
from distillery.evaluate import EvalConfig, evaluate
from distillery.interop import import_buffers, reference_dir
from distillery.parity.compare import CaseResult, spread_test
from distillery.parity.context import Context, finish, working_dir
from distillery.parity.lineage import (WHAT, Authors, dataset_branch, dsa_layout, fixed_clock, on_cpu,
                                       snapshot_copies)
from distillery.parity.mtt import BUFFER, REFERENCE, Sizes, distill_argv, distill_run, iteration_config
from distillery.parity.patches import Patches, recording_sgd
from distillery.parity.reference import authors_modules, quiet, script_args
from distillery.parity.workspace import DATASET
from distillery.synset import load_synset

RECIPE = "sgd"  # buffer.py's defaults are our recipe sgd (plain SGD, lr 0.01, batch 256, DSA)


def stat_config(s: Sizes, seed: int) -> DistillConfig:
    """Our mtt settings of the statistical runs (DSA on, the whole set per step) at distillation seed `seed`."""
    return iteration_config(s, DEFAULT_STRATEGY, ipc=s.stat_ipc, syn_steps=s.stat_syn_steps,
                            max_start_epoch=s.stat_max_start_epoch, iterations=s.stat_iterations, batch_syn=None,
                            seed=seed)


def seed_globals(seed: int, patches: Patches) -> None:
    """numpy's, python's and torch's global RNGs seeded: their own draws, reproducible."""
    np.random.seed(seed)
    random.seed(seed)
    torch.manual_seed(seed)
    patches.note("seeds", WHAT["seeds"])


def their_experts(ctx: Context, patches: Patches) -> Path:
    """buffer.py's experts (stat_experts of stat_expert_epochs epochs, one file), trained by their code as it runs:
    their initialisation, batch order and DSA draws, made reproducible by the clock and seed patches."""
    s, ws = ctx.sizes, ctx.ws
    out = ctx.folder("their-buffers")
    argv = ["--dataset", ws.reference_name, "--model", s.model, "--num_experts", str(s.stat_experts),
            "--train_epochs", str(s.stat_expert_epochs), "--buffer_path", str(out),
            "--save_interval", str(s.stat_experts), "--data_path", str(ws.root)]
    with authors_modules(REFERENCE, ctx.reference, BUFFER) as m:
        args = script_args(ctx.reference / "buffer.py", argv, patches)
        a = Authors(m, patches)
        on_cpu(a, ["buffer", "utils"])
        dataset_branch(a, ["buffer"], ws.reference_name, ws.train, ws.test, ws.meta)
        fixed_clock(a, s.seed)
        dsa_layout(a, ["utils"])
        snapshot_copies(patches)
        a.install()
        seed_globals(s.seed, patches)
        with quiet():
            m.buffer.main(args)
    return out


def their_set(ctx: Context, buffers: Path, seed: int, patches: Patches) -> tuple[torch.Tensor, torch.Tensor, float]:
    """distill.py's main for stat_iterations updates from `buffers`, drawing as their code draws (seeded by `seed`);
    the images and lr after the last update from the recording optimizer, labels as theirs ([0]*ipc + [1]*ipc …)."""
    s, ws = ctx.sizes, ctx.ws
    cfg = stat_config(s, seed)
    argv = distill_argv(ws, cfg, buffers, s.stat_iterations)
    argv[argv.index("--pix_init") + 1] = "real"  # their own init from real images
    records: list[dict] = []
    with distill_run(ctx, patches, []) as m:
        args = script_args(ctx.reference / "distill.py", argv, patches)
        a = Authors(m, patches)
        on_cpu(a, ["distill", "utils"])
        dataset_branch(a, ["distill"], ws.reference_name, ws.train, ws.test, ws.meta)
        fixed_clock(a, seed)
        dsa_layout(a, ["distill"])
        a.override("distill", "torch", "optim.SGD", recording_sgd(records), "recording-optimizer")
        a.install()
        seed_globals(seed, patches)
        with working_dir(ctx.fresh("their-distill")), quiet():
            m.distill.main(args)
    images = [r for r in records if r["values"][0].dim() == 4][s.stat_iterations - 1]["values"][0]
    lr = [r for r in records if r["values"][0].dim() == 0][s.stat_iterations - 1]["values"][0]
    labels = torch.arange(ws.num_classes).repeat_interleave(s.stat_ipc)
    return images, labels, float(lr)


def our_set(ctx: Context, experts: list[Path], seed: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Our whole distillation job (run_distillation) from the imported experts, at distillation seed `seed`."""
    s = ctx.sizes
    cfg = stat_config(s, seed)
    folder = ctx.fresh("our-distill")
    run_distillation({**cfg.to_dict(), "recipe": RECIPE}, ctx.ws.prepared, folder / "synset.pt", folder / "log.csv",
                     expert_paths=experts)
    synset = load_synset(folder / "synset.pt")
    return synset["images"], synset["labels"], synset["lr"]


def mean_accuracy(ctx: Context, images: torch.Tensor, labels: torch.Tensor, lr: float) -> float:
    """Our protocol's final-epoch test accuracy, averaged over stat_eval_seeds fresh networks."""
    s, ws = ctx.sizes, ctx.ws
    protocol = EvalConfig(epochs=s.stat_eval_epochs)
    accs = [evaluate(images, labels, lr, s.model, *ws.test, ws.num_classes, seed, protocol)
            for seed in range(s.stat_eval_seeds)]
    return sum(accs) / len(accs)


def end_to_end(ctx: Context) -> CaseResult:
    """The statistical case: stat_seeds distillations a side from the same (their) experts, one evaluation
    protocol; passed when the means differ by no more than their spread."""
    started = time.perf_counter()
    s, ws = ctx.sizes, ctx.ws
    applied = Patches()  # what each run of their code applied; our code runs outside those blocks
    with Patches() as patches:
        buffers = their_experts(ctx, patches)
    applied.absorb(patches)
    experts = import_buffers(buffers / reference_dir(DATASET, False, s.model), DATASET, s.model, RECIPE,
                             root=ws.root)
    ours, theirs = [], []
    for seed in range(s.stat_seeds):
        with Patches() as patches:
            theirs.append(their_set(ctx, buffers, seed, patches))
        applied.absorb(patches)
        ours.append(our_set(ctx, experts, seed))
    stats = {"accuracy": spread_test([mean_accuracy(ctx, *x) for x in ours], [mean_accuracy(ctx, *x) for x in theirs]),
             "lr": spread_test([x[2] for x in ours], [x[2] for x in theirs])}
    floor = stat_config(s, s.seed)
    stats["real_images"] = mean_accuracy(ctx, *initial_images(floor, *ws.train, ws.num_classes, None), s.lr_teacher)
    result = CaseResult("end_to_end", not stats["accuracy"]["differ"], statistics=stats, notes=[
        f"experts: their buffer.py, {s.stat_experts} x {s.stat_expert_epochs} epochs (DSA, their draws), imported "
        f"with interop import_buffers; distillation: IPC {s.stat_ipc}, N {s.stat_syn_steps}, M {s.expert_epochs}, "
        f"T+ {s.stat_max_start_epoch}, {s.stat_iterations} updates, DSA, {s.stat_seeds} seeds a side",
        f"evaluation: our protocol for both ({s.stat_eval_epochs} epochs, DSA), mean of {s.stat_eval_seeds} "
        f"networks per set; passed when |mean difference| <= sqrt(std_ours^2 + std_theirs^2)"])
    return finish(result, applied, ctx, started)
