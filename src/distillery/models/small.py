"""AlexNet (CIFAR variant), LeNet and MLP of the MTT lineage, with heads sized from the input resolution."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import FeatureClassifier


def _conv_out(side: int, kernel: int, padding: int) -> int:
    return side + 2 * padding - kernel + 1


class _Side:
    """Builds 2x2 max pools while tracking the map size, skipping pools that would act on a 1x1 map."""

    def __init__(self, side: int):
        self.side = side

    def conv(self, kernel: int, padding: int) -> None:
        self.side = _conv_out(self.side, kernel, padding)

    def pool(self) -> list[nn.Module]:
        if self.side <= 1:
            return []
        self.side //= 2
        return [nn.MaxPool2d(2, 2)]


class AlexNet(FeatureClassifier):
    """The no-norm CIFAR AlexNet: conv5 128, conv5 192, conv3 256/192/192, three max pools, one Linear.

    A 1-channel input gets padding 4 in the first conv (28 px -> 32 px), as in the reference.
    """

    def __init__(self, channels: int, num_classes: int, size: int):
        super().__init__()
        track = _Side(size)
        pad0 = 4 if channels == 1 else 2
        layers: list[nn.Module] = [nn.Conv2d(channels, 128, 5, padding=pad0), nn.ReLU()]
        track.conv(5, pad0)
        layers += track.pool()
        layers += [nn.Conv2d(128, 192, 5, padding=2), nn.ReLU()]
        track.conv(5, 2)
        layers += track.pool()
        layers += [nn.Conv2d(192, 256, 3, padding=1), nn.ReLU(),
                   nn.Conv2d(256, 192, 3, padding=1), nn.ReLU(),
                   nn.Conv2d(192, 192, 3, padding=1), nn.ReLU()]
        layers += track.pool()
        self.features = nn.Sequential(*layers)
        self.num_features = 192 * track.side * track.side
        self.classifier = nn.Linear(self.num_features, num_classes)


class LeNet(FeatureClassifier):
    """LeNet: conv5 6 -> pool -> conv5 16 -> pool -> 120 -> 84 -> classes, matching the reference at 28/32 px.

    A 1-channel input gets padding 2 in the first conv (as in the reference). The second conv gets padding 2
    only when its input is smaller than 10 px, so the net still builds on images down to 8 px.
    """

    def __init__(self, channels: int, num_classes: int, size: int):
        super().__init__()
        track = _Side(size)
        pad0 = 2 if channels == 1 else 0
        layers: list[nn.Module] = [nn.Conv2d(channels, 6, 5, padding=pad0), nn.ReLU()]
        track.conv(5, pad0)
        layers += track.pool()
        pad1 = 2 if track.side < 10 else 0
        layers += [nn.Conv2d(6, 16, 5, padding=pad1), nn.ReLU()]
        track.conv(5, pad1)
        layers += track.pool()
        self.features = nn.Sequential(*layers)
        self.num_features = 16 * track.side * track.side
        self.classifier = nn.Sequential(nn.Linear(self.num_features, 120), nn.ReLU(),
                                        nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes))


class MLP(nn.Module):
    """Flatten C*H*W -> 128 -> ReLU -> 128 -> ReLU -> classes."""

    def __init__(self, channels: int, num_classes: int, size: int):
        super().__init__()
        self.num_features = channels * size * size
        self.classifier = nn.Sequential(nn.Linear(self.num_features, 128), nn.ReLU(),
                                        nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, num_classes))

    def embed(self, x: Tensor) -> Tensor:
        """The flattened input, [B, C*H*W]."""
        return torch.flatten(x, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.embed(x))
