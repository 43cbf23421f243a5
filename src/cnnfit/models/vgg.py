"""VGG (Simonyan & Zisserman, 2014), configurations A, B, D, E, with and without batch norm, as torchvision
builds them.

Inputs of 96 px and up get the ImageNet network exactly. Smaller ones are the CIFAR VGG: every conv and all
five max-pools (VGG's first conv is already 3x3 stride 1), the pools rounding up so 28 px still ends on a 1x1
map (28 -> 14 -> 7 -> 4 -> 2 -> 1), then a 1x1 pool and a 512-wide classifier instead of 7x7 and 4096 wide: on
32 px inputs the 7x7 pool only replicates one pixel 49 times into a 120M-parameter MLP. Keeping the first pool
(instead of dropping it) quarters the FLOPs of every later block: vgg16 at 32 px is 0.63 GFLOPs, not 2.3.

A stage (for `freeze`) is one parametrized layer of `features` (a conv, or its batch norm in the _bn
variants), in order; the last stage is the hidden part of the classifier. VGG has no module per block
that would keep torchvision's flat `features.N` names, hence per-layer stages."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from cnnfit.models.layers import Dropout, init_like_torchvision, is_small, make_act, width_of
from cnnfit.models.registry import register

# conv output channels, "M" = 2x2 max-pool; the letters are the paper's table 1 columns
CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],  # A
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],  # B
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],  # D
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],  # E
}


def _features(cfg: list[int | str], *, in_chans: int, bn: bool, act: str, width: float,
              small_input: bool) -> nn.Sequential:
    """conv [bn] act ... pool, flat, so each index is torchvision's."""
    layers: list[nn.Module] = []
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=small_input))
            continue
        out = width_of(int(v), width)
        layers.append(nn.Conv2d(in_chans, out, 3, padding=1))
        layers += [nn.BatchNorm2d(out), make_act(act)] if bn else [make_act(act)]
        in_chans = out
    return nn.Sequential(*layers)


class VGG(nn.Module):
    # torchvision keeps the last Linear inside `classifier`; cnnfit exposes it as `head` for fine-tuning
    tv_renames: dict[str, str] = {"head.": "classifier.6."}
    stage_names: tuple[str, ...]  # set per instance: which `features` indices hold weights depends on the config

    def __init__(self, features: nn.Sequential, *, num_classes: int, small_input: bool = False,
                 dropout: float = 0.5, act: str = "relu") -> None:
        super().__init__()
        self.features = features
        channels = [m.out_channels for m in features if isinstance(m, nn.Conv2d)][-1]
        pooled, hidden = (1, 512) if small_input else (7, 4096)
        self.avgpool = nn.AdaptiveAvgPool2d(pooled)
        self.classifier = nn.Sequential(
            nn.Linear(channels * pooled * pooled, hidden), make_act(act), Dropout(dropout),
            nn.Linear(hidden, hidden), make_act(act), Dropout(dropout),
        )
        self.head = nn.Linear(hidden, num_classes)
        self.stage_names = tuple(f"features.{i}" for i, m in enumerate(features)
                                 if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))) + ("classifier",)
        init_like_torchvision(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, 512, H/32, W/32), rounded up in the small variant
        x = self.avgpool(x).flatten(1)  # (B, 512*7*7) ImageNet; (B, 512) small
        return self.head(self.classifier(x))


def _builder(config: str, *, bn: bool) -> Callable[..., nn.Module]:
    """One keyword-only builder per (config, bn) pair, sharing one signature so the defaults live here once."""

    def builder(*, num_classes: int, in_chans: int = 3, imgsz: int = 224, width: float = 1.0,
                dropout: float = 0.5, act: str = "relu") -> nn.Module:
        small = is_small(imgsz)
        features = _features(CONFIGS[config], in_chans=in_chans, bn=bn, act=act, width=width, small_input=small)
        return VGG(features, num_classes=num_classes, small_input=small, dropout=dropout, act=act)

    builder.__name__ = builder.__qualname__ = config + ("_bn" if bn else "")  # the registry keys on __name__
    builder.__doc__ = f"VGG {config[3:]}-layer (torchvision's {builder.__name__})."
    builder.min_size = 8  # small variant: pools round up, so any size runs; below 8 px the maps are mostly padding
    return builder


vgg11 = register(_builder("vgg11", bn=False))
vgg13 = register(_builder("vgg13", bn=False))
vgg16 = register(_builder("vgg16", bn=False))
vgg19 = register(_builder("vgg19", bn=False))
vgg11_bn = register(_builder("vgg11", bn=True))
vgg13_bn = register(_builder("vgg13", bn=True))
vgg16_bn = register(_builder("vgg16", bn=True))
vgg19_bn = register(_builder("vgg19", bn=True))
