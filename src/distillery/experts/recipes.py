"""How an expert is trained. `sgd` is MTT's recipe: plain SGD, constant lr, no momentum or weight decay;
`gsam*` are FTD's flat experts: the same SGD wrapped in GSAM (distillery.sam); `sgd_momentum`, `adam`,
`smooth_gp` and `smooth` are AST's (Shen et al. 2023): stronger optimizers, and momentum SGD smoothed by a
clipped CE and a gradient penalty (distillery.experts.smooth)."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

from distillery.typecheck import check_types

OPTIMIZERS = ("sgd", "gsam", "adam")
# Part of a recipe's identity: expert files are stored per recipe name, so these are never overridden.
IDENTITY_SETTINGS = ("optimizer", "rho", "alpha", "adaptive", "lr_decay_at", "lr_decay", "clip_epochs",
                     "clip_start", "gp_weight", "gp_target", "final_only")


@dataclass(frozen=True)
class Recipe:
    name: str
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0         # SGD's and Adam's L2 term (torch's weight_decay)
    epochs: int = 50
    batch: int = 256
    dsa: bool = True
    optimizer: str = "sgd"            # "sgd" | "gsam" (SharpnessAware around the SGD above) | "adam"
    rho: float = 0.0                  # GSAM perturbation radius (constant: FTD's rho_max = rho_min)
    alpha: float = 0.0                # GSAM weight of the orthogonal component (0 = SAM)
    adaptive: bool = True             # ASAM-style perturbation scaled by |w|, as GSAM's default
    lr_decay_at: float | None = None  # from epoch ⌊at·epochs⌋ (0-based) on, lr = lr·lr_decay (None: constant)
    lr_decay: float = 1.0
    clip_epochs: int = 0              # CE of epoch e scaled by clip_start + (1 − clip_start)·e/clip_epochs, e < this
    clip_start: float = 0.5
    gp_weight: float = 0.0            # μ of the gradient penalty μ·mean_i(‖∇_x Σ logits‖ − K)² (0 = none)
    gp_target: float = 1.0            # K
    final_only: bool = False          # keep the initial and final weights only (APM's teachers), not every epoch

    def __post_init__(self) -> None:
        def bad(problem: str) -> ValueError:
            return ValueError(f"expert recipe '{self.name}': {problem}")

        check_types(self, f"expert recipe '{self.name}'")
        if not self.lr > 0 or self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise bad(f"lr must be > 0, weight_decay >= 0 and momentum in [0, 1) (got lr {self.lr}, weight_decay "
                      f"{self.weight_decay}, momentum {self.momentum})")
        if self.epochs < 1 or self.batch < 1:
            raise bad(f"epochs and batch must be at least 1 (got {self.epochs}, {self.batch})")
        if self.optimizer not in OPTIMIZERS:
            raise bad(f"unknown optimizer '{self.optimizer}'; choose one of: {', '.join(OPTIMIZERS)}")
        if self.optimizer == "gsam" and not (self.rho > 0 and self.alpha >= 0):
            raise bad(f"gsam needs rho > 0 and alpha >= 0 (got rho {self.rho}, alpha {self.alpha})")
        if self.optimizer == "adam" and self.momentum != 0:
            raise bad(f"adam takes no momentum (got {self.momentum}; its betas are torch's defaults)")
        if not self.lr_decay > 0:
            raise bad(f"lr_decay must be > 0 (got {self.lr_decay})")
        if self.lr_decay_at is not None and not 0 <= self.lr_decay_at < 1:
            raise bad(f"lr_decay_at must be a fraction of the epochs in [0, 1) or None (got {self.lr_decay_at})")
        if self.clip_epochs < 0 or not 0 < self.clip_start <= 1:
            raise bad(f"clipping needs clip_epochs >= 0 and clip_start in (0, 1] "
                      f"(got {self.clip_epochs}, {self.clip_start})")
        if not self.gp_weight >= 0:
            raise bad(f"gp_weight must be >= 0 (got {self.gp_weight})")
        if self.gp_weight > 0 and self.optimizer == "gsam":
            raise bad("the gradient penalty is not combined with gsam (gp_weight must be 0)")


_SGD_MOMENTUM = Recipe("sgd_momentum", lr=0.003, momentum=0.9, weight_decay=0.001, lr_decay_at=0.5, lr_decay=0.5)

RECIPES: dict[str, Recipe] = {
    # MTT buffer.py defaults (reference notes §1.2): lr_teacher 0.01, mom 0, l2 0, 50 epochs, batch 256, DSA.
    "sgd": Recipe("sgd"),
    # FTD flat experts (reference notes §2.2): base SGD as MTT's, constant rho 0.01 (run_buffer.sh), adaptive;
    # alpha 1 is the FTD paper's default ("ρ = 0.01, α = 1") and its table's value outside CIFAR-10 IPC 1/10.
    "gsam": Recipe("gsam", optimizer="gsam", rho=0.01, alpha=1.0, adaptive=True),
    # FTD paper table (reference notes §2.4): alpha 0.3 for CIFAR-10 IPC 1 and 10; otherwise as "gsam".
    "gsam_a03": Recipe("gsam_a03", optimizer="gsam", rho=0.01, alpha=0.3, adaptive=True),
    # ATT's buffer_ATT.py: MTT's recipe with batch 512 (reference notes §4.1).
    "sgd_b512": Recipe("sgd_b512", batch=512),
    # AST momentum experts (paper Table I/VII "MOM"): lr 0.003, momentum 0.9, l2 0.001 are AST buffer.py's defaults
    # (reference notes §3.2; the paper gives none); 50 epochs, batch 256, DSA. The lr is halved from epoch index 25
    # (of 50; half the epochs when overridden) on, as the paper ("reduced by half in the 25th epoch"); the code instead multiplies it by 0.6 at epoch 26 and
    # rebuilds the optimizer (momentum reset), while we keep the optimizer and its momentum.
    "sgd_momentum": _SGD_MOMENTUM,
    # AST paper Table I row "ADAM" (buffer.py --optim ADAM): Adam at the same lr, l2 (torch Adam's L2) and halving.
    "adam": Recipe("adam", optimizer="adam", lr=0.003, weight_decay=0.001, lr_decay_at=0.5, lr_decay=0.5),
    # AST Table VII row 3: momentum + gradient penalty, no clipping. K = 1 (paper: "typically set at 1");
    # μ = 1 from the paper's implementation details ("μ is set to 1"); the code's LAMBDA is 2.
    "smooth_gp": replace(_SGD_MOMENTUM, name="smooth_gp", gp_weight=1.0, gp_target=1.0),
    # AST smooth experts (Table VII last row): momentum + clipped CE + gradient penalty. Clipping as the paper
    # ("an array ranging from 0.5 to 1 ... for the first 5 training epochs"): 0.5, 0.6, ..., 0.9, then 1;
    # the code (--loss_decay) uses 10 epochs, 0.50, 0.55, ..., 0.95.
    "smooth": replace(_SGD_MOMENTUM, name="smooth", clip_epochs=5, clip_start=0.5, gp_weight=1.0, gp_target=1.0),
    # APM teachers (model_train/train.py): SGD lr 0.05, momentum 0.9, wd 5e-4, lr x0.1 at epoch 50 of the README's
    # 100 (its default is 200), batch 256, DSA. Only the final weights are kept: the code saves the epoch with the
    # best test accuracy, a selection on the test set we do not repeat.
    "teacher": Recipe("teacher", lr=0.05, momentum=0.9, weight_decay=5e-4, epochs=100, lr_decay_at=0.5,
                      lr_decay=0.1, final_only=True),
}


def get_recipe(name: str, **overrides) -> Recipe:
    """The named recipe with `overrides` (e.g. epochs for a quick run, batch for a small dataset) applied."""
    if name not in RECIPES:
        raise ValueError(f"unknown expert recipe '{name}'; choose one of: {', '.join(RECIPES)}")
    fixed = sorted(set(overrides) & set(IDENTITY_SETTINGS))
    if fixed:
        raise ValueError(f"expert recipe setting(s) {', '.join(fixed)} are fixed by the recipe name (experts are "
                         "stored per recipe); add a named recipe to RECIPES instead")
    allowed = {f.name for f in fields(Recipe)} - {"name", *IDENTITY_SETTINGS}
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ValueError(f"unknown expert recipe setting(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    return replace(RECIPES[name], **{k: v for k, v in overrides.items() if v is not None})
