"""Small nets for small images: the tutorial `simplecnn`, and `fastnet`, a quick baseline after airbench94.

fastnet follows KellerJordan/airbench94 (94% on CIFAR-10 in 3.5 A100-seconds): conv-BN-GELU groups of
widths 64/256/256 with max-pools, global max pool, linear head. It adds a cheap 32-channel stem and a pool
in front, so the groups start at 14/7/3 px for a 28 px input (airbench: 31/15/7 at 32 px); that brings it
to 58 MFLOPs per 28 px image (airbench: ~236 MFLOPs per 32 px image), about two minutes per
Fashion-MNIST epoch on 2 CPU cores. Left out from airbench: whitening and dirac init (PyTorch's default init
stays, as in airbench's own baseline), frozen BN scales, the 1/9 logit scale and BN momentum 0.4, which serve
its hand-tuned SGD recipe rather than a general trainer.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnfit.errors import CnnfitError
from cnnfit.models.layers import Dropout, make_act, width_of
from cnnfit.models.registry import register


class SimpleCNN(nn.Module):
    """The small CNN of the Keras and PyTorch MNIST tutorials, with a fixed-grid pool so any input size works:
    conv32 - conv64 - maxpool - dropout - fc512 - dropout - head."""

    tv_renames: dict[str, str] | None = None  # no torchvision counterpart
    stage_names: tuple[str, ...] = ("conv1", "bn1", "conv2", "bn2", "fc")  # bn* hold nothing unless bn=True
    grid = 12  # the 28 px tutorial input gives a 12x12 map; other sizes are pooled to it

    def __init__(self, *, num_classes: int, in_chans: int, hidden: int = 512, dropout: float = 0.5,
                 width: float = 1.0, bn: bool = False, act: str = "relu") -> None:
        super().__init__()
        c1, c2, hidden = width_of(32, width), width_of(64, width), width_of(hidden, width)
        self.conv1 = nn.Conv2d(in_chans, c1, 3, bias=not bn)  # a bias before BatchNorm is cancelled by it
        self.bn1 = nn.BatchNorm2d(c1) if bn else nn.Identity()
        self.conv2 = nn.Conv2d(c1, c2, 3, bias=not bn)
        self.bn2 = nn.BatchNorm2d(c2) if bn else nn.Identity()
        self.act = make_act(act)
        self.drop1 = Dropout(dropout / 2)  # the tutorials' 0.25 before the dense layer, 0.5 after it
        self.fc = nn.Linear(c2 * self.grid * self.grid, hidden)
        self.drop2 = Dropout(dropout)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.conv1(x)))  # (B, 32, H-2, W-2)
        x = self.act(self.bn2(self.conv2(x)))  # (B, 64, H-4, W-4)
        x = F.max_pool2d(x, 2)  # (B, 64, (H-4)/2, (W-4)/2)
        if x.shape[-2:] != (self.grid, self.grid):
            x = F.adaptive_avg_pool2d(x, self.grid)  # (B, 64, 12, 12)
        x = self.drop1(x).flatten(1)  # (B, 9216)
        x = self.drop2(self.act(self.fc(x)))  # (B, hidden)
        return self.head(x)


@register
def simplecnn(*, num_classes: int, in_chans: int = 3, hidden: int = 512, dropout: float = 0.5, width: float = 1.0,
              bn: bool = False, act: str = "relu") -> nn.Module:
    return SimpleCNN(num_classes=num_classes, in_chans=in_chans, hidden=hidden, dropout=dropout, width=width, bn=bn,
                     act=act)


simplecnn.min_size = 6  # px: two unpadded 3x3 convs and a 2x2 pool leave 1x1


class ConvGroup(nn.Module):
    """airbench94's block: conv, 2x2 max-pool, BN, act, conv, BN, act. Pooling right after the first conv runs
    the second one on a quarter of the pixels."""

    def __init__(self, cin: int, cout: int, act: str, pool: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)  # bias is cancelled by the BN after it
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.pool(self.conv1(x))))  # (B, cout, H/2, W/2); (B, cout, H, W) without pool
        return self.act(self.bn2(self.conv2(x)))


class FastNet(nn.Module):
    """stem (conv32, pool) - group64 (pool) - group256 (pool) - group256 - global max pool - head."""

    tv_renames: dict[str, str] | None = None  # no torchvision counterpart
    stage_names: tuple[str, ...] = ("stem", "block1", "block2", "block3")

    def __init__(self, *, num_classes: int, in_chans: int, width: float = 1.0, act: str = "gelu",
                 crop: int = 0, blocks: int = 3) -> None:
        super().__init__()
        self.crop = crop  # px cut from each edge first: MNIST's digits sit in the central 20x20 of 28
        c0, c1, c2, c3 = (width_of(c, width) for c in (32, 64, 256, 256))
        # pool before BN and activation, as in ConvGroup: they run on a quarter of the pixels (~10% of a step)
        self.stem = nn.Sequential(nn.Conv2d(in_chans, c0, 3, padding=1, bias=False), nn.MaxPool2d(2),
                                  nn.BatchNorm2d(c0), make_act(act))
        self.block1 = ConvGroup(c0, c1, act)
        self.block2 = ConvGroup(c1, c2, act)
        # 3x3 maps at 28 px (one more pool would leave 1x1). blocks=2 drops this group, ~35% of the FLOPs at
        # 28 px: fmnist-fast trains 5 epochs without it sooner than 4 with it (0.9286 against 0.9259, 5 seeds)
        self.block3 = ConvGroup(c2, c3, act, pool=False) if blocks == 3 else None
        if blocks == 2:
            self.stage_names = self.stage_names[:-1]
        self.pool = nn.AdaptiveMaxPool2d(1)  # airbench's final MaxPool(3), for any input size
        self.head = nn.Linear(c3 if blocks == 3 else c2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.crop:
            x = x[..., self.crop:-self.crop, self.crop:-self.crop]  # (B, C, H - 2 crop, W - 2 crop)
        x = self.stem(x)  # (B, 32, H/2, W/2)
        x = self.block1(x)  # (B, 64, H/4, W/4)
        x = self.block2(x)  # (B, 256, H/8, W/8)
        if self.block3 is not None:
            x = self.block3(x)  # (B, 256, H/8, W/8)
        x = self.pool(x).flatten(1)  # (B, 256)
        return self.head(x)


@register
def fastnet(*, num_classes: int, in_chans: int = 3, width: float = 1.0, act: str = "gelu", crop: int = 0,
            blocks: int = 3, imgsz: int | None = None) -> nn.Module:
    if blocks not in (2, 3):
        raise CnnfitError(f"fastnet has 2 or 3 conv groups, not blocks={blocks}; use model.blocks=3 (the default) "
                          "or model.blocks=2 (faster, for 28 px images)")
    if imgsz is not None and imgsz - 2 * crop < fastnet.min_size:
        raise CnnfitError(f"fastnet with crop={crop} leaves {imgsz - 2 * crop} px of a {imgsz} px input and needs "
                          f"{fastnet.min_size}; use crop={max(0, (imgsz - fastnet.min_size) // 2)} or less")
    return FastNet(num_classes=num_classes, in_chans=in_chans, width=width, act=act, crop=crop, blocks=blocks)


fastnet.min_size = 8  # px: three 2x2 pools take 8 px to 1x1
