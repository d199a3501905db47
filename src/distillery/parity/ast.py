"""AST's parity cases against shenjiyuan123/AST-Alignment-with-Smooth-Expert @8030869, its code loaded at run time
from the checkout: one distillation iteration with the student components its README command runs (inner momentum,
balanced loss, intermediate matching, weight perturbation), in float64 on both sides of the balance's middle epoch,
in float32, with our `recompute` memory mode, and with the same DSA draws per group. The representative init is in
ast_init.py, expert training and evaluation in ast_training.py.

Our side's components are read from the config, as a paper run resolves them (config/paper/ast.yaml over the
defaults): the `ast` preset at the cell whose command each case runs, so a preset that drifts from the authors'
command fails a case. Their side gets only the command's switches; what their code hard-codes (momentum 0.9 as
--mom's default, log base 5 and ϑ 8, the spacing of the intermediate points, α 1) is theirs."""
from __future__ import annotations

import time
import types
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import torch

from distillery.augment import GROUPS
from distillery.distill import DistillConfig
from distillery.parity.compare import CaseResult, Tolerance, compare_all
from distillery.parity.context import Context, SharedSizes, finish
from distillery.parity.lineage import WHAT, Authors, wandb_stub
from distillery.parity.mtt import EXACT_ITERATION, IterationState, iteration_state, our_iteration
from distillery.parity.mtt import their_iteration as mtt_their_iteration
from distillery.parity.patches import Patches, normal_from
from distillery.parity.reference import Reference, authors_modules
from distillery.plan.settings import load_config, resolve_method
from distillery.plan.timing import ROOT
from distillery.seeds import generator

REFERENCE = Reference("ast", "shenjiyuan123/AST-Alignment-with-Smooth-Expert", "8030869",
                      files=("distill.py", "buffer.py", "utils.py", "networks.py", "reparam_module.py"))
DISTILL = ("utils", "distill")
FLOAT64 = Tolerance(rtol=1e-6)
FLOAT32 = Tolerance(rtol=1e-4)
PAPER_CONFIG = "config/paper/ast.yaml"
ITERATION_CELL = ("ast", "cifar100", 1)   # README.md:22: --weight_perturb --agg_middle_loss --balance_loss
INIT_CELL = ("ast", "cifar100", 10)       # distill.sh:14: --pix_init avg at IPC 10, the code's own reading
COMPONENTS = ("inner_momentum", "balance", "balance_theta", "balance_base", "intermediate", "intermediate_spacing",
              "perturb", "perturb_scale")
GENERATOR = ("distill.py:14 imports Generator from a module `generator` the repository does not have (only "
             "--pix_init gan uses it): a stand-in module whose Generator refuses to run")


@dataclass(frozen=True)
class Sizes(SharedSizes):
    """Small by default: seconds per case. distill_iteration also runs seed + 1: start epochs 0 and 3 at seeds 0
    and 1."""

    # one distillation iteration
    ipc: int = 2
    syn_steps: int = 6               # M 3: intermediate points at steps 2 and 4 (ξ_i = i·(N // M))
    expert_epochs: int = 3
    max_start_epoch: int = 5         # the balance's middle epoch 5 // 2 = 2
    batch_syn: int = 8               # 20 images in chunks 8, 8, 4
    lr_img: float = 1000.0
    lr_lr: float = 1e-6              # keeps the learned lr positive at start epoch 3 (grad_lr ≈ 1e3; at 1e-5 the step
                                     # would take it below 0, where ours skips the update and theirs steps)
    lr_teacher: float = 0.01
    # representative init (k-means on a random expert's logits)
    init_ipc: int = 10               # the code takes IPC // 10 images per k-means centre: a multiple of 10
    init_experts: int = 2
    init_expert_epochs: int = 2
    # expert training (buffer.py, the cell's recipe smooth), ast_training.py
    recipe: str = "smooth"
    train_epochs: int = 5            # the lr x0.6 and the new optimizer after epoch 5 // 2 + 1 = 3: epoch 4
    batch_train: int = 256
    # evaluation (evaluate_synset, protocol ast), ast_training.py
    eval_ipc: int = 5
    eval_epochs: int = 40            # their range(Epoch+1): 41 epochs, the decay after epoch 21, tests at 0, 20, 40
    eval_batch: int = 16


@lru_cache(maxsize=1)
def paper_config() -> dict:
    """The config an AST paper run resolves: the defaults, then config/paper/ast.yaml."""
    return load_config(ROOT, ROOT / PAPER_CONFIG)


def cell_settings(cell: tuple[str, str, int]) -> dict:
    """Our settings of (method, dataset, ipc), as the workflow resolves them."""
    return resolve_method(paper_config(), *cell)


def iteration_config(s: Sizes, dsa: str = "none", seed: int | None = None, **changes: Any) -> DistillConfig:
    """One iteration at these sizes with the student components of ITERATION_CELL's preset (real init: their
    torch.randn is answered with our images)."""
    cell = cell_settings(ITERATION_CELL)
    settings = dict(method=cell["method"], kind="trajectory", ipc=s.ipc, model=s.model, iterations=1,
                    syn_steps=s.syn_steps, expert_epochs=s.expert_epochs, max_start_epoch=s.max_start_epoch,
                    lr_img=s.lr_img, lr_lr=s.lr_lr, lr_teacher=s.lr_teacher, batch_syn=s.batch_syn, init="real",
                    dsa=dsa, seed=s.seed if seed is None else seed, **{k: cell[k] for k in COMPONENTS})
    return DistillConfig(**{**settings, **changes})


def switches(cfg: DistillConfig) -> list[str]:
    """distill.py's switches for our components (the values their code hard-codes are its own)."""
    flags = ["--balance_loss"] if cfg.balance else []
    flags += {"none": [], "equal": ["--agg_middle_loss"], "varied": ["--adaptive_middle_loss"]}[cfg.intermediate]
    return flags + (["--weight_perturb"] if cfg.perturb != "none" else [])


def distill_run(ctx: Context, patches: Patches, logged: list[dict]) -> Any:
    """authors_modules for distill.py's runs: their modules with the wandb and generator stand-ins."""
    patches.note("wandb", WHAT["wandb"])
    patches.note("generator-module", GENERATOR)
    return authors_modules(REFERENCE, ctx.reference, DISTILL,
                           stubs={"wandb": wandb_stub(logged), "generator": generator_stub()})


def generator_stub() -> types.ModuleType:
    """The module `generator` distill.py imports: a Generator that refuses to run (--pix_init gan is not run)."""
    class Generator:
        def __init__(self, *_: Any, **__: Any):
            raise RuntimeError("AST's --pix_init gan needs generator.Generator, which its repository lacks")

    stub = types.ModuleType("generator")
    stub.Generator = Generator
    return stub


def their_iteration(ctx: Context, st: IterationState, patches: Patches) -> dict[str, Any]:
    """MTT's one-iteration run of distill.py (mtt.their_iteration) on AST's, with the components' switches and its
    weight perturbation's draws answered from ours."""
    def perturb_draws(a: Authors) -> None:
        a.override("distill", "torch", "normal", normal_from(generator(st.cfg.seed, "perturb")), "perturb-draws",
                   PERTURB_DRAWS)
    return mtt_their_iteration(ctx, st, patches, distill_run, switches(st.cfg), perturb_draws)


PERTURB_DRAWS = ("weightPerturb's torch.normal draws (one per 4-D weight, distill.py:258) answered from our "
                 "perturbation generator (role perturb), flat in the default dtype as weight_perturbation draws them")


def compare_parts(name: str, parts: list[tuple[str, IterationState]], ctx: Context, tol: Tolerance,
                  notes: list[str]) -> CaseResult:
    """One iteration per part (a label and a start), ours against theirs; the quantities named <label>.<q>."""
    started, quantities, applied = time.perf_counter(), [], Patches()
    for label, st in parts:
        ours = our_iteration(ctx, st)  # our code runs outside every patch block
        with Patches() as patches:
            theirs = their_iteration(ctx, st, patches)
        applied.absorb(patches)
        part = compare_all(label, ours, theirs, tol, exact=EXACT_ITERATION)
        quantities += [replace(q, name=f"{label}.{q.name}") for q in part.quantities]
    cfg = parts[0][1].cfg
    components = ", ".join(f"{k} {getattr(cfg, k)}" for k in COMPONENTS)
    result = CaseResult(name, all(q.passed for q in quantities), tol, quantities, notes=[
        f"ours: the components of preset {ITERATION_CELL[0]} at {ITERATION_CELL[1]} IPC {ITERATION_CELL[2]} "
        f"(README.md:22's command): {components}; theirs: distill.py with {' '.join(switches(cfg))}",
        "their torch.randn answers with our initial images (init real, role init), np.random.randint with our start "
        "epoch (role start-epoch), torch.randperm with our permutations (role batches), torch.normal with our "
        "perturbation draws (role perturb)",
        "loss from their wandb log (Grand_Loss), gradients and updated images and lr from their optimizers' steps; "
        "ours: trajectory_loss from that state, then one iteration of distill_trajectory from the same seed",
        *notes])
    return finish(result, applied, ctx, started)


def iteration_case(name: str, dtype: torch.dtype, tol: Tolerance, memory: str = "full",
                   both_sides: bool = False) -> Any:
    """One iteration at `dtype` with our memory mode `memory`, augmentation off; `both_sides`: at seeds seed and
    seed + 1, whose start epochs (0 and 3 at the default sizes) lie on either side of the balance's middle."""
    def run(ctx: Context) -> CaseResult:
        s = ctx.sizes
        seeds = (s.seed, s.seed + 1) if both_sides else (s.seed,)
        parts = []
        for seed in seeds:
            st = iteration_state(ctx, iteration_config(s, seed=seed, memory=memory), dtype)
            parts.append((f"t{st.start}", st))
        middle = s.max_start_epoch // 2
        side = ", ".join(f"start epoch {st.start} ({'≥' if st.start >= middle else '<'} {middle}: CE "
                         f"{'×' if st.start >= middle else '÷'} log_5)" for _, st in parts)
        return compare_parts(name, parts, ctx, tol, [f"{dtype}".replace("torch.", "") + f", our memory {memory}, "
                                                     f"augmentation off; {side}"])
    return run


def dsa_case(ctx: Context) -> CaseResult:
    """One iteration per DSA group (float32: their scale and rotate build float32 grids), the same draws on both
    sides: our DSA generator answers their utils.torch.rand/randint."""
    parts = [(group, iteration_state(ctx, iteration_config(ctx.sizes, group), torch.float32)) for group in GROUPS]
    return compare_parts("distill_iteration_dsa", parts, ctx, FLOAT32,
                         ["float32; one iteration per DSA group (--dsa_strategy <group>), their DiffAugment's draws "
                          "answered from our DSA generator (role dsa)"])
