"""The inputs both sides of a parity run share: a small class-balanced subset of Fashion-MNIST (28 px, one channel:
the MTT lineage's networks are the same as ours there) prepared as the workflow prepares a dataset, in a temporary
root; and expert trajectories written as our files and exported in the authors' buffer layout."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from distillery.data import class_indices, load_split
from distillery.data.prepare import LOADERS, write_prepared
from distillery.data.sources import RawSplits
from distillery.experts import get_recipe, save_expert
from distillery.interop import export_buffers
from distillery.interop.buffers import REFERENCE_NAMES
from distillery.plan import PATHS, expert_dir

DATASET = "fashion-mnist"


@dataclass
class Workspace:
    """A temporary workflow root holding the prepared subset, and its normalised splits in memory."""

    root: Path
    prepared: Path
    meta: dict
    train: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]

    @property
    def reference_name(self) -> str:
        """The authors' --dataset for it (interop's table), which their patched get_dataset answers."""
        return REFERENCE_NAMES[DATASET]

    @property
    def num_classes(self) -> int:
        return self.meta["num_classes"]


def _first(labels: Tensor, num_classes: int, per_class: int) -> Tensor:
    """The first `per_class` indices of each class, class by class (a deterministic, balanced subset)."""
    picks = class_indices(labels, num_classes)
    short = [c for c, idx in enumerate(picks) if len(idx) < per_class]
    if short:
        raise ValueError(f"{DATASET} has fewer than {per_class} images in class(es) {short}")
    return torch.cat([idx[:per_class] for idx in picks])


def make_workspace(root: str | Path, data_dir: str | Path, train_per_class: int, test_per_class: int) -> Workspace:
    """Prepare the first `train_per_class` / `test_per_class` images of each class of Fashion-MNIST (read from
    data_dir/fashion-mnist or the Debian package dataset-fashion-mnist, as `prepare` reads it) under `root`."""
    root = Path(root)
    raw = LOADERS[DATASET](Path(data_dir))
    classes = len(raw.classes)
    train, test = _first(raw.train_labels, classes, train_per_class), _first(raw.test_labels, classes, test_per_class)
    subset = RawSplits(raw.train_images[train], raw.train_labels[train], raw.test_images[test], raw.test_labels[test],
                       classes=raw.classes, info={**raw.info, "subset": f"the first {train_per_class} train and "
                                                                         f"{test_per_class} test images per class"})
    prepared = root / Path(PATHS["meta"].format(dataset=DATASET)).parent
    meta = write_prepared(DATASET, subset, prepared)
    return Workspace(root, prepared, meta, load_split(prepared, "train"), load_split(prepared, "test"))


def export_experts(ws: Workspace, trajectories: list[Tensor], model: str, recipe: str, root: str | Path,
                   out: str | Path) -> Path:
    """Write `trajectories` as our expert files 0, 1, … under the workflow root `root` (not the workspace's, whose
    expert folders stay free for imports) and export them with interop's export_buffers to the authors'
    --buffer_path `out`; returns `out`."""
    for k, trajectory in enumerate(trajectories):
        wildcards = expert_dir(DATASET, {"model": model, "zca": False, "recipe": recipe})
        save_expert(Path(root) / PATHS["expert"].format(**wildcards, k=k), trajectory, {
            "model": model, "zca": False, "dataset": DATASET, "dataset_sha256": ws.meta["sha256"]["train.pt"],
            "recipe": asdict(get_recipe(recipe)), "seed": None})
    export_buffers(out, DATASET, model, recipe, root=root)
    return Path(out)
