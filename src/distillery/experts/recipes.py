"""How an expert is trained. `sgd` is MTT's recipe: plain SGD, constant lr, no momentum or weight decay."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class Recipe:
    name: str
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    epochs: int = 50
    batch: int = 256
    dsa: bool = True


RECIPES: dict[str, Recipe] = {
    # MTT buffer.py defaults (reference notes §1.2): lr_teacher 0.01, mom 0, l2 0, 50 epochs, batch 256, DSA.
    "sgd": Recipe("sgd"),
}


def get_recipe(name: str, **overrides) -> Recipe:
    """The named recipe with `overrides` (e.g. epochs for a quick run, batch for a small dataset) applied."""
    if name not in RECIPES:
        raise ValueError(f"unknown expert recipe '{name}'; choose one of: {', '.join(sorted(RECIPES))}")
    allowed = {f.name for f in fields(Recipe)} - {"name"}
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ValueError(f"unknown expert recipe setting(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    return replace(RECIPES[name], **{k: v for k, v in overrides.items() if v is not None})
