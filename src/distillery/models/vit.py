"""A small Vision Transformer for APM's cross-architecture table: patches of size // 8 pixels (an 8x8 grid; the
last size mod patch rows and columns are left out), a class token, learned positions, pre-norm encoder blocks
without dropout; the class token feeds the head."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import FeatureClassifier


class PatchEncoder(nn.Module):
    """Images -> the class token's representation after `depth` encoder blocks and a final LayerNorm."""

    def __init__(self, channels: int, size: int, dim: int, depth: int, heads: int, mlp: int):
        super().__init__()
        patch = max(1, size // 8)
        self.patches = nn.Conv2d(channels, dim, kernel_size=patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.positions = nn.Parameter(torch.randn(1, (size // patch) ** 2 + 1, dim) * 0.02)
        block = nn.TransformerEncoderLayer(dim, heads, mlp, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(block, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.patches(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(len(x), -1, -1), tokens], dim=1) + self.positions
        return self.norm(self.blocks(tokens)[:, 0])


class ViT(FeatureClassifier):
    def __init__(self, channels: int, num_classes: int, size: int, dim: int = 256, depth: int = 6, heads: int = 8,
                 mlp: int = 512):
        super().__init__()
        self.features = PatchEncoder(channels, size, dim, depth, heads, mlp)
        self.classifier = nn.Linear(dim, num_classes)
