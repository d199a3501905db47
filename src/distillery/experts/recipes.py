"""How an expert is trained. `sgd` is MTT's recipe: plain SGD, constant lr, no momentum or weight decay;
`gsam*` are FTD's flat experts: the same SGD wrapped in GSAM (distillery.sam); `sgd_momentum`, `adam`,
`smooth_gp` and `smooth` are AST's (Shen et al. 2023) as its buffer.py trains them: stronger optimizers, and
momentum SGD smoothed by a clipped CE and a gradient penalty (distillery.experts.smooth); the `*_paper`
recipes are the AST paper's reading of the same experts."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

from distillery.typecheck import check_types

OPTIMIZERS = ("sgd", "gsam", "adam")
# Part of a recipe's identity: expert files are stored per recipe name, so these are never overridden.
IDENTITY_SETTINGS = ("optimizer", "rho", "alpha", "adaptive", "lr_decay_at", "lr_decay", "lr_decay_delay",
                     "lr_decay_reset", "clip_epochs", "clip_start", "gp_weight", "gp_target", "gp_norm", "gp_input",
                     "final_only")
GP_NORMS = ("sample", "pixel")
GP_INPUTS = ("augmented", "clean")


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
    lr_decay_at: float | None = None  # from epoch ⌊at·epochs⌋ + lr_decay_delay (0-based) on, lr = lr·lr_decay
    lr_decay: float = 1.0             # (lr_decay_at None: constant)
    lr_decay_delay: int = 0
    lr_decay_reset: bool = False      # the optimizer restarts at the decay (momentum / Adam moments cleared)
    clip_epochs: int = 0              # CE of epoch e scaled by clip_start + (1 − clip_start)·e/clip_epochs, e < this
    clip_start: float = 0.5
    gp_weight: float = 0.0            # μ of the gradient penalty μ·mean_i(‖∇_x Σ logits‖ − K)² (0 = none)
    gp_target: float = 1.0            # K
    gp_norm: str = "sample"           # ‖·‖ over each input (Eq. 19) | "pixel": over the channels of each pixel
    gp_input: str = "augmented"       # the penalised forward pass: the training one | "clean": a second pass on
    #                                   the un-augmented batch
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
        if self.lr_decay_delay < 0:
            raise bad(f"lr_decay_delay must be >= 0 epochs (got {self.lr_decay_delay})")
        if self.clip_epochs < 0 or not 0 < self.clip_start <= 1:
            raise bad(f"clipping needs clip_epochs >= 0 and clip_start in (0, 1] "
                      f"(got {self.clip_epochs}, {self.clip_start})")
        if not self.gp_weight >= 0:
            raise bad(f"gp_weight must be >= 0 (got {self.gp_weight})")
        if self.gp_weight > 0 and self.optimizer == "gsam":
            raise bad("the gradient penalty is not combined with gsam (gp_weight must be 0)")
        if self.gp_norm not in GP_NORMS or self.gp_input not in GP_INPUTS:
            raise bad(f"gp_norm must be one of {', '.join(GP_NORMS)} and gp_input one of {', '.join(GP_INPUTS)} "
                      f"(got {self.gp_norm!r}, {self.gp_input!r})")


# AST's buffer.py @8030869 (reference notes §3.2): --optim SGDMOM with its defaults lr_teacher 0.003, mom 0.9,
# l2 0.001 (buffer.py:150,162,163; SGD at :76); 50 epochs, batch 256, DSA. After epoch train_epochs//2+1 (26 of
# 50, 0-based) the lr is multiplied by 0.6 and the optimizer rebuilt (:88,121-131), so epochs 27-49 run at 0.6x
# with a fresh momentum: lr_decay_at 0.5 + lr_decay_delay 2, lr_decay_reset.
_SGD_MOMENTUM = Recipe("sgd_momentum", lr=0.003, momentum=0.9, weight_decay=0.001, lr_decay_at=0.5, lr_decay=0.6,
                       lr_decay_delay=2, lr_decay_reset=True)
# The AST paper's schedule (Sec. V-A: "the learning rate reduced by half in the 25th epoch"): halved from epoch
# index 25 (of 50; half the epochs when overridden), one optimizer and its momentum throughout.
_SGD_MOMENTUM_PAPER = replace(_SGD_MOMENTUM, name="sgd_momentum_paper", lr_decay=0.5, lr_decay_delay=0,
                              lr_decay_reset=False)
# The gradient penalty of AST's utils.py:epoch_gp (buffer.py --gp True; :105-111): λ = LAMBDA = 2 (utils.py:379),
# K = 1, the norm over the channels of each pixel (:423), on a second forward pass of the un-augmented batch
# with the input requiring grad (:393,417-421), added to the (clipped) CE of the augmented batch (:413,425).
_CODE_GP = dict(gp_weight=2.0, gp_target=1.0, gp_norm="pixel", gp_input="clean")
# The paper's penalty (Eq. 19): μ = 1 ("μ is set to 1", Sec. V-A), K = 1 ("typically set at 1"), ‖∇_{x_i} W(x_i)‖
# over each input, taken on the training pass.
_PAPER_GP = dict(gp_weight=1.0, gp_target=1.0, gp_norm="sample", gp_input="augmented")

RECIPES: dict[str, Recipe] = {
    # MTT buffer.py defaults (reference notes §1.2): lr_teacher 0.01, mom 0, l2 0, 50 epochs, batch 256, DSA.
    "sgd": Recipe("sgd"),
    # FTD flat experts (reference notes §2.2): base SGD as MTT's, constant rho 0.01 (run_buffer.sh), adaptive;
    # alpha 1 is the FTD paper's default ("ρ = 0.01, α = 1") and its table's value outside CIFAR-10 IPC 1/10.
    "gsam": Recipe("gsam", optimizer="gsam", rho=0.01, alpha=1.0, adaptive=True),
    # FTD paper table (reference notes §2.4): alpha 0.3 for CIFAR-10 IPC 1 and 10; otherwise as "gsam".
    "gsam_a03": Recipe("gsam_a03", optimizer="gsam", rho=0.01, alpha=0.3, adaptive=True),
    # DATM's experts (README step 2 @97ae510: buffer_FTD.py --train_epochs=100 --rho_max=0.01 --rho_min=0.01
    # --alpha=0.3 --lr_teacher=0.01 --mom=0. --batch_train=256): FTD's GSAM recipe at α 0.3 for 100 epochs, so that
    # DATM's late windows (start epochs up to 70) have expert epochs to match.
    "gsam100": Recipe("gsam100", optimizer="gsam", rho=0.01, alpha=0.3, adaptive=True, epochs=100),
    # ATT's buffer_ATT.py: MTT's recipe with batch 512 (reference notes §4.1).
    "sgd_b512": Recipe("sgd_b512", batch=512),
    # AST momentum experts (Table I/VII "MOM"): buffer.py --optim SGDMOM, above.
    "sgd_momentum": _SGD_MOMENTUM,
    "sgd_momentum_paper": _SGD_MOMENTUM_PAPER,
    # AST Table I "ADAM": buffer.py --optim ADAM, torch Adam at lr 0.003 with no weight decay (buffer.py:74), the same
    # x0.6 decay and rebuild (:123-124). The paper gives no Adam settings.
    "adam": Recipe("adam", optimizer="adam", lr=0.003, lr_decay_at=0.5, lr_decay=0.6, lr_decay_delay=2,
                   lr_decay_reset=True),
    # AST Table VII row 3: momentum + gradient penalty, no clipping (buffer.py --gp True without --loss_decay).
    "smooth_gp": replace(_SGD_MOMENTUM, name="smooth_gp", **_CODE_GP),
    "smooth_gp_paper": replace(_SGD_MOMENTUM_PAPER, name="smooth_gp_paper", **_PAPER_GP),
    # AST smooth experts (Table VII last row; README: --optim SGDMOM --loss_decay --gp True): the CE of epochs 0-9
    # scaled by 0.50, 0.55, ..., 0.95, then 1 (buffer.py:90-91,105-111; utils.py:413).
    "smooth": replace(_SGD_MOMENTUM, name="smooth", clip_epochs=10, clip_start=0.5, **_CODE_GP),
    # The paper's smooth experts: "an array ranging from 0.5 to 1 ... for the first 5 training epochs" (Sec. V-A):
    # 0.5, 0.6, ..., 0.9, then 1.
    "smooth_paper": replace(_SGD_MOMENTUM_PAPER, name="smooth_paper", clip_epochs=5, clip_start=0.5, **_PAPER_GP),
    # APM teachers (model_train/train.py): SGD lr 0.05, momentum 0.9, wd 5e-4, lr x0.1 at epoch 50 of the README's
    # 100 (its default is 200), batch 256, DSA. Only the final weights are kept: the code saves the epoch with the
    # best test accuracy, a selection on the test set we do not repeat.
    "teacher": Recipe("teacher", lr=0.05, momentum=0.9, weight_decay=5e-4, epochs=100, lr_decay_at=0.5,
                      lr_decay=0.1, final_only=True),
}


def recipe_changes(name: str, stored: dict) -> list[str]:
    """How an expert's stored recipe (its metadata's `recipe`) differs from recipe `name` as it is now, in the name
    and the settings that make a recipe (IDENTITY_SETTINGS); a setting the file predates reads as its default.
    Empty when the file is that recipe's."""
    current, defaults = get_recipe(name), {f.name: f.default for f in fields(Recipe)}
    changes = [] if stored.get("name") == name else [f"name={stored.get('name')!r}"]
    for key in IDENTITY_SETTINGS:
        if (old := stored.get(key, defaults[key])) != getattr(current, key):
            changes.append(f"{key}={old!r} (now {getattr(current, key)!r})")
    return changes


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
