"""CIFAR-style ResNet18 (3x3 stem, no max-pool) with instance norm by default, as in the MTT lineage.

The `_AP` variants downsample with stride-1 convs followed by 2x2 average pooling instead of stride-2 convs.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .convnet import norm_layer

RESNET_NORMS = ("instancenorm", "batchnorm")


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection; `avgpool` moves the downsampling into 2x2 average pools."""

    def __init__(self, in_planes: int, planes: int, stride: int, norm: str, avgpool: bool = False):
        super().__init__()
        self.pool = avgpool and stride != 1
        conv_stride = 1 if avgpool else stride
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=conv_stride, padding=1, bias=False)
        self.bn1 = norm_layer(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = norm_layer(norm, planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            proj: list[nn.Module] = [nn.Conv2d(in_planes, planes, 1, stride=conv_stride, bias=False)]
            if self.pool:
                proj.append(nn.AvgPool2d(2, 2))
            self.shortcut = nn.Sequential(*proj, norm_layer(norm, planes))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        if self.pool:
            out = F.avg_pool2d(out, 2, 2)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet18 for small images; the head is global average pooling + Linear(512) (or, for `_AP`, a flatten).

    Global pooling equals the reference's avg_pool(4) at 32 px and works at any resolution. The `_AP` head
    flattens the final map, as the reference does, and is sized from the input resolution.
    """

    def __init__(self, channels: int, num_classes: int, size: int, norm: str = "instancenorm",
                 avgpool: bool = False):
        super().__init__()
        if norm not in RESNET_NORMS:
            raise ValueError(f"unknown ResNet norm '{norm}'; choose one of: {', '.join(RESNET_NORMS)}")
        self.avgpool = avgpool
        self.conv1 = nn.Conv2d(channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = norm_layer(norm, 64)
        in_planes, side = 64, size
        stages = []
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            if avgpool and side == 1:  # a 2x2 pool cannot act on a 1x1 map (only reachable below 8 px)
                stride = 1
            stages.append(nn.Sequential(BasicBlock(in_planes, planes, stride, norm, avgpool),
                                        BasicBlock(planes, planes, 1, norm, avgpool)))
            in_planes = planes
            if stride == 2:
                side = side // 2 if avgpool else (side + 1) // 2
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.num_features = 512 * side * side if avgpool else 512
        self.classifier = nn.Linear(self.num_features, num_classes)

    def embed(self, x: Tensor) -> Tensor:
        """The features fed to the classifier, [B, num_features]."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        if not self.avgpool:
            out = F.adaptive_avg_pool2d(out, 1)
        return torch.flatten(out, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.embed(x))
