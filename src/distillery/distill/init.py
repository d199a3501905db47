"""Initial synthetic images: IPC real images per class, or Gaussian noise."""
from __future__ import annotations

import torch
from torch import Tensor

from distillery.needs import check_class_size


def init_synthetic(images: Tensor, labels: Tensor, num_classes: int, ipc: int, mode: str,
                   generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Return (images [C*ipc, ...], labels [0]*ipc + [1]*ipc + ...); `real` draws without replacement per class."""
    syn_labels = torch.arange(num_classes).repeat_interleave(ipc)
    if mode == "noise":
        noise = torch.randn((num_classes * ipc, *images.shape[1:]), generator=generator)
        return noise.to(images.device), syn_labels.to(images.device)
    if mode != "real":
        raise ValueError(f"unknown init '{mode}'; choose real or noise")
    labels_cpu = labels.cpu()
    picks = []
    for c in range(num_classes):
        idx = (labels_cpu == c).nonzero().squeeze(1)
        check_class_size(ipc, len(idx), f"class {c}")
        picks.append(idx[torch.randperm(len(idx), generator=generator)[:ipc]])
    chosen = torch.cat(picks).to(images.device)
    return images[chosen].clone(), syn_labels.to(images.device)
