"""Checkpoints for long jobs: the state is saved atomically every few steps and when a stop signal arrives (SLURM's
SIGTERM, Ctrl-C's SIGINT, a closed terminal's SIGHUP), and loaded on restart when it belongs to the same job, so a
stopped job resumes instead of starting over. What a loop saves is declared once, in its LoopState."""
from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from distillery.io import beside, save_torch

log = logging.getLogger("distillery")


# The signals that stop a job cleanly (a checkpoint first, where its loop has one): SLURM's preemption and time limit,
# `kill` and the watchdog on Snakemake (SIGTERM), Ctrl-C (SIGINT), a closed terminal (SIGHUP).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Preempted(RuntimeError):
    """A stop signal arrived; the state was checkpointed (when a checkpoint path was given) and the job stopped."""


def on_stop_signals(handler: Callable) -> dict:
    """Install `handler` for each of STOP_SIGNALS in the main thread (elsewhere: nothing); returns the previous
    handlers for `restore_signals`. SIGINT and SIGHUP stay ignored where the process was started ignoring them
    (a background job's SIGINT, SIGHUP under nohup): handling them there would stop what the user meant to keep."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS
            if sig == signal.SIGTERM or signal.getsignal(sig) is not signal.SIG_IGN}


def restore_signals(previous: dict) -> None:
    """Put back the handlers `on_stop_signals` replaced."""
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def checkpoint_path(output: str | Path) -> Path:
    """Where the job writing `output` keeps its checkpoint: a hidden file beside it, removed once it is written."""
    return beside(output, "ckpt")


class Checkpoint:
    """Saves `state()` to `path` every `every` steps and at the first poll after a stop signal (then raises Preempted).

    `identity` (settings, inputs, seed) is stored with the state; a checkpoint of another identity, or one that
    cannot be read, is discarded with a log line. Use as a context manager: it handles STOP_SIGNALS (main thread
    only) and restores the previous handlers. `path` None: no checkpoints, a stop signal still stops cleanly.
    """

    def __init__(self, path: str | Path | None, every: int, identity: dict):
        if every < 1:
            raise ValueError(f"checkpoint every {every} steps: must be at least 1")
        self.path, self.every, self.identity = (Path(path) if path else None), every, identity
        self.terminated, self.signal = False, "SIGTERM"
        self.previous: dict = {}

    def __enter__(self) -> "Checkpoint":
        self.previous = on_stop_signals(self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        restore_signals(self.previous)
        self.previous = {}

    def _on_signal(self, signum, frame) -> None:
        # only flags: the next step or poll saves (no I/O or logging inside a handler)
        self.terminated, self.signal = True, signal.Signals(signum).name

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
        """Call after completing `step` (1-based): saves every `every` steps, and after a stop signal (see poll)."""
        if self.path is not None and step % self.every == 0 and not self.terminated:
            save_torch({"identity": self.identity, "state": state()}, self.path)
        self.poll(state)

    def poll(self, state: Callable[[], dict]) -> None:
        """If a stop signal arrived: save `state()` (tensors and plain data only) and raise Preempted."""
        if not self.terminated:
            return
        log.info("%s: saving a checkpoint and stopping", self.signal)
        if self.path is None:
            raise Preempted(f"stopped by {self.signal} (no checkpoint configured); run the same snakemake command "
                            f"again to redo the job")
        save_torch({"identity": self.identity, "state": state()}, self.path)
        raise Preempted(f"stopped by {self.signal}; checkpoint {self.path} saved; run the same snakemake command "
                        f"again to resume from it")

    def clear(self) -> None:
        """Remove the checkpoint once the job's output is written."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)


class LoopState:
    """A loop's whole resumable state, declared once: a checkpoint saves exactly `capture()` and a resume puts it back.

    `kept` are restored into themselves: tensors the loop updates in place (learnable ones too), optimizers, modules,
    random generators, objects with state()/load_state() (batch orders, expert samplers), lists of these, or None.
    `values` are what the loop rebinds (counters, its history, tensors it replaces): the loop reads and writes them as
    attributes (`state.step`), and their tensors go to the CPU and come back on `device`. A capture is a copy: it never
    aliases the live tensors. A new learnable tensor and its optimizer are two more `kept` entries, nothing else.
    """

    def __init__(self, device: torch.device | str, kept: dict[str, object], values: dict[str, object]):
        names = [*kept, *values]
        clashes = sorted({n for n in names if names.count(n) > 1 or n.startswith("_") or hasattr(LoopState, n)})
        if clashes:
            raise ValueError(f"loop state entries {clashes}: a name is declared twice, starts with '_' or is a "
                             f"LoopState method; rename the entry")
        self._device, self._kept, self._values = torch.device(device), dict(kept), list(values)
        self.__dict__.update(values)

    def names(self) -> list[str]:
        """Every declared entry, kept objects first."""
        return [*self._kept, *self._values]

    def check(self) -> None:
        """Raise a TypeError naming the first kept entry that cannot be saved and restored."""
        for name, obj in self._kept.items():
            if not _can_keep(obj):
                raise TypeError(f"loop state entry '{name}': a {type(obj).__name__} cannot be checkpointed; keep a "
                                f"tensor, optimizer, module, torch.Generator, an object with state() and load_state() "
                                f"(e.g. ExpertSampler), or a list of these")

    def capture(self) -> dict:
        """Every entry as CPU tensors and plain data, copied (what Checkpoint saves)."""
        return {**{name: _snapshot(obj) for name, obj in self._kept.items()},
                **{name: _on_cpu(getattr(self, name)) for name in self._values}}

    def restore(self, saved: dict) -> None:
        """Put a capture back: kept objects in place, values rebound (their tensors on `device`)."""
        for name, obj in self._kept.items():
            _put_back(obj, saved[name], name)
        for name in self._values:
            setattr(self, name, _on_device(saved[name], self._device))

    def resume(self, checkpoint: Checkpoint | None) -> bool:
        """Restore `checkpoint`'s saved state when it is this loop's (the same entries); True if it was restored.
        With a checkpoint, every kept entry is checked first, before any compute."""
        if checkpoint is None:
            return False
        self.check()
        saved = checkpoint.resume()
        if saved is None:
            return False
        if sorted(saved) != sorted(self.names()):
            log.warning("checkpoint %s holds the entries %s, not this loop's %s (an older distillery); starting over",
                        checkpoint.path, sorted(saved), sorted(self.names()))
            return False
        self.restore(saved)
        return True


def _stateful(obj: object) -> bool:
    return callable(getattr(obj, "state", None)) and callable(getattr(obj, "load_state", None))


def _can_keep(obj: object) -> bool:
    if isinstance(obj, (list, tuple)):
        return all(_can_keep(o) for o in obj)
    return obj is None or isinstance(obj, (torch.Tensor, torch.optim.Optimizer, nn.Module, torch.Generator)) or \
        _stateful(obj)


def _on_cpu(tree: object) -> object:
    """A copy of `tree` (dicts, lists, tuples, tensors, plain values) with every tensor detached and on the CPU."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().to("cpu", copy=True)
    if isinstance(tree, dict):
        return {key: _on_cpu(value) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_on_cpu(value) for value in tree)
    return tree


def _on_device(tree: object, device: torch.device) -> object:
    """`tree` with every tensor moved to `device`."""
    if isinstance(tree, torch.Tensor):
        return tree.to(device)
    if isinstance(tree, dict):
        return {key: _on_device(value, device) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_on_device(value, device) for value in tree)
    return tree


def _snapshot(obj: object) -> object:
    """The saved form of one kept object."""
    if isinstance(obj, torch.Generator):
        return obj.get_state()
    if isinstance(obj, (torch.optim.Optimizer, nn.Module)):
        return _on_cpu(obj.state_dict())
    if isinstance(obj, (list, tuple)):
        return [_snapshot(o) for o in obj]
    if obj is None or isinstance(obj, torch.Tensor):
        return _on_cpu(obj)
    return _on_cpu(obj.state())


def _put_back(obj: object, saved: object, name: str) -> None:
    """Restore one kept object from its saved form, in place."""
    if (obj is None) != (saved is None) or isinstance(obj, (list, tuple)) and len(obj) != len(saved):
        raise ValueError(f"loop state entry '{name}': the checkpoint holds {type(saved).__name__} where this run has "
                         f"{type(obj).__name__}; delete the checkpoint to start over")
    if isinstance(obj, torch.Generator):
        obj.set_state(saved)
    elif isinstance(obj, (torch.optim.Optimizer, nn.Module)):
        obj.load_state_dict(saved)
    elif isinstance(obj, (list, tuple)):
        for item, value in zip(obj, saved):
            _put_back(item, value, name)
    elif isinstance(obj, torch.Tensor):
        with torch.no_grad():
            obj.copy_(saved)
    elif obj is not None:
        obj.load_state(saved)
