"""VGG11 (conv3x3 -> norm -> ReLU, max pools), instance norm by default as in the MTT lineage."""
from __future__ import annotations

from torch import nn

from .base import FeatureClassifier

from .convnet import norm_layer

VGG11_CFG: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG(FeatureClassifier):
    """VGG from a cfg of widths and 'M' (2x2 max pool); the head is Linear(512*s*s) from the final size s.

    Pools that would act on a 1x1 map are skipped. Like the reference, a 1-channel input gets padding 3 in
    the first conv, so 28 px digits are seen as 32 px.
    """

    def __init__(self, channels: int, num_classes: int, size: int, cfg: tuple[int | str, ...] = VGG11_CFG,
                 norm: str = "instancenorm"):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch, side = channels, size
        for item in cfg:
            if item == "M":
                if side > 1:
                    layers.append(nn.MaxPool2d(2, 2))
                    side //= 2
                continue
            pad = 3 if channels == 1 and not layers else 1
            layers += [nn.Conv2d(in_ch, int(item), 3, padding=pad), norm_layer(norm, int(item)), nn.ReLU()]
            side += 2 * pad - 2
            in_ch = int(item)
        self.features = nn.Sequential(*layers)
        self.num_features = in_ch * side * side
        self.classifier = nn.Linear(self.num_features, num_classes)
