"""How an expert is trained. `sgd` is MTT's recipe: plain SGD, constant lr, no momentum or weight decay;
`gsam*` are FTD's flat experts: the same SGD wrapped in GSAM (distillery.sam)."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

OPTIMIZERS = ("sgd", "gsam")
# Part of a recipe's identity: expert files are stored per recipe name, so these are never overridden.
SHARPNESS_SETTINGS = ("optimizer", "rho", "alpha", "adaptive")


@dataclass(frozen=True)
class Recipe:
    name: str
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    epochs: int = 50
    batch: int = 256
    dsa: bool = True
    optimizer: str = "sgd"        # "sgd" | "gsam" (SharpnessAware around the SGD above)
    rho: float = 0.0              # GSAM perturbation radius (constant: FTD's rho_max = rho_min)
    alpha: float = 0.0            # GSAM weight of the orthogonal component (0 = SAM)
    adaptive: bool = True         # ASAM-style perturbation scaled by |w|, as GSAM's default

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"expert recipe '{self.name}': unknown optimizer '{self.optimizer}'; "
                             f"choose one of: {', '.join(OPTIMIZERS)}")
        if self.optimizer == "gsam" and not (self.rho > 0 and self.alpha >= 0):
            raise ValueError(f"expert recipe '{self.name}': gsam needs rho > 0 and alpha >= 0 "
                             f"(got rho {self.rho}, alpha {self.alpha})")


RECIPES: dict[str, Recipe] = {
    # MTT buffer.py defaults (reference notes §1.2): lr_teacher 0.01, mom 0, l2 0, 50 epochs, batch 256, DSA.
    "sgd": Recipe("sgd"),
    # FTD flat experts (reference notes §2.2): base SGD as MTT's, constant rho 0.01 (run_buffer.sh), adaptive;
    # alpha 1 is the FTD paper's default ("ρ = 0.01, α = 1") and its table's value outside CIFAR-10 IPC 1/10.
    "gsam": Recipe("gsam", optimizer="gsam", rho=0.01, alpha=1.0, adaptive=True),
    # FTD paper table (reference notes §2.4): alpha 0.3 for CIFAR-10 IPC 1 and 10; otherwise as "gsam".
    "gsam_a03": Recipe("gsam_a03", optimizer="gsam", rho=0.01, alpha=0.3, adaptive=True),
}


def get_recipe(name: str, **overrides) -> Recipe:
    """The named recipe with `overrides` (e.g. epochs for a quick run, batch for a small dataset) applied."""
    if name not in RECIPES:
        raise ValueError(f"unknown expert recipe '{name}'; choose one of: {', '.join(RECIPES)}")
    fixed = sorted(set(overrides) & set(SHARPNESS_SETTINGS))
    if fixed:
        raise ValueError(f"expert recipe setting(s) {', '.join(fixed)} are fixed by the recipe name (experts are "
                         "stored per recipe); add a named recipe to RECIPES instead")
    allowed = {f.name for f in fields(Recipe)} - {"name", *SHARPNESS_SETTINGS}
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ValueError(f"unknown expert recipe setting(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    return replace(RECIPES[name], **{k: v for k, v in overrides.items() if v is not None})
