"""ResNet (He et al., 2015, arXiv 1512.03385): the ImageNet family (resnet18/34/50) and the CIFAR family
of section 4.2 (resnet20/32/44/56).

ImageNet family: state_dict names and shapes are torchvision's (`tv_renames` maps our `head.` to its `fc.`);
inputs of at least 96 px get the 7x7 stride-2 stem and max-pool, smaller ones a 3x3 stride-1 stem and no
max-pool (CIFAR practice), so `conv1.weight` is (64, C, 3, 3) there. resnet50 is "v1.5": its Bottleneck
strides on the 3x3 conv, not the first 1x1 (+0.5% top-1 on ImageNet, per torchvision and NVIDIA).

CIFAR family: 6n+2 layers, stages of 16/32/64 channels, and parameter-free "option A" shortcuts (strided
subsample + zero channel padding) exactly as the paper; it has no torchvision counterpart.

A stage (`stage_names`, what `freeze=N` freezes first) is a top-level module holding parameters: `conv1` and
`bn1` form the stem (torchvision keeps them apart, so we do too), then one stage per `layerN`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnfit.models.layers import is_small, make_act, width_of
from cnnfit.models.registry import register


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)  # bias is redundant before BatchNorm


class PadShortcut(nn.Module):
    """The paper's option A shortcut: take every `stride`-th pixel and append zero channels; no parameters,
    so a CIFAR ResNet keeps the paper's parameter count (0.27M for resnet20)."""

    def __init__(self, stride: int, extra: int) -> None:
        super().__init__()
        self.stride, self.extra = stride, extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]  # (B, C, ceil(H/s), ceil(W/s)), as the strided 3x3 conv
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))  # (B, C + extra, H/s, W/s)


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34 and the CIFAR nets); the first one strides."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None, act: str) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act = make_act(act)
        self.downsample = downsample

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act(self.bn1(self.conv1(x)))  # (B, planes, H/stride, W/stride)
        out = self.bn2(self.conv2(out))
        return self.act(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand by 4 (ResNet-50); the 3x3 strides, as torchvision's v1.5."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None, act: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.act = make_act(act)
        self.downsample = downsample

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act(self.bn1(self.conv1(x)))  # (B, planes, H, W)
        out = self.act(self.bn2(self.conv2(out)))  # (B, planes, H/stride, W/stride)
        out = self.bn3(self.conv3(out))  # (B, 4*planes, H/stride, W/stride)
        return self.act(out + identity)


Block = type[BasicBlock] | type[Bottleneck]


class ResNet(nn.Module):
    """Stem, then one `layerN` stage per entry of `widths` (the first keeps the resolution, each later one
    halves it), global average pool, linear head."""

    tv_renames: dict[str, str] | None = {"head.": "fc."}
    stage_names: tuple[str, ...] = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")
    # Zero-init each block's last BN so every residual block starts as the identity: the net trains as a
    # shallow one first, which is stabler at large batch and high LR and gains 0.2-0.3% top-1 (Goyal et
    # al. 2017, arXiv 1706.02677; torchvision's zero_init_residual, off there by default). Keys are unchanged.
    zero_init_last: bool = True
    shortcut: str = "conv"  # "conv": 1x1 conv + BN where shape changes (option B, torchvision); "pad": option A

    def __init__(self, block: Block, layers: tuple[int, ...], widths: tuple[int, ...], *, num_classes: int,
                 in_chans: int, small_input: bool, act: str = "relu") -> None:
        super().__init__()
        self.inplanes = widths[0]
        if small_input:  # 7x7/2 + max-pool would take a 32 px image to 1x1 by layer4
            self.conv1 = _conv3x3(in_chans, widths[0])
        else:
            self.conv1 = nn.Conv2d(in_chans, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act = make_act(act)
        self.maxpool = nn.Identity() if small_input else nn.MaxPool2d(3, 2, 1)
        self.depth = len(widths)
        for i, (planes, blocks) in enumerate(zip(widths, layers)):
            self.add_module(f"layer{i + 1}", self._stage(block, planes, blocks, 1 if i == 0 else 2, act))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(self.inplanes, num_classes)
        for m in self.modules():  # He et al. 2015 (arXiv 1502.01852) normal init, fan_out as torchvision
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if self.zero_init_last:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(m.last_bn.weight)

    def _shortcut(self, cout: int, stride: int) -> nn.Module | None:
        """None where the block keeps its input's shape, else the family's projection to (cout, H/stride)."""
        if stride == 1 and self.inplanes == cout:
            return None
        if self.shortcut == "pad":
            return PadShortcut(stride, cout - self.inplanes)
        return nn.Sequential(nn.Conv2d(self.inplanes, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def _stage(self, block: Block, planes: int, blocks: int, stride: int, act: str) -> nn.Sequential:
        layers = [block(self.inplanes, planes, stride, self._shortcut(planes * block.expansion, stride), act)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, 1, None, act) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act(self.bn1(self.conv1(x))))  # (B, w0, H/4, W/4); (B, w0, H, W) small stem
        for i in range(1, self.depth + 1):
            x = getattr(self, f"layer{i}")(x)  # stage i > 1 halves H, W and doubles the width
        x = self.avgpool(x).flatten(1)  # (B, C)
        return self.head(x)


class CifarResNet(ResNet):
    """He et al. 2015, sec. 4.2: 3x3 stem, 3 stages of n BasicBlocks, option A shortcuts; the paper's init
    (He normal), so no zero-init of the last BN."""

    tv_renames = None
    stage_names = ("conv1", "bn1", "layer1", "layer2", "layer3")
    zero_init_last = False
    shortcut = "pad"

    def __init__(self, n: int, *, num_classes: int, in_chans: int, width: float, act: str) -> None:
        widths = tuple(width_of(c, width) for c in (16, 32, 64))
        super().__init__(BasicBlock, (n, n, n), widths, num_classes=num_classes, in_chans=in_chans,
                         small_input=True, act=act)


def _imagenet(block: Block, layers: tuple[int, ...], num_classes: int, in_chans: int, imgsz: int, width: float,
              act: str) -> ResNet:
    widths = tuple(width_of(c, width) for c in (64, 128, 256, 512))
    return ResNet(block, layers, widths, num_classes=num_classes, in_chans=in_chans, small_input=is_small(imgsz),
                  act=act)


@register
def resnet18(*, num_classes: int, in_chans: int = 3, imgsz: int = 224, width: float = 1.0,
             act: str = "relu") -> nn.Module:
    return _imagenet(BasicBlock, (2, 2, 2, 2), num_classes, in_chans, imgsz, width, act)


@register
def resnet34(*, num_classes: int, in_chans: int = 3, imgsz: int = 224, width: float = 1.0,
             act: str = "relu") -> nn.Module:
    return _imagenet(BasicBlock, (3, 4, 6, 3), num_classes, in_chans, imgsz, width, act)


@register
def resnet50(*, num_classes: int, in_chans: int = 3, imgsz: int = 224, width: float = 1.0,
             act: str = "relu") -> nn.Module:
    return _imagenet(Bottleneck, (3, 4, 6, 3), num_classes, in_chans, imgsz, width, act)


@register
def resnet20(*, num_classes: int, in_chans: int = 3, width: float = 1.0, act: str = "relu") -> nn.Module:
    return CifarResNet(3, num_classes=num_classes, in_chans=in_chans, width=width, act=act)


@register
def resnet32(*, num_classes: int, in_chans: int = 3, width: float = 1.0, act: str = "relu") -> nn.Module:
    return CifarResNet(5, num_classes=num_classes, in_chans=in_chans, width=width, act=act)


@register
def resnet44(*, num_classes: int, in_chans: int = 3, width: float = 1.0, act: str = "relu") -> nn.Module:
    return CifarResNet(7, num_classes=num_classes, in_chans=in_chans, width=width, act=act)


@register
def resnet56(*, num_classes: int, in_chans: int = 3, width: float = 1.0, act: str = "relu") -> nn.Module:
    return CifarResNet(9, num_classes=num_classes, in_chans=in_chans, width=width, act=act)


# Smallest side: the small stem and 3 (ImageNet) or 2 (CIFAR) stride-2 stages leave a 1x1 or 2x2 map at 8 px.
for _builder in (resnet18, resnet34, resnet50, resnet20, resnet32, resnet44, resnet56):
    _builder.min_size = 8
