"""A model evaluated at a flat parameter vector, so unrolled training is a list of plain tensors."""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call


class FlatModel:
    """Wraps a module; `model(flat, x)` runs it with its parameters taken from the 1-D tensor `flat`.

    The flat layout is `named_parameters()` order, each reshaped to 1-D: the same layout as the
    expert trajectories, which is the one contract between experts and the distiller.
    """

    def __init__(self, module: nn.Module):
        self.module = module
        named = list(module.named_parameters())
        self.names = [n for n, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.numels = [p.numel() for _, p in named]
        self.num_params = sum(self.numels)

    def flatten(self) -> Tensor:
        """The module's current parameters as one flat vector (detached)."""
        return torch.cat([p.detach().reshape(-1) for p in self.module.parameters()])

    def params(self, flat: Tensor) -> dict[str, Tensor]:
        return {n: t.view(s) for n, t, s in zip(self.names, flat.split(self.numels), self.shapes)}

    def __call__(self, flat: Tensor, x: Tensor) -> Tensor:
        return functional_call(self.module, self.params(flat), (x,))
