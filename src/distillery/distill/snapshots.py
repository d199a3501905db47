"""The synthetic set kept every few iterations of a distillation (its snapshots), so a selection rule can pick one
afterwards (report/selection.py): `validation` by a held-out split, `test` as the papers did. A snapshot at
iteration k is the set the run would have returned had it stopped after k iterations (k = 0: the initial set).

Snapshots are staged in a hidden folder beside the output while the run goes on, and moved to their declared paths
when it ends: a preempted run keeps the ones it wrote (Snakemake removes a failed job's declared outputs, not the
folder), and the resumed run, which restarts from a checkpoint taken after them, writes the rest; a run that starts
over clears the folder first. So a resumed run's snapshots equal an uninterrupted run's, bit for bit on the CPU."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Sequence

from torch import Tensor

from distillery.synset import save_synset


def snapshot_iterations(every: int, iterations: int) -> list[int]:
    """The iterations a run of `iterations` keeps a snapshot at: 0, every, 2·every, … below `iterations` (the final
    set, at `iterations`, is the run's own output)."""
    if every < 1:
        raise ValueError(f"snapshot_every={every} must be at least 1 (or null for no snapshots)")
    return list(range(0, iterations, every))


class Snapshots:
    """Writes the snapshots of one run to `paths` (one per iteration of snapshot_iterations(every, iterations), in
    order), each a synthetic-set file (synset.save_synset) whose metadata is `meta` plus its `iteration`; they are
    staged in `staging` (beside the run's output: io.beside(output, "snapshots")) until publish()."""

    def __init__(self, paths: Sequence[str | Path], every: int, iterations: int, meta: dict, staging: str | Path):
        self.iterations = snapshot_iterations(every, iterations)
        if len(paths) != len(self.iterations):
            raise ValueError(f"snapshot_every {every} over {iterations} iterations keeps {len(self.iterations)} "
                             f"snapshots (iterations {self.iterations[:3]}…), but {len(paths)} paths were given")
        self.paths = dict(zip(self.iterations, map(Path, paths)))
        self.every, self.meta = every, meta
        self.staging = Path(staging)

    def _staged(self, iteration: int) -> Path:
        return self.staging / f"it{iteration}.pt"

    def start(self, resumed: bool) -> None:
        """Before the loop: a run that starts over clears what an earlier run staged."""
        if not resumed:
            shutil.rmtree(self.staging, ignore_errors=True)

    def due(self, iteration: int) -> bool:
        return iteration in self.paths

    def save(self, iteration: int, images: Tensor, labels: Tensor, lr: float | None,
             soft_labels: Tensor | None = None) -> None:
        """Stage the set after `iteration` iterations (CPU copies; atomically)."""
        self.staging.mkdir(parents=True, exist_ok=True)
        soft = None if soft_labels is None else soft_labels.detach().cpu()
        save_synset(self._staged(iteration), images.detach().cpu(), labels.cpu(), lr, soft,
                    {**self.meta, "iteration": iteration, "snapshot_every": self.every})

    def publish(self) -> None:
        """After the run: move every staged snapshot to its path; a missing one is an error naming the fix."""
        missing = [it for it in self.paths if not self._staged(it).is_file()]
        if missing:
            raise ValueError(f"the snapshots at iterations {missing} were not staged in {self.staging} (removed "
                             f"while the run was preempted?); delete the checkpoint beside the output and run again")
        for iteration, path in self.paths.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._staged(iteration), path)
        shutil.rmtree(self.staging, ignore_errors=True)
