"""A model evaluated at a flat parameter vector, so unrolled training is a list of plain tensors; and a model
built at one such vector, a trajectory's last row."""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm

from distillery.models import build_model
from distillery.runtime import to_device
from distillery.seeds import seeded


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


def frozen(net: nn.Module) -> nn.Module:
    """`net` in eval mode with its parameters excluded from autograd (gradients still flow to its inputs)."""
    return net.eval().requires_grad_(False)


def snapshot_model(trajectory: Tensor, model_name: str, num_classes: int, like: Tensor) -> nn.Module:
    """A frozen `model_name` holding the trajectory's last row (an expert's or teacher's final weights), on `like`'s
    device and dtype and sized for inputs like it. Trajectories hold parameters only, so models with BatchNorm
    running statistics are refused, and a trajectory of another parameter count too."""
    with seeded(0, "snapshot-skeleton"):  # the weights are replaced; keep the global RNG untouched
        module = build_model(model_name, like.shape[1], num_classes, like.shape[-1])
    if any(isinstance(m, _BatchNorm) and m.track_running_stats for m in module.modules()):
        raise ValueError(f"{model_name} keeps BatchNorm running statistics, which expert trajectories do not store; "
                         "use a model without them (e.g. the instance-norm ConvNet)")
    size = FlatModel(module).num_params
    if trajectory.shape[-1] != size:
        raise ValueError(f"the trajectory has {trajectory.shape[-1]} parameters but {model_name} has {size}")
    module.to(like.device, like.dtype, non_blocking=True)  # no host wait: the skeleton's values are replaced
    torch.nn.utils.vector_to_parameters(to_device(trajectory[-1], like.device, like.dtype).clone(),
                                         module.parameters())  # its own copy: never a view of a file
    return frozen(module)
