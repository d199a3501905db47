"""ATT's parity cases against NiaLiu/ATT @eec3176, its code loaded at run time from the checkout: one distillation
iteration with its step choice (the inner step whose parameters are nearest the target by L1, ties to the later),
the loss at that step and the EMA update (float64, float32, with the same DSA draws, and a case where every step
ties), and two epochs of expert training (buffer_ATT.py, batch 512) against our recipe sgd_b512.

distill_ATT.py is FTD's distill script plus the step choice (distill_ATT.py:476-519, :524), so the cases run on FTD's
runner (parity.ftd) with a hook that reads the chosen step: it never reaches their log, so the hook records the
parameters their L1 distances are taken at, step by step, and the parameters their loss is taken at; the chosen step
is the one whose parameters those are. buffer_ATT.py is MTT's buffer.py with batch 512; utils_baseline.py is MTT's
utils.py (Tiny ImageNet's val folder and the 'M' pool aside), so evaluation is MTT's and MTT's cases cover it."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from distillery.augment import DEFAULT_STRATEGY
from distillery.distill import DistillConfig
from distillery.experts import get_recipe
from distillery.experts.train import train_expert
from distillery.parity.compare import CaseResult, compare_all
from distillery.parity.context import Context, SharedSizes, finish
from distillery.parity.ftd import Distiller, ema_config, iteration_case, their_expert
from distillery.parity.lineage import Authors
from distillery.parity.mtt import EXACT_ITERATION, FLOAT32, FLOAT64
from distillery.parity.patches import Patches
from distillery.parity.reference import Reference

REFERENCE = Reference("att", "NiaLiu/ATT", "eec3176",
                      files=("distill_ATT.py", "buffer_ATT.py", "utils_baseline.py", "model_ema.py", "networks.py",
                             "reparam_module.py"))
ATT = Distiller(REFERENCE, "distill_ATT.py", "distill_ATT", "utils_baseline")
EXACT_STEP = EXACT_ITERATION + ("match_step",)
RECIPE = "sgd_b512"  # buffer_ATT.py's defaults: MTT's buffer.py with batch 512 (buffer_ATT.py:117)
MATCH_STEP_WHAT = ("torch.nn.functional.l1_loss and mse_loss in distill_ATT.py record the tensors they are given "
                   "(values unchanged): the chosen step is the inner step whose parameters, among those each step's "
                   "L1 distance was taken at (:514), the first mse_loss (the matching loss, :524) is taken at")


@dataclass(frozen=True)
class Sizes(SharedSizes):
    """Small by default: seconds per case. 6 inner steps on 8 of the 20 images at lr 0.01 carry the student past the
    target, so the chosen step is inside the path (step 3 of 6 at these sizes), not its end."""

    # one distillation iteration
    ipc: int = 2
    syn_steps: int = 6
    expert_epochs: int = 2
    max_start_epoch: int = 2
    batch_syn: int = 8
    lr_img: float = 1000.0
    lr_lr: float = 1e-5
    lr_teacher: float = 0.01
    ema_decay: float = 0.75          # as FTD's cases: the update's share shows
    # the tie case: a learned lr so small that no inner step moves any parameter (float64), so every step's L1
    # distance is the same and the choice is the tie-break alone; lr_lr keeps the lr positive after the update
    tie_lr_teacher: float = 1e-40
    tie_lr_lr: float = 1e-50
    # expert training (buffer_ATT.py, batch 512 by its default)
    train_epochs: int = 2


def att_config(s: Sizes, dsa: str = "none", **changes: Any) -> DistillConfig:
    """Our att preset's components at these sizes: FTD's EMA, the match step nearest the target by L1."""
    return ema_config(s, dsa, **{"method": "att", "match": "adaptive", "match_distance": "l1", **changes})


def tie_config(s: Sizes, dsa: str = "none") -> DistillConfig:
    """att_config with the tie case's learned lr: every inner step leaves the parameters as they were."""
    return att_config(s, dsa, lr_teacher=s.tie_lr_teacher, lr_lr=s.tie_lr_lr)


def match_step(a: Authors, found: dict) -> None:
    """Read distill_ATT.py's chosen step into found["match_step"] (1-based, as ours): the position, among the
    parameters their l1_loss saw (one per inner step), of those their first mse_loss sees."""
    seen: list[Tensor] = []

    def l1_loss(input: Tensor, target: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        seen.append(input)
        return F.l1_loss(input, target, *args, **kwargs)

    def mse_loss(input: Tensor, target: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        if "match_step" not in found:
            found["match_step"] = next((k for k, theta in enumerate(seen, 1) if theta is input), 0)
        return F.mse_loss(input, target, *args, **kwargs)

    a.override(ATT.module, "torch", "nn.functional.l1_loss", l1_loss, "match-step", MATCH_STEP_WHAT)
    a.override(ATT.module, "torch", "nn.functional.mse_loss", mse_loss, "match-step", MATCH_STEP_WHAT)


STEP_NOTES = ["match_step: their chosen step (1-based) read from the parameters their loss is taken at; ours from "
              "distill_trajectory's history (nearest_step, L1, ties to the later)"]
TIE_NOTES = STEP_NOTES + [
    "the tie case: learned lr tie_lr_teacher, so θ − lr·g rounds to θ in float64 and all N steps are at the same "
    "L1 distance; ATT's running minimum with >= (:516) picks the last step, and the loss and image gradient at it "
    "come through all N steps (the paper's squared L2 with ties to the earliest, att_paper, would pick step 1)"]


def expert_case(dsa: bool) -> Callable[[Context], CaseResult]:
    """buffer_ATT.py's expert training (its default batch 512: no --batch_train passed) against our train_expert with
    recipe sgd_b512, for train_epochs epochs."""
    name = "expert_training_dsa" if dsa else "expert_training"

    def run(ctx: Context) -> CaseResult:
        started = time.perf_counter()
        s, ws = ctx.sizes, ctx.ws
        recipe = get_recipe(RECIPE, epochs=s.train_epochs, dsa=dsa)
        ours, _ = train_expert(*ws.train, s.model, ws.num_classes, recipe, s.seed)
        argv = ["--dataset", ws.reference_name, "--model", s.model, "--num_experts", "1", "--train_epochs",
                str(s.train_epochs), "--lr_teacher", repr(recipe.lr), "--dsa", str(dsa), "--buffer_path",
                str(ctx.fresh(name)), "--save_interval", "1", "--data_path", str(ws.root)]
        with Patches() as patches:
            theirs = their_expert(ctx, REFERENCE, "buffer_ATT.py", "buffer_ATT", "utils_baseline", argv, ours[0], dsa,
                                  patches)
        result = compare_all(name, {f"epoch_{e}": row for e, row in enumerate(ours)},
                             {f"epoch_{e}": row for e, row in enumerate(theirs)}, FLOAT32)
        result.notes = ["float32 (their epoch() casts batches with .float()); initial weights: our row 0 set into "
                        "their network; batch order: our permutations (role expert-shuffle)",
                        f"batch {recipe.batch}: their default (no --batch_train, as their README's commands) and our "
                        f"recipe {RECIPE}'s",
                        "DSA with our draws (role expert-dsa)" if dsa else "augmentation off on both sides"]
        return finish(result, patches, ctx, started)
    return run


CASES = {
    "distill_iteration": iteration_case("distill_iteration", ATT, att_config, torch.float64, FLOAT64,
                                        exact=EXACT_STEP, hooks=(match_step,), notes=STEP_NOTES),
    "distill_iteration_float32": iteration_case("distill_iteration_float32", ATT, att_config, torch.float32, FLOAT32,
                                                exact=EXACT_STEP, hooks=(match_step,), notes=STEP_NOTES),
    "distill_iteration_dsa": iteration_case("distill_iteration_dsa", ATT, att_config, torch.float32, FLOAT32,
                                            DEFAULT_STRATEGY, exact=EXACT_STEP, hooks=(match_step,),
                                            notes=STEP_NOTES),
    "distill_iteration_tie": iteration_case("distill_iteration_tie", ATT, tie_config, torch.float64, FLOAT64,
                                            exact=EXACT_STEP, hooks=(match_step,), notes=TIE_NOTES),
    "expert_training": expert_case(dsa=False),
    "expert_training_dsa": expert_case(dsa=True),
}
