"""EfficientNet-Lite0/1/2: EfficientNet-B0's MBConv stages (Tan & Le, 2019, arXiv 1905.11946, table 1) with the
changes Google made for mobile accelerators (tensorflow/tpu models/official/efficientnet/lite, 2020): no
squeeze-excite, ReLU6 instead of swish, and a stem and head that the width multiplier leaves at 32 and 1280
channels, and first and last stages that the depth multiplier leaves at one block.

Module names are efficientnet_pytorch's without the leading underscore (`blocks.3.depthwise_conv`, and `head` for
its `_fc`), so `from_efficientnet_pytorch` maps its checkpoints with one rule. Strided convs pad as TensorFlow's
"same" does, because the published weights were trained in TensorFlow (see `Conv2dSame`).

Inputs below 96 px keep every layer and weight shape but run the stem and the first 24-channel block at stride 1:
the net downsamples 8x instead of 32x, as `mobilenet_v2` does for small images. A stage (for `freeze`) is the stem
conv, its norm, one block, the head conv or its norm."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnfit.models.layers import Dropout, init_like_torchvision, is_small, make_act, width_of
from cnnfit.models.registry import register

# MBConv stages of EfficientNet-B0: (expansion t, kernel k, first stride s, output channels c, repeats n)
STAGES: list[tuple[int, int, int, int, int]] = [
    (1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3), (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
]
SMALL_STRIDE1 = 1  # index in STAGES of the stage that, like the stem, keeps stride 1 for small inputs
STEM, LAST = 32, 1280  # channels of the stem conv and of the features fed to the classifier; Lite never scales them
BN_EPS = 1e-3  # TensorFlow's batch_norm_epsilon for EfficientNet; torch's 1e-5: Lite0's zero-shot ant top-1 87% -> 81%
# (width multiplier, depth multiplier, input size in px): the Lite builder's table; its dropout (0.2, 0.2, 0.3)
# is each builder's default
VARIANTS: dict[str, tuple[float, float, int]] = {
    "efficientnet_lite0": (1.0, 1.0, 224),
    "efficientnet_lite1": (1.0, 1.1, 240),
    "efficientnet_lite2": (1.1, 1.2, 260),
}


class Conv2dSame(nn.Conv2d):
    """A strided conv padded as TensorFlow's "same": the extra pixel goes after, so a 3x3 stride-2 conv on an even
    side pads (0, 1) where PyTorch pads (1, 1). The published weights were trained this way: with symmetric padding
    instead, Lite0's zero-shot loss on the hymenoptera val photos rises from 0.94 to 1.03 nats (ants) and from 0.86
    to 0.95 (bees), its ant top-1 falls from 87% to 81%."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads: list[int] = []
        for size, k, s in zip(x.shape[:1:-1], self.kernel_size[::-1], self.stride[::-1]):  # F.pad takes W first
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))  # (B, C, H', W') with H' = ceil(H / stride)


def _conv(cin: int, cout: int, kernel_size: int = 1, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """Bias-free conv (a BatchNorm follows); at stride 1 "same" padding is PyTorch's symmetric (k - 1) / 2."""
    if stride == 1:
        return nn.Conv2d(cin, cout, kernel_size, 1, (kernel_size - 1) // 2, groups=groups, bias=False)
    return Conv2dSame(cin, cout, kernel_size, stride, 0, groups=groups, bias=False)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=0.01)  # TF's decay 0.99 is torch's momentum 0.01


def _channels(c: int, width: float) -> int:
    """EfficientNet's round_filters: `width_of`, plus the rule that rounding to 8 never loses more than 10%."""
    out = width_of(c, width)
    return out + 8 if out < 0.9 * c * width else out


def _repeats(stage: int, n: int, depth: float) -> int:
    """EfficientNet's round_repeats, except that Lite keeps the first and last stages at their one block."""
    return n if stage in (0, len(STAGES) - 1) else math.ceil(n * depth)


class MBConv(nn.Module):
    """1x1 expand - kxk depthwise - 1x1 linear project, a skip connection when the shape is kept; no
    squeeze-excite (Lite drops it: poorly supported by mobile accelerators)."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int, expand: int, act: str) -> None:
        super().__init__()
        hidden = cin * expand
        self.expand_conv = _conv(cin, hidden) if expand != 1 else None
        self.bn0 = _bn(hidden) if expand != 1 else None
        self.depthwise_conv = _conv(hidden, hidden, kernel_size, stride, groups=hidden)
        self.bn1 = _bn(hidden)
        self.project_conv = _conv(hidden, cout)
        self.bn2 = _bn(cout)
        self.act = make_act(act)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.expand_conv is None else self.act(self.bn0(self.expand_conv(x)))  # (B, t*C, H, W)
        h = self.act(self.bn1(self.depthwise_conv(h)))  # (B, t*C, H/s, W/s)
        h = self.bn2(self.project_conv(h))  # (B, C', H/s, W/s): linear bottleneck, no activation
        return x + h if self.residual else h


class EfficientNetLite(nn.Module):
    tv_renames: dict[str, str] | None = None  # torchvision has no Lite; see from_efficientnet_pytorch
    stage_names: tuple[str, ...]  # set per instance: the block count follows the depth multiplier

    def __init__(self, *, width: float, depth: float, num_classes: int, in_chans: int = 3, small_input: bool = False,
                 dropout: float = 0.2, act: str = "relu6") -> None:
        super().__init__()
        self.conv_stem = _conv(in_chans, STEM, 3, 1 if small_input else 2)
        self.bn0 = _bn(STEM)
        self.act = make_act(act)
        blocks, cin = [], STEM
        for i, (t, k, s, c, n) in enumerate(STAGES):
            cout = _channels(c, width)
            stride = 1 if small_input and i == SMALL_STRIDE1 else s
            for j in range(_repeats(i, n, depth)):
                blocks.append(MBConv(cin, cout, k, stride if j == 0 else 1, t, act))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.conv_head = _conv(cin, LAST)
        self.bn1 = _bn(LAST)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = Dropout(dropout)
        self.head = nn.Linear(LAST, num_classes)
        self.stage_names = ("conv_stem", "bn0", *(f"blocks.{i}" for i in range(len(blocks))), "conv_head", "bn1")
        init_like_torchvision(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn0(self.conv_stem(x)))  # (B, 32, H/2, W/2); (B, 32, H, W) small
        x = self.blocks(x)  # (B, 320 * width, H/32, W/32); (B, ., H/8, W/8) small
        x = self.act(self.bn1(self.conv_head(x)))  # (B, 1280, H/32, W/32)
        x = self.dropout(self.avgpool(x).flatten(1))  # (B, 1280)
        return self.head(x)


def from_efficientnet_pytorch(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """efficientnet_pytorch names -> ours: `_fc.` becomes `head.`, and every name part loses its leading `_`
    (`_blocks.3._bn1.weight` -> `blocks.3.bn1.weight`)."""
    renamed = {}
    for key, value in state_dict.items():
        key = "head." + key[len("_fc."):] if key.startswith("_fc.") else key
        renamed[".".join(part.lstrip("_") for part in key.split("."))] = value
    return renamed


def _build(name: str, num_classes: int, in_chans: int, imgsz: int, dropout: float, act: str) -> nn.Module:
    width, depth, _ = VARIANTS[name]
    return EfficientNetLite(width=width, depth=depth, num_classes=num_classes, in_chans=in_chans,
                            small_input=is_small(imgsz), dropout=dropout, act=act)


@register
def efficientnet_lite0(*, num_classes: int, in_chans: int = 3, imgsz: int = 224, dropout: float = 0.2,
                       act: str = "relu6") -> nn.Module:
    return _build("efficientnet_lite0", num_classes, in_chans, imgsz, dropout, act)


@register
def efficientnet_lite1(*, num_classes: int, in_chans: int = 3, imgsz: int = 240, dropout: float = 0.2,
                       act: str = "relu6") -> nn.Module:
    return _build("efficientnet_lite1", num_classes, in_chans, imgsz, dropout, act)


@register
def efficientnet_lite2(*, num_classes: int, in_chans: int = 3, imgsz: int = 260, dropout: float = 0.3,
                       act: str = "relu6") -> nn.Module:
    return _build("efficientnet_lite2", num_classes, in_chans, imgsz, dropout, act)


# Small variant: 8x downsampling, so 8 px leaves one 1x1 cell before the pool.
for _builder in (efficientnet_lite0, efficientnet_lite1, efficientnet_lite2):
    _builder.min_size = 8
