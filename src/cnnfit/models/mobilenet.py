"""MobileNetV2 (Sandler et al., 2018) as torchvision builds it: inverted residual blocks with a linear
bottleneck, ReLU6 by default, 1280 features before the classifier.

Inputs of 96 px and up get the ImageNet network exactly (32x downsampling). Smaller ones keep every layer
and every weight shape but run the first conv and the first 24-channel block at stride 1, so the net
downsamples 8x (32 px -> 4x4 before the global pool), as CIFAR versions of MobileNetV2 do.

A stage (for `freeze`) is one entry of `features`: the stem conv, one inverted residual block, or the
final 1x1 conv to 1280 channels."""

from __future__ import annotations

import torch
import torch.nn as nn

from cnnfit.models.layers import Dropout, init_like_torchvision, is_small, make_act, width_of
from cnnfit.models.registry import register

# inverted residual stages: (expansion t, output channels c, repeats n, first stride s), the paper's table 2
SETTINGS: list[tuple[int, int, int, int]] = [
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
]
SMALL_STRIDE1 = 1  # index in SETTINGS of the stage that, like the stem, keeps stride 1 for small inputs
STEM, LAST = 32, 1280  # channels of the first conv and of the features fed to the classifier


def _channels(c: int, width: float) -> int:
    """`width_of`, plus torchvision's rule that rounding to a multiple of 8 never loses more than 10%."""
    out = width_of(c, width)
    return out + 8 if out < 0.9 * c * width else out


def _conv_bn_act(cin: int, cout: int, act: str, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1) -> nn.Sequential:
    """torchvision's Conv2dNormActivation: indices 0 conv (no bias), 1 BN, 2 activation."""
    conv = nn.Conv2d(cin, cout, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(cout), make_act(act))


class InvertedResidual(nn.Module):
    """1x1 expand - 3x3 depthwise - 1x1 linear project; a skip connection when the shape is kept."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, act: str) -> None:
        super().__init__()
        hidden = int(round(cin * expand))
        self.use_res_connect = stride == 1 and cin == cout
        layers = [_conv_bn_act(cin, hidden, act, 1)] if expand != 1 else []
        layers += [
            _conv_bn_act(hidden, hidden, act, 3, stride, groups=hidden),  # depthwise
            nn.Conv2d(hidden, cout, 1, bias=False),  # linear bottleneck: no activation after it
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    # torchvision keeps the last Linear inside `classifier` after a dropout; cnnfit exposes it as `head`
    tv_renames: dict[str, str] = {"head.": "classifier.1."}
    stage_names: tuple[str, ...] = tuple(f"features.{i}" for i in range(2 + sum(n for _, _, n, _ in SETTINGS)))

    def __init__(self, *, num_classes: int, in_chans: int = 3, small_input: bool = False, width: float = 1.0,
                 dropout: float = 0.2, act: str = "relu6") -> None:
        super().__init__()
        cin = _channels(STEM, width)
        last = _channels(LAST, max(1.0, width))  # torchvision never narrows the last layer below 1280
        features: list[nn.Module] = [_conv_bn_act(in_chans, cin, act, 3, 1 if small_input else 2)]
        for i, (t, c, n, s) in enumerate(SETTINGS):
            cout = _channels(c, width)
            stride = 1 if small_input and i == SMALL_STRIDE1 else s
            for j in range(n):
                features.append(InvertedResidual(cin, cout, stride if j == 0 else 1, t, act))
                cin = cout
        features.append(_conv_bn_act(cin, last, act, 1))
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = Dropout(dropout)
        self.head = nn.Linear(last, num_classes)
        init_like_torchvision(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, 1280, H/32, W/32) ImageNet; (B, 1280, H/8, W/8) small
        x = self.dropout(self.avgpool(x).flatten(1))  # (B, 1280)
        return self.head(x)


@register
def mobilenet_v2(*, num_classes: int, in_chans: int = 3, imgsz: int = 224, width: float = 1.0,
                 dropout: float = 0.2, act: str = "relu6") -> nn.Module:
    return MobileNetV2(num_classes=num_classes, in_chans=in_chans, small_input=is_small(imgsz), width=width,
                       dropout=dropout, act=act)


mobilenet_v2.min_size = 8  # small variant: 8x downsampling, so 8 px leaves one 1x1 cell before the pool
