"""One file per expert: a contiguous [epochs+1, P] float32 trajectory plus metadata (with the trajectory's
sha256), written atomically and checked on load."""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from distillery.experts.recipes import recipe_changes
from distillery.io import regenerate, save_torch, sha256_tensor
from distillery.needs import check_expert_epochs


def save_expert(path: str | Path, trajectory: Tensor, meta: dict) -> None:
    if trajectory.dim() != 2:
        raise ValueError(f"an expert trajectory is [epochs+1, P]; got shape {tuple(trajectory.shape)}")
    trajectory = trajectory.float().contiguous().cpu()
    meta = {**meta, "epochs": trajectory.shape[0] - 1, "num_params": trajectory.shape[1],
            "sha256": sha256_tensor(trajectory)}
    save_torch({"trajectory": trajectory, "meta": meta}, path)


def load_expert(path: str | Path, expect: dict | None = None, verify: bool = True) -> tuple[Tensor, dict]:
    """Memory-mapped trajectory and its metadata; `expect` fields (model, zca, num_params, ...) must match the
    metadata, and `expect["recipe"]` (a recipe name) must be the recipe the file was trained with, as that recipe
    is now (recipe_changes: a file trained before a recipe changed is stale). `verify` reads the whole trajectory
    once to compare its sha256 with the metadata's."""
    retrain = regenerate(path, "train_expert")
    try:
        blob = torch.load(path, mmap=True, weights_only=True, map_location="cpu")
        trajectory, meta = blob["trajectory"], blob["meta"]
    except Exception as err:  # truncated, not a torch file, or missing keys
        raise ValueError(f"expert file {path} is unreadable ({err}); {retrain}") from err
    if tuple(trajectory.shape) != (meta.get("epochs", -1) + 1, meta.get("num_params")):
        raise ValueError(f"expert file {path}: trajectory shape {tuple(trajectory.shape)} disagrees with its "
                         f"metadata; {retrain}")
    if verify and meta.get("sha256") is None:
        raise ValueError(f"expert file {path} has no checksum (written by an older distillery); {retrain}")
    if verify and sha256_tensor(trajectory) != meta["sha256"]:
        raise ValueError(f"expert file {path}: the trajectory does not match its sha256 (corrupted or modified); "
                         f"{retrain}")
    for key, value in (expect or {}).items():
        if key == "recipe":
            if changes := recipe_changes(value, meta.get("recipe") or {}):
                raise ValueError(f"expert file {path} was not trained with expert recipe '{value}' as it is now "
                                 f"({', '.join(changes)}); {retrain}")
        elif meta.get(key) != value:
            raise ValueError(f"expert file {path} has {key}={meta.get(key)!r} but this run needs {value!r}; "
                             f"it was trained for another setting — retrain it or point to the right buffers")
    return trajectory, meta


class ExpertSampler:
    """Yields expert trajectories in a shuffled order, reshuffled after each pass.

    Every file is checked once up front (readable, checksum, `expect`, at least `min_epochs` epochs), before any
    compute; later reads are memory-mapped without re-hashing, and only the current and the next expert are open,
    so memory stays bounded by what a step reads. The next file is opened in a background thread while the caller
    works on the current one (the order is drawn on the caller's thread, so it does not depend on timing).
    `state()`/`load_state()` carry the order for checkpoints.
    """

    def __init__(self, paths: Sequence[str | Path], generator: torch.Generator, expect: dict | None = None,
                 min_epochs: int = 0):
        if not paths:
            raise ValueError("no expert trajectories given: train experts first (rule train_expert)")
        self.paths, self.generator, self.expect = list(paths), generator, expect
        self.checksums = []  # identify the experts' content, e.g. for checkpoints
        for path in self.paths:
            meta = load_expert(path, expect)[1]
            self.checksums.append(meta["sha256"])
            check_expert_epochs(meta["epochs"], min_epochs, f"expert file {path}")
        self.order: list[int] = []
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.pending: tuple[int, Future] | None = None

    def __iter__(self) -> "ExpertSampler":
        return self

    def _open_next(self) -> tuple[int, Future]:
        if not self.order:
            self.order = torch.randperm(len(self.paths), generator=self.generator).tolist()
        k = self.order.pop()
        return k, self.pool.submit(load_expert, self.paths[k], self.expect, False)

    def __next__(self) -> Tensor:
        _, future = self.pending or self._open_next()
        self.pending = self._open_next()
        return future.result()[0]

    def state(self) -> dict:
        """The order still to come, the prefetched expert first."""
        upcoming = self.order + ([self.pending[0]] if self.pending else [])
        return {"order": upcoming, "generator": self.generator.get_state()}

    def load_state(self, state: dict) -> None:
        self.order, self.pending = list(state["order"]), None
        self.generator.set_state(state["generator"])
