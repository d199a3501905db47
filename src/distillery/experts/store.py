"""One file per expert: a contiguous [epochs+1, P] float32 trajectory plus metadata, written atomically."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from distillery.io import save_torch


def save_expert(path: str | Path, trajectory: Tensor, meta: dict) -> None:
    if trajectory.dim() != 2:
        raise ValueError(f"an expert trajectory is [epochs+1, P]; got shape {tuple(trajectory.shape)}")
    meta = {**meta, "epochs": trajectory.shape[0] - 1, "num_params": trajectory.shape[1]}
    save_torch({"trajectory": trajectory.float().contiguous().cpu(), "meta": meta}, path)


def load_expert(path: str | Path, expect: dict | None = None) -> tuple[Tensor, dict]:
    """Memory-mapped trajectory and its metadata; `expect` fields (model, zca, ...) must match the metadata."""
    try:
        blob = torch.load(path, mmap=True, weights_only=True, map_location="cpu")
        trajectory, meta = blob["trajectory"], blob["meta"]
    except Exception as err:  # truncated, not a torch file, or missing keys
        raise ValueError(f"expert file {path} is unreadable ({err}); delete it and rerun its train_expert job") from err
    if tuple(trajectory.shape) != (meta["epochs"] + 1, meta["num_params"]):
        raise ValueError(f"expert file {path}: trajectory shape {tuple(trajectory.shape)} disagrees with its "
                         f"metadata; delete it and rerun its train_expert job")
    for key, value in (expect or {}).items():
        if meta.get(key) != value:
            raise ValueError(f"expert file {path} has {key}={meta.get(key)!r} but this run needs {value!r}; "
                             f"it was trained for another setting — retrain it or point to the right buffers")
    return trajectory, meta


class ExpertSampler:
    """Yields expert trajectories in a shuffled order, reshuffled after each pass.

    Only the current expert is open (memory-mapped), so memory stays bounded by what a step reads.
    """

    def __init__(self, paths: Sequence[str | Path], generator: torch.Generator, expect: dict | None = None):
        if not paths:
            raise ValueError("no expert trajectories given: train experts first (rule train_expert)")
        self.paths, self.generator, self.expect = list(paths), generator, expect
        self.order: list[int] = []

    def __iter__(self) -> "ExpertSampler":
        return self

    def __next__(self) -> Tensor:
        if not self.order:
            self.order = torch.randperm(len(self.paths), generator=self.generator).tolist()
        return load_expert(self.paths[self.order.pop()], self.expect)[0]
