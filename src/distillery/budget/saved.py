"""Counting what autograd saves for backward, and the FLOPs of a call: the measurements the memory and time
models are calibrated from (budget/calibrate.py) and checked against (tests, benchmarks/memory.py).

Saved-for-backward bytes are counted exactly, one count per storage while any saved reference to it is alive,
through torch.autograd.graph.saved_tensors_hooks; they depend on the shapes, not on the device, so they can be
counted on the `meta` device (shapes only, no arithmetic) at full size in milliseconds. Storages are keyed by
their StorageImpl (`_cdata`), which, unlike `data_ptr()`, also tells meta storages apart.
"""
from __future__ import annotations

import weakref
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


class SavedBytes:
    """Live bytes of the storages autograd has saved for backward, and their peak.

    A saved tensor is held detached: holding it with its grad_fn would make a reference cycle (node → saved
    tensor → node) that keeps a graph which is never back-propagated alive, which an unhooked run frees (APM's
    retained student graphs); autograd restores the history on unpack, so gradients are unchanged.
    """

    def __init__(self):
        self.live: dict[int, list[int]] = {}  # storage -> [saved references, bytes]
        self.current = self.peak = 0

    def pack(self, tensor: torch.Tensor):
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self.live:
            self.live[key][0] += 1
        else:
            self.live[key] = [1, storage.nbytes()]
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
        held = _Held(tensor.detach())
        weakref.finalize(held, self._release, key)
        return held

    @staticmethod
    def unpack(held: "_Held") -> torch.Tensor:
        return held.tensor

    def _release(self, key: int) -> None:
        entry = self.live[key]
        entry[0] -= 1
        if entry[0] == 0:
            self.current -= entry[1]
            del self.live[key]


class _Held:
    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor


def peak_saved(fn: Callable[[], object]) -> int:
    """Peak bytes autograd holds saved for backward while `fn` runs."""
    tracker = SavedBytes()
    with torch.autograd.graph.saved_tensors_hooks(tracker.pack, tracker.unpack):
        fn()
    return tracker.peak


def measure(fn: Callable[[], object]) -> tuple[int, int]:
    """(peak saved-for-backward bytes, FLOPs of matmuls and convolutions) of one call of `fn`."""
    flops = FlopCounterMode(display=False)
    with flops:
        peak = peak_saved(fn)
    return peak, flops.get_total_flops()


def cuda_peak(fn: Callable[[], object]) -> int:
    """Bytes of CUDA memory allocated at the peak of `fn` above what was allocated before it (the GPU check of
    the memory model: compare with budget.memory's estimate of the same job before its margin)."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base
