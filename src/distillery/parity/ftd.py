"""FTD's parity cases against AngusDujw/FTD-distillation @711532a, its code loaded at run time from the checkout:
one distillation iteration with its EMA of the images (float64, float32, and with the same DSA draws), and two epochs
of GSAM expert training (buffer/buffer_FTD.py with its GSAM and scheduler, as run_buffer.sh passes them) against our
recipes gsam_a03 and gsam.

Their distillation is MTT's loop (distill.py) plus `ModelEmaV2` over the images, so the cases reuse MTT's state and
argument building (parity.mtt) and answer the same random calls with ours; the EMA lineage's script runner here
(`Distiller`, `their_iteration`, `their_expert`) serves ATT's cases too. FTD's utils/utils_baseline.py is MTT's
utils.py (only the trailing newline differs), so its evaluate_synset is MTT's and the MTT cases cover it."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from distillery.augment import DEFAULT_STRATEGY
from distillery.distill import DistillConfig
from distillery.distill.matching import distill_trajectory
from distillery.experts import get_recipe
from distillery.experts.recipes import Recipe
from distillery.experts.smooth import expert_loss
from distillery.experts.train import make_optimizer, train_expert
from distillery.functional import FlatModel
from distillery.interop import reference_dir
from distillery.models import build_model
from distillery.parity.compare import CaseResult, Tolerance, compare_all
from distillery.parity.context import Context, SharedSizes, default_dtype, finish, working_dir
from distillery.parity.lineage import (WHAT, Authors, dataset_branch, dsa_draws, dsa_layout, fixed_clock,
                                       inject_networks, loader_order, no_dc_augment, on_cpu, snapshot_copies,
                                       wandb_stub)
from distillery.parity.mtt import (EXACT_ITERATION, FLOAT32, FLOAT64, IterationState, as_float64, distill_argv,
                                   expert_buffer, iteration_config, iteration_state, our_iteration)
from distillery.parity.patches import Patches, given, randperm_from, recording_sgd
from distillery.parity.reference import Reference, authors_modules, quiet, script_args
from distillery.parity.workspace import DATASET
from distillery.seeds import generator

REFERENCE = Reference("ftd", "AngusDujw/FTD-distillation", "711532a",
                      files=("distill/distill_FTD.py", "distill/model_ema.py", "buffer/buffer_FTD.py",
                             "buffer/gsam/gsam.py", "buffer/gsam/scheduler.py", "utils/utils_baseline.py",
                             "utils/utils_gsam.py", "networks.py", "reparam_module.py"),
                      search=("distill", "buffer", "."))  # their scripts run from distill/ and buffer/ with ../
# the patches their distill runs apply beyond lineage.WHAT's
PATCH_WHAT = {
    "initial-images": "the distill script's torch.randn (with --pix_init noise, its only call) returns our initial "
                      "images",
    "start-epoch": "the distill script's np.random.randint returns our start epoch",
    "batches": "the distill script's torch.randperm draws the inner minibatch permutations from our generator",
    "recording-optimizer": "the distill script's torch.optim.SGD keeps each step's gradients and updated values",
    "float64": "the distill script's torch.load returns the expert buffer in float64 (the default dtype float64)",
    "recording-gsam": "the GSAM optimizer buffer_FTD.py passes to epoch() is wrapped to keep, at every step, the "
                      "weights before it, the (augmented) batch it was given and the direction its base SGD stepped "
                      "along (the parameters' .grad after the step; values unchanged)",
    "recording-ema": "ModelEmaV2 as their distill script builds it keeps each instance for the harness (values "
                     "unchanged): the EMA of the images is read from it after the run",
    "no-evaluation": "evaluate_synset returns at once (the network untrained, accuracy 0): the iteration cases "
                     "compare distillation; their iteration-0 evaluation block still runs, because its EMA save block "
                     "reads ema_image_syn, which only the evaluation loop binds (distill_FTD.py and distill_ATT.py "
                     ":239, :360; with --num_eval 0 the script stops with an UnboundLocalError)",
}


@dataclass(frozen=True)
class Sizes(SharedSizes):
    """Small by default: seconds per case."""

    # one distillation iteration (as MTT's cases)
    ipc: int = 2
    syn_steps: int = 4
    expert_epochs: int = 2
    max_start_epoch: int = 2
    batch_syn: int = 8
    lr_img: float = 1000.0
    lr_lr: float = 1e-5
    lr_teacher: float = 0.01
    ema_decay: float = 0.75          # far from 1 and from 1/2, so the update's share shows and a swap of d and 1 − d
    #                                  would too (the tables' 0.999–0.9999 keep the old images almost whole)
    # expert training (buffer_FTD.py against gsam_a03 and gsam)
    train_epochs: int = 2
    batch_train: int = 256


@dataclass(frozen=True)
class Distiller:
    """An EMA-lineage distill script (FTD's, ATT's): its checkout, the script's path there, and the module names
    the script and its utils are imported as (their sys.path: Reference.search)."""

    reference: Reference
    script: str
    module: str
    utils: str


FTD = Distiller(REFERENCE, "distill/distill_FTD.py", "distill_FTD", "utils.utils_baseline")
Hook = Callable[[Authors, dict], None]  # a case's own patches of their run, filling the dict with what it reads


def ema_config(s: Any, dsa: str = "none", **changes: Any) -> DistillConfig:
    """Our settings for one iteration at these sizes with the EMA of the images (the ftd preset's components)."""
    return iteration_config(s, dsa, **{"method": "ftd", "ema_decay": s.ema_decay, **changes})


def our_ema_iteration(ctx: Context, st: IterationState) -> dict[str, Any]:
    """MTT's quantities from the state without the EMA (loss, gradients, the raw images and lr after the update), and
    from one whole iteration of distill_trajectory with it: the EMA of the images it returns, and the match step."""
    ours = our_iteration(ctx, replace(st, cfg=replace(st.cfg, ema_decay=None)))
    ws = ctx.ws
    with default_dtype(st.dtype):
        student = FlatModel(build_model(st.cfg.model, ws.train[0].shape[1], ws.num_classes, ws.train[0].shape[-1]))
        result = distill_trajectory(st.cfg, ws.train[0].to(st.dtype), ws.train[1], ws.num_classes, student,
                                    iter([st.trajectory]))
    return {**ours, "ema_after": result.images, "match_step": result.history[0]["match_step"]}


def recording_ema(real: type, kept: list) -> type:
    """Their ModelEmaV2, each instance appended to `kept`."""
    class RecordingEma(real):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            kept.append(self)
    return RecordingEma


def their_iteration(ctx: Context, st: IterationState, patches: Patches, d: Distiller,
                    hooks: Sequence[Hook] = ()) -> dict[str, Any]:
    """The distill script's main for one iteration (--Iteration 0, its evaluation a stand-in) from the same state;
    the loss from the wandb log, gradients and updated values from the recording optimizer, the EMA from their
    ModelEmaV2, and whatever the `hooks` read."""
    cfg, ws = st.cfg, ctx.ws
    _, buffers = expert_buffer(ctx)
    logged: list[dict] = []
    records: list[dict] = []
    emas: list = []
    found: dict[str, Any] = {}
    patches.note("wandb", WHAT["wandb"])
    for name in ("initial-images", "start-epoch", "batches", "recording-optimizer"):
        patches.note(name, PATCH_WHAT[name])
    with authors_modules(d.reference, ctx.reference, (d.utils, d.module), stubs={"wandb": wandb_stub(logged)}) as m:
        argv = distill_argv(ws, cfg, buffers, 1, num_eval=1) + ["--ema_decay", repr(cfg.ema_decay)]
        args = script_args(ctx.reference / d.script, argv, patches)
        a = Authors(m, patches)
        on_cpu(a, [d.module, d.utils])
        dataset_branch(a, [d.module], ws.reference_name, ws.train, ws.test, ws.meta)
        fixed_clock(a, cfg.seed, d.utils)
        a.override(d.module, "torch", "randn", given(iter([st.images.clone()]), "initial images"), "initial-images")
        a.override(d.module, "np", "random.randint", given(iter([st.start]), "a start epoch"), "start-epoch")
        a.override(d.module, "torch", "randperm", randperm_from(generator(cfg.seed, "batches")), "batches")
        a.override(d.module, "torch", "optim.SGD", recording_sgd(records), "recording-optimizer")
        a.replace(d.module, "ModelEmaV2", recording_ema(a.module(d.module).ModelEmaV2, emas), "recording-ema",
                  PATCH_WHAT["recording-ema"])
        a.replace(d.module, "evaluate_synset", lambda _it, net, *_a, **_k: (net, [], 0.0), "no-evaluation",
                  PATCH_WHAT["no-evaluation"])
        if cfg.dsa != "none":
            dsa_draws(a, generator(cfg.seed, "dsa"), d.utils)
            dsa_layout(a, [d.module], d.utils)
        if st.dtype == torch.float64:
            patches.note("float64", PATCH_WHAT["float64"])
            a.override(d.module, "torch", "load", lambda *x, **k: as_float64(torch.load(*x, **k)), "float64")
        for hook in hooks:
            hook(a, found)
        a.install()
        with default_dtype(st.dtype), working_dir(ctx.fresh("distill")), quiet():
            getattr(m, d.module).main(args)
    images, lr = (next(r for r in records if r["values"][0].dim() == dims) for dims in (4, 0))
    loss = next(row["Grand_Loss"] for row in logged if "Grand_Loss" in row)
    start = next(row["Start_Epoch"] for row in logged if "Start_Epoch" in row)
    return {"loss": loss, "grad_images": images["grads"][0], "grad_lr": lr["grads"][0], "start_epoch": start,
            "updated": 1, "images_after": images["values"][0], "lr_after": lr["values"][0],
            "ema_after": emas[0].module[0].detach().clone(), **found}


NOTES_ITERATION = [
    "their torch.randn answers with our initial images (our init real, seed role init); np.random.randint with our "
    "start epoch (role start-epoch); torch.randperm with our permutations (role batches)",
    "loss from their wandb log (Grand_Loss), gradients and updated images and lr from their optimizers' steps, the "
    "EMA of the images from their ModelEmaV2 after its update",
    "ours: trajectory_loss from that state (loss, gradients) and one iteration of distill_trajectory without the EMA "
    "(the raw images and lr), then one with it (the EMA it returns)",
]


def iteration_case(name: str, d: Distiller, config: Callable[..., DistillConfig], dtype: torch.dtype,
                   tol: Tolerance, dsa: str = "none", exact: Sequence[str] = EXACT_ITERATION,
                   hooks: Sequence[Hook] = (), notes: Sequence[str] = ()) -> Callable[[Context], CaseResult]:
    """A case comparing one distillation iteration of `d`'s script with ours at `dtype` (augmentation `dsa`, the same
    draws on both sides); `config(sizes, dsa)` is our setting, `exact` the quantities compared bit for bit."""
    def run(ctx: Context) -> CaseResult:
        started = time.perf_counter()
        st = iteration_state(ctx, config(ctx.sizes, dsa), dtype)
        ours = our_ema_iteration(ctx, st)  # our code runs outside every patch block
        with Patches() as patches:
            theirs = their_iteration(ctx, st, patches, d, hooks)
        if "match_step" not in theirs:  # read only from ATT's run (its hook)
            del ours["match_step"]
        result = compare_all(name, ours, theirs, tol, exact=exact)
        result.notes = NOTES_ITERATION + list(notes) + [
            f"{dtype}".replace("torch.", "") + (f", DSA {dsa}" if dsa != "none" else ", augmentation off")
            + f", EMA decay {st.cfg.ema_decay}"]
        return finish(result, patches, ctx, started)
    return run


def flat_grads(params: Any) -> Tensor:
    """The parameters' gradients as one flat vector (after a GSAM step: the direction its base SGD stepped along)."""
    return torch.cat([p.grad.detach().reshape(-1) for p in params]).clone()


class RecordingGsam:
    """Their GSAM optimizer as epoch() sees it, keeping (weights before, batch, labels, direction) of each step in
    `steps`; everything else is theirs."""

    def __init__(self, optimizer: Any, steps: list):
        self.optimizer, self.steps, self.batch = optimizer, steps, None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.optimizer, name)

    def set_closure(self, loss_fn: Any, inputs: Tensor, targets: Tensor, **kwargs: Any) -> Any:
        self.batch = (inputs.detach().clone(), targets.clone())
        return self.optimizer.set_closure(loss_fn, inputs, targets, **kwargs)

    def step(self, *args: Any, **kwargs: Any) -> Any:
        before = torch.cat([p.detach().reshape(-1) for p in self.optimizer.model.parameters()]).clone()
        out = self.optimizer.step(*args, **kwargs)
        self.steps.append((before, *self.batch, flat_grads(self.optimizer.model.parameters())))
        return out


def record_gsam_steps(a: Authors, module: str, steps: list) -> None:
    """`module`'s epoch() gets their GSAM optimizer wrapped in RecordingGsam (test passes get None, unchanged)."""
    real = a.module(module).epoch

    def epoch(mode: str, dataloader: Any, net: Any, optimizer: Any, *args: Any, **kwargs: Any) -> Any:
        wrapped = RecordingGsam(optimizer, steps) if optimizer is not None else None
        return real(mode, dataloader, net, wrapped, *args, **kwargs)
    a.replace(module, "epoch", epoch, "recording-gsam", PATCH_WHAT["recording-gsam"])


def our_gsam_steps(ctx: Context, recipe: Recipe, steps: list) -> tuple[Tensor, Tensor, Tensor]:
    """Each recorded step of theirs taken by our optimizer (experts.train.make_optimizer: SharpnessAware around SGD)
    and loss (experts.smooth.expert_loss) from their weights before it on their batch: (ours, theirs) directions the
    base SGD stepped along, one row per step, and our weights after each step. The direction tells α apart: ρ 0.01
    makes GSAM's correction a small part of each step (α 0.4 instead of 0.3 moves the weights after one step by 2e-6,
    within float32 rounding of weights near 1, but the direction by far more than its rounding); the weights after
    show what their step adds to before − lr·direction (their unperturb's rounding, docs/parity.md). A fresh
    optimizer per step is exact: the recipe's SGD has no momentum and GSAM no state."""
    s, ws = ctx.sizes, ctx.ws
    if recipe.momentum or recipe.weight_decay:
        raise ValueError(f"one-step replay assumes a stateless base SGD; recipe '{recipe.name}' has momentum or "
                         f"weight decay")
    model = build_model(s.model, ws.train[0].shape[1], ws.num_classes, ws.train[0].shape[-1])
    ours, after = [], []
    for before, x, y, _ in steps:
        torch.nn.utils.vector_to_parameters(before.clone(), model.parameters())
        opt, _ = make_optimizer(model, recipe)

        def closure() -> Tensor:
            loss, _ = expert_loss(model, x, x, y, recipe, 0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            return loss
        opt.step(closure)
        ours.append(flat_grads(model.parameters()))
        after.append(torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone())
    return torch.stack(ours), torch.stack([direction for *_, direction in steps]), torch.stack(after)


def their_expert(ctx: Context, ref: Reference, script: str, module: str, utils: str, argv: list[str],
                 initial: Tensor, dsa: bool, patches: Patches, steps: list | None = None) -> Tensor:
    """An MTT-lineage buffer script's one expert ([epochs+1, P], flat rows) trained from `initial` with our batch
    order (role expert-shuffle) and, with `dsa`, our DSA draws (role expert-dsa); DC augmentation off otherwise.
    `argv` must hold --buffer_path (a new folder) and --save_interval 1. With `steps` (a GSAM script), each of
    their optimizer's steps is recorded there (RecordingGsam)."""
    s, ws = ctx.sizes, ctx.ws
    out = Path(argv[argv.index("--buffer_path") + 1])
    with authors_modules(ref, ctx.reference, (utils, module)) as m:
        args = script_args(ctx.reference / script, argv, patches)
        a = Authors(m, patches)
        on_cpu(a, [module, utils])
        dataset_branch(a, [module], ws.reference_name, ws.train, ws.test, ws.meta)
        fixed_clock(a, s.seed, utils)
        inject_networks(a, [module], iter([initial]))
        loader_order(a, module, generator(s.seed, "expert-shuffle"))
        if dsa:
            dsa_draws(a, generator(s.seed, "expert-dsa"), utils)
            dsa_layout(a, [utils], utils)
        else:
            no_dc_augment(a, utils)
        if steps is not None:
            record_gsam_steps(a, module, steps)
        snapshot_copies(patches)
        a.install()
        with quiet():
            getattr(m, module).main(args)
    (expert,) = torch.load(out / reference_dir(DATASET, False, s.model) / "replay_buffer_0.pt")
    return torch.stack([torch.cat([p.reshape(-1) for p in snapshot]) for snapshot in expert])


def buffer_argv(ctx: Context, recipe: Recipe, out: Path) -> list[str]:
    """buffer_FTD.py's command line for our GSAM `recipe`: run_buffer.sh's flags (--rho_max = --rho_min = ρ; its
    --zca does not apply to Fashion-MNIST) with α, lr, momentum and weight decay from the recipe; --adaptive keeps
    its default True (it is type=bool, so any value passed would read as True)."""
    s, ws = ctx.sizes, ctx.ws
    if recipe.optimizer != "gsam" or not recipe.adaptive:
        raise ValueError(f"buffer_FTD.py runs adaptive GSAM; recipe '{recipe.name}' is {recipe.optimizer}")
    return ["--dataset", ws.reference_name, "--model", s.model, "--num_experts", "1", "--train_epochs",
            str(recipe.epochs), "--batch_train", str(recipe.batch), "--lr_teacher", repr(recipe.lr), "--mom",
            repr(recipe.momentum), "--l2", repr(recipe.weight_decay), "--rho_max", repr(recipe.rho), "--rho_min",
            repr(recipe.rho), "--alpha", repr(recipe.alpha), "--dsa", str(recipe.dsa), "--buffer_path", str(out),
            "--save_interval", "1", "--data_path", str(ws.root)]


def expert_case(name: str, recipes: Sequence[str], dsa: bool) -> Callable[[Context], CaseResult]:
    """buffer_FTD.py's expert training against our train_expert for each GSAM recipe (its α passed as --alpha)."""
    def run(ctx: Context) -> CaseResult:
        started = time.perf_counter()
        s, ws = ctx.sizes, ctx.ws
        ours_all, theirs_all, patches_all = {}, {}, Patches()
        for recipe_name in recipes:
            recipe = get_recipe(recipe_name, epochs=s.train_epochs, batch=s.batch_train, dsa=dsa)
            ours, _ = train_expert(*ws.train, s.model, ws.num_classes, recipe, s.seed)
            steps: list = []
            with Patches() as patches:
                theirs = their_expert(ctx, REFERENCE, "buffer/buffer_FTD.py", "buffer_FTD", "utils.utils_gsam",
                                      buffer_argv(ctx, recipe, ctx.fresh(name)), ours[0], dsa, patches, steps)
            patches_all.absorb(patches)
            ours_all.update({f"{recipe_name}.epoch_{e}": row for e, row in enumerate(ours)})
            theirs_all.update({f"{recipe_name}.epoch_{e}": row for e, row in enumerate(theirs)})
            key = recipe_name + ".step_"
            ours_all[key + "directions"], theirs_all[key + "directions"], ours_all[key + "weights_after"] = \
                our_gsam_steps(ctx, recipe, steps)
            theirs_all[key + "weights_after"] = torch.stack([before for before, *_ in steps[1:]] + [theirs[-1]])
        result = compare_all(name, ours_all, theirs_all, FLOAT32)
        result.notes = ["float32 (their epoch() casts batches with .float()); initial weights: our row 0 set into "
                        "their network; batch order: our permutations (role expert-shuffle)",
                        "their GSAM (buffer/gsam) with ProportionScheduler over a StepLR of gamma 1, as buffer_FTD.py "
                        "builds it: ρ constant 0.01 (run_buffer.sh's --rho_max = --rho_min), adaptive; --alpha "
                        + ", ".join(f"{get_recipe(r).alpha:g} (our {r})" for r in recipes),
                        "DSA with our draws (role expert-dsa)" if dsa else "augmentation off on both sides",
                        "<recipe>.step_directions, .step_weights_after: every step of theirs retaken by our "
                        "optimizer from their weights before it, on their batch (rows: the direction the base SGD "
                        "steps along, the weights after); their unperturb subtracts e(w) where ours restores w, a "
                        "float32 rounding of up to 6e-8 per step that the epoch rows carry on, grown by the training "
                        "(benchmarks/expert_sensitivity.py; docs/parity.md, FTD)"]
        return finish(result, patches_all, ctx, started)
    return run


CASES = {
    "distill_iteration": iteration_case("distill_iteration", FTD, ema_config, torch.float64, FLOAT64),
    "distill_iteration_float32": iteration_case("distill_iteration_float32", FTD, ema_config, torch.float32, FLOAT32),
    "distill_iteration_dsa": iteration_case("distill_iteration_dsa", FTD, ema_config, torch.float32, FLOAT32,
                                            DEFAULT_STRATEGY),
    "expert_training": expert_case("expert_training", ("gsam_a03", "gsam"), dsa=False),
    "expert_training_dsa": expert_case("expert_training_dsa", ("gsam_a03",), dsa=True),
}
