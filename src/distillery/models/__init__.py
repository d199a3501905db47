"""The model zoo: `build_model(name, channels, num_classes, size)` for every architecture the papers use.

Every head is sized from the input resolution, so any model runs on 8 to 128 px inputs. Parameter order is
module order, which is the flat layout of expert trajectories.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from .cell import CellNetwork, parse_cell_name
from .convnet import ACTS, NORMS, POOLS, ConvNet, norm_layer, parse_convnet_name
from .resnet import ResNet18
from .small import MLP, AlexNet, LeNet
from .vgg import VGG, VGG11_CFG
from .vit import ViT

_FIXED: dict[str, Callable[[int, int, int], nn.Module]] = {
    "ResNet18": lambda c, n, s: ResNet18(c, n, s),
    "ResNet18BN": lambda c, n, s: ResNet18(c, n, s, norm="batchnorm"),
    "ResNet18_AP": lambda c, n, s: ResNet18(c, n, s, avgpool=True),
    "ResNet18BN_AP": lambda c, n, s: ResNet18(c, n, s, norm="batchnorm", avgpool=True),
    "VGG11": lambda c, n, s: VGG(c, n, s, VGG11_CFG),
    "VGG11BN": lambda c, n, s: VGG(c, n, s, VGG11_CFG, norm="batchnorm"),
    "AlexNet": AlexNet,
    "LeNet": LeNet,
    "MLP": MLP,
    "ViT": ViT,
}

_CONVNET_NAMES = (
    ("ConvNet",)
    + tuple(f"ConvNetD{d}" for d in range(1, 9))
    + tuple(f"ConvNetW{w}" for w in (16, 32, 64, 128, 256, 512, 1024))
    + tuple(f"ConvNet{code}" for code in ("NN", "BN", "LN", "IN", "GN", "AS", "AR", "AL", "NP", "MP", "AP", "KIP"))
)

# The common names. ConvNet names are parsed, so combinations such as 'ConvNetD4BN' or 'ConvNetW64' work too;
# so are NAS-Bench-201 cells, 'NB201_' + 6 operation digits (distillery.models.cell).
MODEL_NAMES: tuple[str, ...] = _CONVNET_NAMES + tuple(_FIXED)


def is_model_name(name: str) -> bool:
    """True if `build_model` accepts `name`."""
    return name in _FIXED or parse_convnet_name(name) is not None or parse_cell_name(name) is not None


def build_model(name: str, channels: int, num_classes: int, size: int) -> nn.Module:
    """A freshly initialised model (default PyTorch init, global RNG) for `channels` x `size` x `size` inputs."""
    if name in _FIXED:
        return _FIXED[name](channels, num_classes, size)
    ops = parse_cell_name(name)
    if ops is not None:
        return CellNetwork(channels, num_classes, size, ops)
    kwargs = parse_convnet_name(name)
    if kwargs is None:
        raise ValueError(f"unknown architecture '{name}'; choose one of: {', '.join(MODEL_NAMES)} "
                         "(ConvNet names combine D<depth 1-8>, W<width 16-1024>, NN/BN/LN/IN/GN, AS/AR/AL, NP/MP/AP; "
                         "NAS-Bench-201 cells are NB201_ and 6 digits 0-4)")
    return ConvNet(channels, num_classes, size, **kwargs)


__all__ = ["ACTS", "NORMS", "POOLS", "MODEL_NAMES", "AlexNet", "CellNetwork", "ConvNet", "LeNet", "MLP", "ResNet18",
           "VGG", "ViT", "build_model", "is_model_name", "norm_layer"]
