"""The shape every model shares: `features` then one `classifier`, with `embed` exposing the features."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class FeatureClassifier(nn.Module):
    """Subclasses set `self.features` (a module) and `self.classifier`; `embed` is the flattened features."""

    features: nn.Module
    classifier: nn.Module

    def embed(self, x: Tensor) -> Tensor:
        """The flattened features fed to the classifier, [B, num_features] (herding uses them)."""
        return torch.flatten(self.features(x), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.embed(x))
