"""MTT's parity cases against GeorgeCazenavette/mtt-distillation @50dccea, its code loaded at run time from the
checkout: one distillation iteration (float64, float32, and with the same DSA draws per augmentation group), two
epochs of expert training (buffer.py), an evaluation (evaluate_synset), and a statistical end-to-end run
(mtt_end_to_end.py).

Each case runs their real entry point (distill.py's or buffer.py's main, with the Namespace their own parser builds)
and ours on the same inputs. The inputs are ours, and their random calls are answered with ours: the initial images
through torch.randn (--pix_init noise), the start epoch through np.random.randint, the minibatch permutations
through torch.randperm, DSA through utils.torch.rand/randint, and shuffled loaders through DataLoader; the results
are read back through a recording optimizer and a wandb stand-in."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from distillery.augment import GROUPS
from distillery.distill import DistillConfig
from distillery.distill.matching import Batches, distill_trajectory, initial_images, start_epoch, trajectory_loss
from distillery.evaluate import EvalConfig, train_network
from distillery.experts import get_recipe
from distillery.experts.train import train_expert
from distillery.functional import FlatModel
from distillery.interop import reference_dir
from distillery.metrics import accuracy
from distillery.models import build_model
from distillery.parity.compare import CaseResult, Tolerance, compare_all
from distillery.parity.context import Context, SharedSizes, default_dtype, finish, working_dir
from distillery.parity.lineage import (WHAT, Authors, dataset_branch, dsa_draws, dsa_layout, fixed_clock,
                                       inject_networks, loader_order, no_dc_augment, on_cpu, snapshot_copies,
                                       wandb_stub)
from distillery.parity.patches import Patches, given, randperm_from, recording_sgd
from distillery.parity.reference import Reference, authors_modules, quiet, script_args
from distillery.parity.workspace import DATASET, Workspace, export_experts
from distillery.seeds import generator, seeded

REFERENCE = Reference("mtt", "GeorgeCazenavette/mtt-distillation", "50dccea",
                      files=("distill.py", "buffer.py", "utils.py", "networks.py", "reparam_module.py"))
DISTILL = ("utils", "distill")  # distill.py's run (it imports wandb: the stand-in)
BUFFER = ("utils", "buffer")
FLOAT64 = Tolerance(rtol=1e-6)
FLOAT32 = Tolerance(rtol=1e-4)
# compared bit for bit: the start epoch drawn, and whether the images and lr were updated (their code always
# updates; ours skips an iteration whose new lr leaves (0, inf) or whose loss is not finite: the ledger's row)
EXACT_ITERATION = ("start_epoch", "updated")


@dataclass(frozen=True)
class Sizes(SharedSizes):
    """Small by default: seconds per exact case, minutes for the statistical one (stat_*)."""

    # one distillation iteration
    ipc: int = 2
    syn_steps: int = 4
    expert_epochs: int = 2
    max_start_epoch: int = 2
    batch_syn: int = 8               # 20 images in chunks 8, 8, 4: where the short chunk falls is compared too
    lr_img: float = 1000.0
    lr_lr: float = 1e-5
    lr_teacher: float = 0.01
    # expert training (buffer.py, our recipe sgd)
    train_epochs: int = 2
    batch_train: int = 256
    # evaluation (evaluate_synset)
    eval_ipc: int = 5
    eval_epochs: int = 6
    eval_batch: int = 16
    # end to end (mtt_end_to_end.py)
    stat_experts: int = 4
    stat_expert_epochs: int = 4      # max_start_epoch − 1 + expert_epochs, the least the distillations need
    stat_max_start_epoch: int = 3
    stat_ipc: int = 1
    stat_syn_steps: int = 8
    stat_iterations: int = 50
    stat_seeds: int = 5
    stat_eval_epochs: int = 200
    stat_eval_seeds: int = 2


def iteration_config(s: Sizes, dsa: str = "none", **changes: Any) -> DistillConfig:
    """Our mtt settings for one iteration at these sizes."""
    settings = dict(method="mtt", kind="trajectory", ipc=s.ipc, model=s.model, iterations=1, syn_steps=s.syn_steps,
                    expert_epochs=s.expert_epochs, max_start_epoch=s.max_start_epoch, lr_img=s.lr_img, lr_lr=s.lr_lr,
                    lr_teacher=s.lr_teacher, batch_syn=s.batch_syn, init="real", dsa=dsa, seed=s.seed)
    return DistillConfig(**{**settings, **changes})


def distill_argv(ws: Workspace, cfg: DistillConfig, buffers: Path, iterations: int, num_eval: int = 0,
                 eval_epochs: int = 1000, batch_train: int = 256) -> list[str]:
    """distill.py's command line for `cfg` (noise init: their torch.randn is answered with our initial images).

    Augmentation off is --dsa True --dsa_strategy none (DiffAugment returns its input): with --dsa False their
    main stops at the first evaluation block, which prints args.dc_aug_param, set only when DSA is on
    (distill.py:48-50, :198)."""
    argv = ["--dataset", ws.reference_name, "--model", cfg.model, "--ipc", str(cfg.ipc),
            "--syn_steps", str(cfg.syn_steps), "--expert_epochs", str(cfg.expert_epochs),
            "--max_start_epoch", str(cfg.max_start_epoch), "--lr_img", repr(cfg.lr_img), "--lr_lr", repr(cfg.lr_lr),
            "--lr_teacher", repr(cfg.lr_teacher), "--Iteration", str(iterations - 1), "--num_eval", str(num_eval),
            "--eval_it", str(max(iterations, 1)), "--epoch_eval_train", str(eval_epochs),
            "--batch_train", str(batch_train), "--pix_init", "noise", "--buffer_path", str(buffers),
            "--data_path", str(ws.root), "--dsa", "True", "--dsa_strategy", cfg.dsa]
    if cfg.batch_syn is not None:
        argv += ["--batch_syn", str(cfg.batch_syn)]
    return argv


def distill_run(ctx: Context, patches: Patches, logged: list[dict]) -> Any:
    """authors_modules for distill.py's runs: their modules with the wandb stand-in."""
    patches.note("wandb", WHAT["wandb"])
    return authors_modules(REFERENCE, ctx.reference, DISTILL, stubs={"wandb": wandb_stub(logged)})


def as_float64(obj: Any) -> Any:
    """A loaded buffer (lists of tensors) with every float tensor in float64."""
    if isinstance(obj, list):
        return [as_float64(x) for x in obj]
    return obj.double() if isinstance(obj, Tensor) and obj.is_floating_point() else obj


def expert_buffer(ctx: Context) -> tuple[Tensor, Path]:
    """One expert trajectory, trained by our sgd recipe for max_start_epoch + expert_epochs epochs, as our file and
    exported (interop export_buffers) to the authors' buffer layout; made once per run."""
    def make() -> tuple[Tensor, Path]:
        s, ws = ctx.sizes, ctx.ws
        recipe = get_recipe("sgd", epochs=s.max_start_epoch + s.expert_epochs)
        trajectory, _ = train_expert(*ws.train, s.model, ws.num_classes, recipe, s.seed)
        return trajectory, export_experts(ws, [trajectory], s.model, "sgd", ctx.folder("ours"), ctx.folder("buffers"))
    return ctx.once("expert", make)


@dataclass
class IterationState:
    """Both sides' start: our settings, initial images and labels, the start epoch, the expert, the dtype."""

    cfg: DistillConfig
    images: Tensor
    labels: Tensor
    start: int
    trajectory: Tensor
    dtype: torch.dtype


def iteration_state(ctx: Context, cfg: DistillConfig, dtype: torch.dtype) -> IterationState:
    """The start our distill_trajectory makes from cfg.seed: its initial images and its first start epoch."""
    trajectory, _ = expert_buffer(ctx)
    images, labels = initial_images(cfg, ctx.ws.train[0].to(dtype), ctx.ws.train[1], ctx.ws.num_classes, None)
    return IterationState(cfg, images, labels, start_epoch(cfg, 0, generator(cfg.seed, "start-epoch")),
                          trajectory.to(dtype), dtype)


def our_iteration(ctx: Context, st: IterationState) -> dict[str, Any]:
    """Our loss and gradients (trajectory_loss) from the state, and one whole iteration of distill_trajectory."""
    cfg, ws = st.cfg, ctx.ws
    with default_dtype(st.dtype):
        student = FlatModel(build_model(cfg.model, ws.train[0].shape[1], ws.num_classes, ws.train[0].shape[-1]))
        images = st.images.clone().requires_grad_(True)
        lr = torch.tensor(cfg.lr_teacher, requires_grad=True)
        batches = Batches(len(images), cfg.batch_syn, generator(cfg.seed, "batches"), images.device)
        loss, _ = trajectory_loss(cfg, student, st.trajectory, st.start, images, st.labels, lr, batches,
                                  generator(cfg.seed, "dsa"), generator(cfg.seed, "perturb"))
        loss.backward()
        result = distill_trajectory(cfg, ws.train[0].to(st.dtype), ws.train[1], ws.num_classes, student,
                                    iter([st.trajectory]))
    return {"loss": loss.detach(), "grad_images": images.grad, "grad_lr": lr.grad,
            "start_epoch": result.history[0]["start_epoch"], "updated": 1 - result.history[0]["skipped"],
            "images_after": result.images, "lr_after": torch.tensor(result.lr, dtype=st.dtype)}


def their_iteration(ctx: Context, st: IterationState, patches: Patches, run: Callable | None = None,
                    switches: Sequence[str] = (), more: Callable[[Authors], None] | None = None) -> dict[str, Any]:
    """distill.py's main for one iteration (--Iteration 0, no evaluation) from the same state; its loss from the
    wandb log, its gradients and updated values from the recording optimizer. A fork's distill.py (AST's) runs with
    its own `run` (distill_run's counterpart), command-line `switches` and `more` patches of its draws."""
    cfg, ws = st.cfg, ctx.ws
    _, buffers = expert_buffer(ctx)
    logged, records = [], []
    with (run or distill_run)(ctx, patches, logged) as m:
        args = script_args(ctx.reference / "distill.py", distill_argv(ws, cfg, buffers, 1) + list(switches), patches)
        a = Authors(m, patches)
        on_cpu(a, ["distill", "utils"])
        dataset_branch(a, ["distill"], ws.reference_name, ws.train, ws.test, ws.meta)
        fixed_clock(a, cfg.seed)
        a.override("distill", "torch", "randn", given(iter([st.images.clone()]), "initial images"), "initial-images")
        a.override("distill", "np", "random.randint", given(iter([st.start]), "a start epoch"), "start-epoch")
        a.override("distill", "torch", "randperm", randperm_from(generator(cfg.seed, "batches")), "batches")
        if more:
            more(a)
        a.override("distill", "torch", "optim.SGD", recording_sgd(records), "recording-optimizer")
        if cfg.dsa != "none":
            dsa_draws(a, generator(cfg.seed, "dsa"))
            dsa_layout(a, ["distill"])
        if st.dtype == torch.float64:
            a.override("distill", "torch", "load", lambda *x, **k: as_float64(torch.load(*x, **k)), "float64")
        a.install()
        with default_dtype(st.dtype), working_dir(ctx.fresh("distill")), quiet():
            m.distill.main(args)
    images, lr = (next(r for r in records if r["values"][0].dim() == dims) for dims in (4, 0))
    loss = next(row["Grand_Loss"] for row in logged if "Grand_Loss" in row)
    start = next(row["Start_Epoch"] for row in logged if "Start_Epoch" in row)
    return {"loss": loss, "grad_images": images["grads"][0], "grad_lr": lr["grads"][0], "start_epoch": start,
            "updated": 1, "images_after": images["values"][0], "lr_after": lr["values"][0]}


NOTES_ITERATION = [
    "their torch.randn answers with our initial images (our init real, seed role init); np.random.randint with our "
    "start epoch (role start-epoch); torch.randperm with our permutations (role batches)",
    "loss from their wandb log (Grand_Loss), gradients and updated images and lr from their optimizers' steps",
    "ours: trajectory_loss from that state (loss, gradients), then one iteration of distill_trajectory from the same "
    "seed (start epoch, update)",
]


def iteration_case(name: str, dtype: torch.dtype, tol: Tolerance, dsa: str = "none") -> Any:
    """A case comparing one distillation iteration at `dtype` (augmentation `dsa`, the same draws on both sides)."""
    def run(ctx: Context) -> CaseResult:
        started = time.perf_counter()
        st = iteration_state(ctx, iteration_config(ctx.sizes, dsa), dtype)
        ours = our_iteration(ctx, st)  # our code runs outside every patch block
        with Patches() as patches:
            theirs = their_iteration(ctx, st, patches)
        result = compare_all(name, ours, theirs, tol, exact=EXACT_ITERATION)
        result.notes = NOTES_ITERATION + [f"{dtype}".replace("torch.", "") + (f", DSA {dsa}" if dsa != "none"
                                                                              else ", augmentation off")]
        return finish(result, patches, ctx, started)
    return run


def dsa_case(ctx: Context) -> CaseResult:
    """One iteration per DSA group (float32; their scale and rotate build float32 grids, so float64 cannot run),
    each with the same draws on both sides: our DSA generator answers their utils.torch.rand/randint."""
    started = time.perf_counter()
    quantities, patches_all = [], Patches()
    for group in GROUPS:
        st = iteration_state(ctx, iteration_config(ctx.sizes, group), torch.float32)
        ours = our_iteration(ctx, st)
        with Patches() as patches:
            theirs = their_iteration(ctx, st, patches)
        patches_all.absorb(patches)
        part = compare_all(group, ours, theirs, FLOAT32, exact=EXACT_ITERATION)
        quantities += [replace(q, name=f"{group}.{q.name}") for q in part.quantities]
    result = CaseResult("distill_iteration_dsa", all(q.passed for q in quantities), FLOAT32, quantities,
                        notes=NOTES_ITERATION + ["float32; one iteration per DSA group (--dsa_strategy <group>), "
                                                 "their DiffAugment's draws answered from our DSA generator"])
    return finish(result, patches_all, ctx, started)


def their_buffer(ctx: Context, reference: Reference, argv: list[str], out: Path, first_row: Tensor, dsa: bool,
                 patches: Patches) -> Tensor:
    """The lineage's buffer.py (MTT's or a fork's, `reference`) run with `argv` (its --buffer_path `out`), one expert
    from our initial weights `first_row`, our batch order and DSA draws or augmentation off: its snapshot rows."""
    s, ws = ctx.sizes, ctx.ws
    with authors_modules(reference, ctx.reference, BUFFER) as m:
        args = script_args(ctx.reference / "buffer.py", argv, patches)
        a = Authors(m, patches)
        on_cpu(a, ["buffer", "utils"])
        dataset_branch(a, ["buffer"], ws.reference_name, ws.train, ws.test, ws.meta)
        fixed_clock(a, s.seed)
        inject_networks(a, ["buffer"], iter([first_row]))
        loader_order(a, "buffer", generator(s.seed, "expert-shuffle"))
        if dsa:
            dsa_draws(a, generator(s.seed, "expert-dsa"))
            dsa_layout(a, ["utils"])
        else:
            no_dc_augment(a)
        snapshot_copies(patches)
        a.install()
        with quiet():
            m.buffer.main(args)
    (expert,) = torch.load(out / reference_dir(DATASET, False, s.model) / "replay_buffer_0.pt")
    return torch.stack([torch.cat([p.reshape(-1) for p in snapshot]) for snapshot in expert])


def expert_case(dsa: bool) -> Any:
    """buffer.py's expert training against our train_expert (recipe sgd) for train_epochs epochs."""
    name = "expert_training_dsa" if dsa else "expert_training"

    def run(ctx: Context) -> CaseResult:
        started = time.perf_counter()
        s, ws = ctx.sizes, ctx.ws
        recipe = get_recipe("sgd", epochs=s.train_epochs, batch=s.batch_train, dsa=dsa)
        ours, _ = train_expert(*ws.train, s.model, ws.num_classes, recipe, s.seed)
        out = ctx.folder(name)
        argv = ["--dataset", ws.reference_name, "--model", s.model, "--num_experts", "1", "--train_epochs",
                str(s.train_epochs), "--batch_train", str(s.batch_train), "--lr_teacher", repr(recipe.lr),
                "--dsa", str(dsa), "--buffer_path", str(out), "--save_interval", "1", "--data_path", str(ws.root)]
        with Patches() as patches:
            theirs = their_buffer(ctx, REFERENCE, argv, out, ours[0], dsa, patches)
        rows = {f"epoch_{e}": theirs[e] for e in range(len(theirs))}
        result = compare_all(name, {f"epoch_{e}": ours[e] for e in range(len(ours))}, rows, FLOAT32)
        result.notes = ["float32 (their epoch() casts batches with .float()); initial weights: our row 0 set into "
                        "their network; batch order: our permutations (role expert-shuffle)",
                        "DSA with our draws (role expert-dsa)" if dsa else "augmentation off on both sides"]
        return finish(result, patches, ctx, started)
    return run


def evaluation_case(dsa: bool) -> Any:
    """distill.py's evaluation at iteration 0 (evaluate_synset, recorded and then stopped) against our
    train_network + accuracy, on the same set, initialisation and batch order."""
    name = "evaluation_dsa" if dsa else "evaluation"

    class Stop(Exception):
        pass

    def run(ctx: Context) -> CaseResult:
        started = time.perf_counter()
        s, ws = ctx.sizes, ctx.ws
        cfg = iteration_config(s, "color_crop_cutout_flip_scale_rotate" if dsa else "none", ipc=s.eval_ipc)
        images, labels = initial_images(cfg, *ws.train, ws.num_classes, None)
        shape = (images.shape[1], ws.num_classes, images.shape[-1])
        protocol = EvalConfig(epochs=s.eval_epochs, batch=s.eval_batch, dsa=cfg.dsa)
        model = train_network(images, labels, cfg.lr_teacher, s.model, ws.num_classes, s.seed, protocol)
        ours = {"weights": FlatModel(model).flatten(), "test_accuracy": accuracy(model, *ws.test)}
        with seeded(s.seed, "eval-init"):  # the initialisation train_network draws
            init = FlatModel(build_model(s.model, shape[0], shape[1], shape[2])).flatten()
        _, buffers = expert_buffer(ctx)
        seen: dict[str, Any] = {}
        with Patches() as patches, distill_run(ctx, patches, []) as m:
            args = script_args(ctx.reference / "distill.py",
                               distill_argv(ws, cfg, buffers, 1, num_eval=1, eval_epochs=s.eval_epochs,
                                            batch_train=s.eval_batch), patches)
            a = Authors(m, patches)
            on_cpu(a, ["distill", "utils"])
            dataset_branch(a, ["distill"], ws.reference_name, ws.train, ws.test, ws.meta)
            fixed_clock(a, s.seed)
            a.override("distill", "torch", "randn", given(iter([images.clone()]), "initial images"),
                       "initial-images")
            inject_networks(a, ["distill"], iter([init]))
            loader_order(a, "utils", generator(s.seed, "eval-shuffle"))
            if dsa:
                dsa_draws(a, generator(s.seed, "eval-dsa"))
                dsa_layout(a, ["utils"])

            def record(*args: Any, **kwargs: Any) -> Any:
                net, _, acc = real(*args, **kwargs)
                seen.update(weights=torch.cat([p.detach().reshape(-1) for p in net.parameters()]), acc=acc)
                raise Stop

            real = m.distill.evaluate_synset
            a.replace("distill", "evaluate_synset", record, "stop-after-evaluation",
                      "evaluate_synset's trained network and test accuracy are kept, then the run stops")
            a.install()
            try:
                with working_dir(ctx.fresh(name)), quiet():
                    m.distill.main(args)
            except Stop:
                pass
        theirs = {"weights": seen["weights"], "test_accuracy": seen["acc"]}
        result = compare_all(name, ours, theirs, FLOAT32, exact=("test_accuracy",))
        result.notes = [f"their evaluation at iteration 0 of distill.py (--num_eval 1, --epoch_eval_train "
                        f"{s.eval_epochs}): set = our real init at IPC {s.eval_ipc} through their torch.randn, lr = "
                        f"lr_teacher, initialisation ours (role eval-init), batch order ours (role eval-shuffle)",
                        "DSA with our draws (role eval-dsa)" if dsa else "augmentation off on both sides",
                        "their loop runs range(Epoch+1) epochs with the lr x0.1 after epoch index Epoch//2+1"]
        return finish(result, patches, ctx, started)
    return run
