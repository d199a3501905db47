"""Checkpoints for long jobs: the state is saved atomically every few steps and when SLURM's SIGTERM arrives,
and loaded on restart when it belongs to the same job, so a preempted job resumes instead of starting over."""
from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Callable

import torch

from distillery.io import beside, save_torch

log = logging.getLogger("distillery")


class Preempted(RuntimeError):
    """SIGTERM arrived; the state was checkpointed (when a checkpoint path was given) and the job stopped."""


def checkpoint_path(output: str | Path) -> Path:
    """Where the job writing `output` keeps its checkpoint: a hidden file beside it, removed once it is written."""
    return beside(output, "ckpt")


class Checkpoint:
    """Saves `state()` to `path` every `every` steps and at the first poll after SIGTERM (then raises Preempted).

    `identity` (settings, inputs, seed) is stored with the state; a checkpoint of another identity, or one that
    cannot be read, is discarded with a log line. Use as a context manager: it installs the SIGTERM handler
    (main thread only) and restores the previous one. `path` None: no checkpoints, SIGTERM still stops cleanly.
    """

    def __init__(self, path: str | Path | None, every: int, identity: dict):
        if every < 1:
            raise ValueError(f"checkpoint every {every} steps: must be at least 1")
        self.path, self.every, self.identity = (Path(path) if path else None), every, identity
        self.terminated = False
        self.previous = None

    def __enter__(self) -> "Checkpoint":
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
            self.previous = None

    def _on_sigterm(self, signum, frame) -> None:
        self.terminated = True  # only a flag: the next step or poll saves (no I/O or logging inside a handler)

    def resume(self) -> dict | None:
        """The saved state of this job, or None (no checkpoint, another job's, or unreadable)."""
        if self.path is None:
            return None
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):  # a save cut short by SIGKILL
            stale.unlink(missing_ok=True)
        if not self.path.is_file():
            return None
        try:
            blob = torch.load(self.path, map_location="cpu", weights_only=True)
            identity, state = blob["identity"], blob["state"]
        except Exception as err:
            log.warning("checkpoint %s is unreadable (%s); starting over", self.path, err)
            return None
        if identity != self.identity:
            log.warning("checkpoint %s belongs to other settings or inputs; starting over", self.path)
            return None
        log.info("resuming from checkpoint %s at step %s", self.path, state.get("step"))
        return state

    def step(self, step: int, state: Callable[[], dict]) -> None:
        """Call after completing `step` (1-based): saves every `every` steps, and after SIGTERM (see poll)."""
        if self.path is not None and step % self.every == 0 and not self.terminated:
            save_torch({"identity": self.identity, "state": state()}, self.path)
        self.poll(state)

    def poll(self, state: Callable[[], dict]) -> None:
        """If SIGTERM arrived: save `state()` (tensors and plain data only) and raise Preempted."""
        if not self.terminated:
            return
        log.info("SIGTERM: saving a checkpoint and stopping")
        if self.path is not None:
            save_torch({"identity": self.identity, "state": state()}, self.path)
        if self.path is None:
            raise Preempted("stopped by SIGTERM (no checkpoint configured); run the same snakemake command again to "
                            "redo the job")
        raise Preempted(f"stopped by SIGTERM; checkpoint {self.path} saved; run the same snakemake command again to "
                        f"resume from it")

    def clear(self) -> None:
        """Remove the checkpoint once the job's output is written."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)
