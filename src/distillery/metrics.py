"""How good a trained network is on labelled images (the one accuracy every stage reports) and the soft
cross-entropy both DATM's inner loss and its soft_ce evaluation use."""
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


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """−Σ_c softmax(targets)_c · log_softmax(logits)_c, averaged over the batch (DATM.py:255-260, its
    evaluation.py:56-60): the cross-entropy against the distribution of the logits `targets`."""
    return -(targets.softmax(1) * logits.log_softmax(1)).sum(1).mean()
