"""The synthetic set's store, the twin of experts/store.py: what a distillation returns (DistillResult), how it
fails (DistillationError), and the one checksummed file it is written to and read from."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from distillery.io import regenerate, save_torch, sha256_tensor


class DistillationError(RuntimeError):
    """The run diverged (non-finite loss, non-positive learning rate) and was stopped at `iteration`."""

    def __init__(self, message: str, iteration: int, loss: float, lr: float):
        super().__init__(message)
        self.iteration, self.loss, self.lr = iteration, loss, lr


@dataclass
class DistillResult:
    images: Tensor
    labels: Tensor
    lr: float
    history: list[dict] = field(default_factory=list)  # per iteration: iteration, loss, lr, start_epoch,
    #                                                     match_step, seconds
    soft_labels: Tensor | None = None  # APM: a teacher's logits on the images; DATM: the learned logits


def save_synset(path: str | Path, images: Tensor, labels: Tensor, lr: float | None, soft_labels: Tensor | None,
                meta: dict) -> None:
    """Write a synthetic set (CPU tensors) atomically, its tensors' sha256 added to `meta`."""
    meta = {**meta, "sha256": sha256_tensor(images, labels, soft_labels)}
    save_torch({"images": images, "labels": labels, "lr": lr, "soft_labels": soft_labels, "meta": meta}, path)


def load_synset(path: str | Path, expect: dict | None = None, verify: bool = True) -> dict:
    """A synthetic set written by run_distillation: images, labels, learned lr (None for coresets), soft labels
    (teacher logits, APM; None otherwise), meta — its checksum verified and `expect` meta fields matched.
    `verify=False` memory-maps the tensors and skips the checksum (to read the metadata)."""
    rerun = regenerate(path, "distill")
    try:
        synset = torch.load(path, weights_only=True, map_location="cpu", mmap=not verify)
        images, labels, meta = synset["images"], synset["labels"], synset["meta"]
    except Exception as err:
        raise ValueError(f"synthetic set {path} is unreadable ({err}); {rerun}") from err
    if verify and meta.get("sha256") != sha256_tensor(images, labels, synset.get("soft_labels")):
        raise ValueError(f"synthetic set {path} does not match its sha256 (corrupted, modified or written by an "
                         f"older distillery); {rerun}")
    for key, value in (expect or {}).items():
        if meta.get(key) != value:
            raise ValueError(f"synthetic set {path} has {key}={meta.get(key)!r} but this run needs {value!r}; {rerun}")
    return synset
