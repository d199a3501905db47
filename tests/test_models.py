"""Model zoo: every architecture builds at every resolution, and parameter counts match the reference code."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from distillery.models import MODEL_NAMES, ConvNet, build_model, is_model_name

ARCHS = ["ConvNet", "ConvNetD4", "ConvNetD5", "ConvNetW64", "ConvNetBN", "ConvNetNN", "ConvNetLN", "ConvNetGN",
         "ConvNetAS", "ConvNetAL", "ConvNetMP", "ConvNetNP", "ResNet18", "ResNet18BN", "ResNet18_AP", "VGG11",
         "VGG11BN", "AlexNet", "LeNet", "MLP", "ViT"]
SIZES = [8, 28, 32, 64, 128]


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", ARCHS)
def test_every_architecture_runs_at_every_resolution(name: str, size: int, channels: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, channels, 7, size).eval()
    with torch.no_grad():
        out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name, channels, classes, size, expected", [
    ("ConvNet", 3, 10, 32, 320_010),      # CIFAR-10
    ("ConvNet", 3, 100, 32, 504_420),     # CIFAR-100
    ("ConvNetD3", 3, 10, 32, 320_010),    # ATT's name for the same net
    ("ConvNetD4", 3, 200, 64, 857_160),   # Tiny ImageNet
    ("ConvNetD5", 3, 10, 128, 615_690),   # 128 px ImageNet subsets
])
def test_convnet_parameter_counts_match_reference(name: str, channels: int, classes: int, size: int,
                                                  expected: int) -> None:
    assert num_params(build_model(name, channels, classes, size)) == expected


@pytest.mark.parametrize("name, channels, size, expected", [
    ("LeNet", 1, 28, 61_706),       # flattened 16*5*5 = 400 at 28 px, 1 channel
    ("LeNet", 3, 32, 62_006),       # and at 32 px, 3 channels
    ("MLP", 3, 32, 411_146),        # 3072 -> 128 -> 128 -> 10
    ("AlexNet", 3, 32, 1_872_202),  # head Linear(192*4*4)
    ("AlexNet", 1, 28, 1_865_802),  # padding 4 turns 28 px into 32 px
    ("VGG11", 3, 32, 9_231_114),
    ("ResNet18", 3, 32, 11_173_962),
    ("ResNet18_AP", 3, 32, 11_250_762),  # head Linear(512*4*4)
])
def test_other_parameter_counts_match_reference(name: str, channels: int, size: int, expected: int) -> None:
    assert num_params(build_model(name, channels, 10, size)) == expected


def test_heads_are_sized_from_the_resolution() -> None:
    assert build_model("ConvNet", 3, 10, 64).classifier.in_features == 128 * 8 * 8
    assert build_model("ConvNetD5", 3, 10, 8).classifier.in_features == 128  # pools stop at 1x1
    assert build_model("ResNet18", 3, 10, 64).classifier.in_features == 512  # global average pool
    assert build_model("ResNet18_AP", 3, 10, 64).classifier.in_features == 512 * 8 * 8
    assert build_model("VGG11", 3, 10, 64).classifier.in_features == 512 * 2 * 2
    assert build_model("VGG11", 3, 10, 8).classifier.in_features == 512  # the last two pools are skipped
    assert build_model("AlexNet", 3, 10, 64).classifier.in_features == 192 * 8 * 8
    assert build_model("LeNet", 3, 10, 8).classifier[0].in_features == 16  # second conv padded below 10 px
    assert build_model("MLP", 1, 10, 28).classifier[0].in_features == 784


def test_instancenorm_convnet_is_groupnorm_without_buffers() -> None:
    model = build_model("ConvNet", 3, 10, 32)
    norms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert len(norms) == 3
    assert all(m.num_groups == 128 and m.num_channels == 128 and m.affine for m in norms)
    assert list(model.buffers()) == []
    assert list(build_model("ResNet18", 3, 10, 32).buffers()) == []
    assert list(build_model("VGG11", 3, 10, 32).buffers()) == []


def test_variant_names_set_norm_act_pool_width() -> None:
    def kinds(name: str) -> set[type]:
        return {type(m) for m in build_model(name, 3, 10, 32).modules()}

    assert nn.BatchNorm2d in kinds("ConvNetBN")
    assert not {nn.GroupNorm, nn.BatchNorm2d} & kinds("ConvNetNN")
    def groups(name: str) -> list[int]:
        return [m.num_groups for m in build_model(name, 3, 10, 32).modules() if isinstance(m, nn.GroupNorm)]

    assert groups("ConvNetGN") == [4, 4, 4] and groups("ConvNetIN") == [128] * 3
    layer_norms = [m for m in build_model("ConvNetLN", 3, 10, 32).modules() if isinstance(m, nn.LayerNorm)]
    assert [tuple(m.normalized_shape) for m in layer_norms] == [(128, 32, 32), (128, 16, 16), (128, 8, 8)]
    assert all(m.weight.shape == m.normalized_shape for m in layer_norms)  # per-element affine, as the reference
    assert nn.Sigmoid in kinds("ConvNetAS") and nn.ReLU not in kinds("ConvNetAS")
    leaky = [m for m in build_model("ConvNetAL", 3, 10, 32).modules() if isinstance(m, nn.LeakyReLU)]
    assert len(leaky) == 3 and leaky[0].negative_slope == 0.01
    assert nn.MaxPool2d in kinds("ConvNetMP") and nn.AvgPool2d not in kinds("ConvNetMP")
    assert build_model("ConvNetNP", 3, 10, 32).classifier.in_features == 128 * 32 * 32
    assert build_model("ConvNetW64", 3, 10, 32).classifier.in_features == 64 * 4 * 4
    kip = build_model("ConvNetKIP", 3, 10, 32)
    assert kip.classifier.in_features == 1024 * 4 * 4 and nn.GroupNorm not in {type(m) for m in kip.modules()}
    assert nn.BatchNorm2d in kinds("ConvNetD4BN")


def test_nas_space_is_expressible() -> None:
    """Every one of the 720 NAS cells (depth 1-4, width 32-256, 3 acts, 5 norms, 3 pools) constructs."""
    count = 0
    for depth in (1, 2, 3, 4):
        for width in (32, 64, 128, 256):
            for act in ("sigmoid", "relu", "leakyrelu"):
                for norm in ("none", "batchnorm", "layernorm", "instancenorm", "groupnorm"):
                    for pool in ("none", "maxpool", "avgpool"):
                        ConvNet(3, 10, 8, width=width, depth=depth, norm=norm, act=act, pool=pool)
                        count += 1
    assert count == 720


def test_parameter_order_is_module_order() -> None:
    names = [n for n, _ in build_model("ConvNet", 3, 10, 32).named_parameters()]
    assert names == ["features.0.weight", "features.0.bias", "features.1.weight", "features.1.bias",
                     "features.4.weight", "features.4.bias", "features.5.weight", "features.5.bias",
                     "features.8.weight", "features.8.bias", "features.9.weight", "features.9.bias",
                     "classifier.weight", "classifier.bias"]


def test_unknown_names_raise_value_error() -> None:
    for bad in ("ResNet50", "ConvNetD9", "ConvNetW8", "ConvNetXX", "ConvNetBNIN", "convnet"):
        assert not is_model_name(bad)
        with pytest.raises(ValueError, match=f"unknown architecture '{bad}'; choose one of: ConvNet"):
            build_model(bad, 3, 10, 32)
    with pytest.raises(ValueError, match="unknown norm 'batch'"):
        ConvNet(3, 10, 32, norm="batch")


def test_model_names_are_all_buildable() -> None:
    assert len(MODEL_NAMES) == len(set(MODEL_NAMES))
    assert all(is_model_name(n) for n in MODEL_NAMES)
    assert {"ConvNet", "ConvNetD3", "ResNet18BN_AP", "VGG11BN", "ConvNetKIP"} <= set(MODEL_NAMES)


def test_convnet_at_28px_one_channel_is_the_reference_network():
    # networks.py (MTT lineage) _make_layers: padding 3 on the first conv for 1 channel, im_size 28 read as 32,
    # so maps are 32/16/8 and the classifier is 10 x (128*4*4); shapes in parameters() order.
    shapes = [tuple(p.shape) for p in build_model("ConvNet", 1, 10, 28).parameters()]
    block = [(128,), (128,), (128,)]  # conv bias, GroupNorm weight and bias
    assert shapes == [(128, 1, 3, 3), *block, (128, 128, 3, 3), *block, (128, 128, 3, 3), *block, (10, 2048), (10,)]
    assert build_model("ConvNet", 1, 10, 28).features[0].padding == (3, 3)
    assert build_model("ConvNet", 3, 10, 32).features[0].padding == (1, 1)
    assert build_model("ConvNetD2W32", 1, 10, 8).classifier.in_features == 32 * 2 * 2  # digits unchanged
