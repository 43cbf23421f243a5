"""LeNet-5 (LeCun et al., 1998), with ReLU and max-pooling as modern re-implementations use.

Options beyond the paper, all off by default so the defaults stay the 61,706-parameter classic at 28 px:
`act="tanh"` comes closer to the paper's scaled tanh; `bn` adds BatchNorm after each conv (the d2l.ai
variant, trains at higher LR); `dropout` regularizes the two hidden fully connected layers, which hold
most of the weights; `width` scales every hidden layer (6/16 channels, 120/84 units).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnfit.models.layers import Dropout, make_act, width_of
from cnnfit.models.registry import register


def _scaled(n: int, width: float) -> int:
    return width_of(n, width, divisor=1)  # 6 and 16 channels: rounding to multiples of 8 would distort them


class LeNet5(nn.Module):
    tv_renames: dict[str, str] | None = None  # no torchvision counterpart
    stage_names: tuple[str, ...] = ("conv1", "bn1", "conv2", "bn2", "fc1", "fc2")  # bn* hold nothing unless bn

    def __init__(self, *, num_classes: int, in_chans: int, act: str = "relu", width: float = 1.0, bn: bool = False,
                 dropout: float = 0.0) -> None:
        super().__init__()
        c1, c3, c5, f6 = (_scaled(n, width) for n in (6, 16, 120, 84))
        self.conv1 = nn.Conv2d(in_chans, c1, 5, padding=2, bias=not bn)  # C1: 28x28 keeps the paper's 32x32 geometry
        self.bn1 = nn.BatchNorm2d(c1) if bn else nn.Identity()
        self.conv2 = nn.Conv2d(c1, c3, 5, bias=not bn)  # C3
        self.bn2 = nn.BatchNorm2d(c3) if bn else nn.Identity()
        self.fc1 = nn.Linear(c3 * 5 * 5, c5)  # C5
        self.fc2 = nn.Linear(c5, f6)  # F6
        self.act = make_act(act)
        self.drop = Dropout(dropout)
        self.head = nn.Linear(f6, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.act(self.bn1(self.conv1(x))), 2)  # (B, 6, H/2, W/2)
        x = F.max_pool2d(self.act(self.bn2(self.conv2(x))), 2)  # (B, 16, 5, 5) at 28 px
        if x.shape[-2:] != (5, 5):
            x = F.adaptive_avg_pool2d(x, 5)  # (B, 16, 5, 5) at any other size
        x = x.flatten(1)  # (B, 400)
        x = self.drop(self.act(self.fc1(x)))  # (B, 120)
        x = self.drop(self.act(self.fc2(x)))  # (B, 84)
        return self.head(x)


@register
def lenet5(*, num_classes: int, in_chans: int = 1, act: str = "relu", width: float = 1.0, bn: bool = False,
           dropout: float = 0.0) -> nn.Module:
    return LeNet5(num_classes=num_classes, in_chans=in_chans, act=act, width=width, bn=bn, dropout=dropout)


lenet5.min_size = 12  # px: below it C3 (5x5, unpadded) leaves less than the 2x2 map the second pool needs
