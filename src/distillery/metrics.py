"""How good a trained network is on labelled images: the one accuracy every stage reports (experts, evaluation)."""
from __future__ import annotations

import torch
from torch import Tensor, nn


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch: int = 1024) -> float:
    """Top-1 accuracy of `model` in eval mode, without augmentation."""
    was_training = model.training
    model.eval()
    correct = sum((model(images[i:i + batch]).argmax(1) == labels[i:i + batch]).sum()
                  for i in range(0, len(images), batch))
    model.train(was_training)
    return int(correct) / len(images)
