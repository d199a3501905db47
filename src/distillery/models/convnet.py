"""The ConvNet backbone of the MTT lineage: `depth` blocks of conv3x3 -> norm -> act -> 2x2 pool, then one Linear.

"instancenorm" is GroupNorm(C, C, affine=True): it keeps no running statistics, so the network is a pure
function of its parameters, which is what unrolled trajectory matching needs.
"""
from __future__ import annotations

import re

from torch import nn

from .base import FeatureClassifier

NORMS = ("none", "batchnorm", "layernorm", "instancenorm", "groupnorm")
ACTS = ("sigmoid", "relu", "leakyrelu")
POOLS = ("none", "maxpool", "avgpool")


def _check(kind: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {kind} '{value}'; choose one of: {', '.join(allowed)}")


def norm_layer(norm: str, channels: int, side: int | None = None) -> nn.Module:
    """A 2-D normalisation over `channels` feature maps of `side` x `side` (only layernorm needs the side)."""
    _check("norm", norm, NORMS)
    if norm == "batchnorm":
        return nn.BatchNorm2d(channels)
    if norm == "layernorm":  # as the reference: LayerNorm over [C, H, W] with a per-element affine
        if side is None:
            raise ValueError("layernorm needs the feature map side")
        return nn.LayerNorm([channels, side, side], elementwise_affine=True)
    if norm == "instancenorm":
        return nn.GroupNorm(channels, channels, affine=True)
    if norm == "groupnorm":
        return nn.GroupNorm(4, channels, affine=True)
    return nn.Identity()


def act_layer(act: str) -> nn.Module:
    _check("activation", act, ACTS)
    if act == "sigmoid":
        return nn.Sigmoid()
    if act == "leakyrelu":
        return nn.LeakyReLU(0.01)
    return nn.ReLU()


class ConvNet(FeatureClassifier):
    """ConvNet(width, depth, norm, act, pool) whose linear head is sized from the input resolution `size`.

    A 2x2 pool that would act on a 1x1 map is skipped, so deep variants still build on small images.
    A 1-channel 28 px input (MNIST, Fashion-MNIST) gets padding 3 in the first conv, so its maps are 32/16/8
    and the classifier is the reference's (networks.py `_make_layers`: `padding=3 if channel == 1 and d == 0`,
    with im_size 28 read as 32). The reference pads any 1-channel input by 3 but sizes its head as if padded by 1,
    so at other sizes its network runs only where the two agree after the pools (8, 16, 24 px run; 12, 20 px fail);
    ours keeps padding 1 at every other size, so on 8 px digits it is not the network the reference's code would
    build there (a dataset no paper uses; docs/parity.md).
    """

    def __init__(self, channels: int, num_classes: int, size: int, width: int = 128, depth: int = 3,
                 norm: str = "instancenorm", act: str = "relu", pool: str = "avgpool"):
        super().__init__()
        _check("pooling", pool, POOLS)
        if depth < 1 or width < 1:
            raise ValueError(f"ConvNet needs depth >= 1 and width >= 1, got depth={depth}, width={width}")
        layers: list[nn.Module] = []
        in_ch, side = channels, size
        for d in range(depth):
            pad = 3 if d == 0 and channels == 1 and size == 28 else 1
            side += 2 * pad - 2
            layers += [nn.Conv2d(in_ch, width, kernel_size=3, padding=pad), norm_layer(norm, width, side),
                       act_layer(act)]
            if pool != "none" and side > 1:
                layers.append(nn.MaxPool2d(2, 2) if pool == "maxpool" else nn.AvgPool2d(2, 2))
                side //= 2
            in_ch = width
        self.features = nn.Sequential(*layers)
        self.num_features = width * side * side
        self.classifier = nn.Linear(self.num_features, num_classes)


# Name grammar: "ConvNet" followed by any of these codes, at most one per category (e.g. ConvNetD4, ConvNetW64BN).
_CODES = {
    "NN": ("norm", "none"), "BN": ("norm", "batchnorm"), "LN": ("norm", "layernorm"),
    "IN": ("norm", "instancenorm"), "GN": ("norm", "groupnorm"),
    "AS": ("act", "sigmoid"), "AR": ("act", "relu"), "AL": ("act", "leakyrelu"),
    "NP": ("pool", "none"), "MP": ("pool", "maxpool"), "AP": ("pool", "avgpool"),
}


def name_codes(kind: str) -> dict[str, str]:
    """{value: code} of one category of the name grammar (norm, act or pool), in the grammar's order."""
    return {value: code for code, (category, value) in _CODES.items() if category == kind}


_TOKEN = re.compile(r"D\d+|W\d+|KIP|[A-Z]{2}")
DEPTHS = range(1, 9)
WIDTHS = range(16, 1025)


def parse_convnet_name(name: str) -> dict[str, int | str] | None:
    """ConvNet keyword arguments encoded by a name such as 'ConvNetD5' or 'ConvNetAL', or None if it is not one."""
    if not name.startswith("ConvNet"):
        return None
    rest, kwargs = name[len("ConvNet"):], {}
    tokens = _TOKEN.findall(rest)
    if "".join(tokens) != rest:
        return None
    for tok in tokens:
        if tok == "KIP":
            key_values = [("width", 1024), ("norm", "none")]
        elif tok[0] in "DW" and tok[1:].isdigit():
            key, value = ("depth", int(tok[1:])) if tok[0] == "D" else ("width", int(tok[1:]))
            if value not in (DEPTHS if key == "depth" else WIDTHS):
                return None
            key_values = [(key, value)]
        elif tok in _CODES:
            key_values = [_CODES[tok]]
        else:
            return None
        for key, value in key_values:
            if key in kwargs:
                return None
            kwargs[key] = value
    return kwargs
