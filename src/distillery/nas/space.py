"""The search spaces: DC's 720 ConvNets (FTD Table 5) and sampled NAS-Bench-201 cells (APM Table 3), as model
names `build_model` accepts, so every architecture trains through the one evaluation protocol."""
from __future__ import annotations

import csv
import itertools
import random
from pathlib import Path

from distillery.models.cell import arch_to_name
from distillery.models.convnet import name_codes

# DC's space (Zhao et al. 2021, followed by FTD): 4 depths x 4 widths x 3 activations x 5 norms x 3 poolings.
DEPTHS = (1, 2, 3, 4)
WIDTHS = (32, 64, 128, 256)
ACTS, NORMS, POOLS = (name_codes(kind) for kind in ("act", "norm", "pool"))  # all of each: value -> code


def convnet_space() -> list[str]:
    """The 720 ConvNet names, e.g. 'ConvNetD3W128INARAP' (depth, width, norm, activation, pooling codes)."""
    return [f"ConvNetD{d}W{w}{n}{a}{p}" for d, w, n, a, p in
            itertools.product(DEPTHS, WIDTHS, NORMS.values(), ACTS.values(), POOLS.values())]


def missing_ground_truth(study: str, path: str | Path) -> str:
    """What to supply, and where, when a NAS-Bench-201 study's ground-truth file is absent."""
    return (f"NAS study '{study}' ranks NAS-Bench-201 cells against their ground-truth accuracies, which cannot be "
            f"downloaded here: put a CSV at {path} (relative to the working directory), or point the study's "
            f"`ground_truth` key (config `nas:` list, entry name '{study}') at one. Format: a header line "
            f"'arch,accuracy', then one row per sampled cell, its NAS-Bench-201 arch string (quoted or not) and its "
            f"benchmark accuracy, e.g. |nor_conv_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1~1|"
            f"skip_connect~2|,89.52 (APM: 100 random cells, CIFAR-10 validation accuracy from NAS-Bench-201).")


def read_ground_truth(path: str | Path, study: str = "?") -> dict[str, float]:
    """{model name: accuracy} from a CSV with columns `arch` (a NAS-Bench-201 arch string) and `accuracy`."""
    if not Path(path).is_file():
        raise FileNotFoundError(missing_ground_truth(study, path))
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"arch", "accuracy"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: the ground-truth CSV needs the header 'arch,accuracy' "
                             f"(got {reader.fieldnames})")
        truth: dict[str, float] = {}
        for line, row in enumerate(reader, 2):
            try:
                name, accuracy = arch_to_name(row["arch"]), float(row["accuracy"])
            except (TypeError, ValueError) as err:
                raise ValueError(f"{path}, line {line}: {err}") from err
            if name in truth:
                raise ValueError(f"{path}, line {line}: architecture {row['arch']} is listed twice")
            truth[name] = accuracy
    if len(truth) < 2:
        raise ValueError(f"{path}: a rank correlation needs at least 2 architectures, got {len(truth)}")
    return truth


def sample(names: list[str], subset: int | None, seed: int) -> list[str]:
    """`subset` of `names` drawn without replacement by `seed` (all of them when None or larger), in space order."""
    if subset is None or subset >= len(names):
        return list(names)
    if subset < 1:
        raise ValueError(f"nas_subset must be at least 1 (got {subset})")
    chosen = set(random.Random(seed).sample(range(len(names)), subset))
    return [name for i, name in enumerate(names) if i in chosen]
