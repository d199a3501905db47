"""NAS-Bench-201 networks (Dong & Yang, ICLR 2020): a fixed skeleton of 3 stages of N cells, each cell a 4-node
DAG whose 6 edges carry one of 5 operations; APM Table 3 ranks sampled cells trained on distilled data.

Skeleton: conv3x3 stem (C = 16) + BN, N = 5 cells, a residual reduction block (stride 2, 2C), N cells, a
reduction (4C), N cells, BN + ReLU, global average pooling, one Linear. Node j of a cell is the sum of
op(j <- i)(node i) over i < j; node 3 is the output. The global pooling makes the head independent of the
input resolution.

Arch strings are the benchmark's, e.g. "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|
nor_conv_3x3~1|skip_connect~2|" (edges 1<-0 | 2<-0, 2<-1 | 3<-0, 3<-1, 3<-2). As model names (file names,
wildcards) a cell is "NB201_" + one digit per edge in that order, the digit indexing OPS.
"""
from __future__ import annotations

import re

from torch import Tensor, nn

from .base import FeatureClassifier

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))  # (to, from), in arch-string order
PREFIX = "NB201_"
_NAME = re.compile(r"NB201_([0-4]{6})")
_ARCH = re.compile(r"\|([a-z0-9_]+)~(\d)")


def parse_arch(arch: str) -> tuple[str, ...]:
    """The 6 edge operations of a NAS-Bench-201 arch string, in EDGES order; ValueError naming what is wrong."""
    nodes = arch.strip().split("+")
    example = "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|"
    if len(nodes) != 3:
        raise ValueError(f"NAS-Bench-201 arch '{arch}' must have 3 nodes separated by '+', e.g. {example}")
    ops = []
    for to, node in enumerate(nodes, 1):
        edges = _ARCH.findall(node)
        if "".join(f"|{op}~{i}" for op, i in edges) + "|" != node.strip():
            raise ValueError(f"NAS-Bench-201 arch '{arch}': node {to} '{node}' is not |op~i|...|, e.g. {example}")
        if [int(i) for _, i in edges] != list(range(to)):
            raise ValueError(f"NAS-Bench-201 arch '{arch}': node {to} must take inputs ~0..~{to - 1} in order")
        for op, _ in edges:
            if op not in OPS:
                raise ValueError(f"NAS-Bench-201 arch '{arch}': unknown operation '{op}'; choose one of: "
                                 f"{', '.join(OPS)}")
            ops.append(op)
    return tuple(ops)


def arch_to_name(arch: str) -> str:
    """The model name of an arch string: 'NB201_' + the OPS index of each edge."""
    return PREFIX + "".join(str(OPS.index(op)) for op in parse_arch(arch))


def name_to_arch(name: str) -> str:
    """The arch string of a model name 'NB201_dddddd'."""
    ops = parse_cell_name(name)
    if ops is None:
        raise ValueError(f"'{name}' is not a NAS-Bench-201 model name (NB201_ and 6 digits 0-4)")
    nodes = ["|" + "|".join(f"{op}~{src}" for (dst, src), op in zip(EDGES, ops) if dst == to) + "|"
             for to in (1, 2, 3)]
    return "+".join(nodes)


def parse_cell_name(name: str) -> tuple[str, ...] | None:
    """The edge operations encoded by a model name, or None if it is not a NAS-Bench-201 name."""
    match = _NAME.fullmatch(name)
    return None if match is None else tuple(OPS[int(d)] for d in match[1])


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int):
        super().__init__(nn.ReLU(), nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(c_out))


class Zero(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * 0.0


def _op(name: str, channels: int) -> nn.Module:
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    return ReLUConvBN(channels, channels, 1 if name == "nor_conv_1x1" else 3, 1)


class Cell(nn.Module):
    """One 4-node cell: node j = Σ_{i<j} op_{j,i}(node i); returns node 3."""

    def __init__(self, ops: tuple[str, ...], channels: int):
        super().__init__()
        self.edges = nn.ModuleList(_op(op, channels) for op in ops)

    def forward(self, x: Tensor) -> Tensor:
        nodes = [x]
        for to in (1, 2, 3):
            nodes.append(sum(self.edges[e](nodes[src]) for e, (dst, src) in enumerate(EDGES) if dst == to))
        return nodes[3]


class Reduction(nn.Module):
    """The skeleton's residual block between stages: two ReLU-conv3x3-BN (the first strided) + avgpool-conv1x1."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv_a, self.conv_b = ReLUConvBN(c_in, c_out, 3, 2), ReLUConvBN(c_out, c_out, 3, 1)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


class CellNetwork(FeatureClassifier):
    """A NAS-Bench-201 network of cell `ops` for `channels`-channel inputs of any size >= 4 px."""

    def __init__(self, channels: int, num_classes: int, size: int, ops: tuple[str, ...], width: int = 16,
                 cells: int = 5):
        super().__init__()
        if len(ops) != len(EDGES) or any(op not in OPS for op in ops):
            raise ValueError(f"a NAS-Bench-201 cell needs {len(EDGES)} operations from {', '.join(OPS)}, got {ops}")
        if size < 4:
            raise ValueError(f"NAS-Bench-201 networks halve the input twice; {size} px is too small")
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)]
        for stage, c in enumerate((width, 2 * width, 4 * width)):
            if stage:
                layers.append(Reduction(c // 2, c))
            layers += [Cell(ops, c) for _ in range(cells)]
        layers += [nn.BatchNorm2d(4 * width), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.num_features = 4 * width
        self.classifier = nn.Linear(self.num_features, num_classes)
