"""LeNet-5 (LeCun et al., 1998), with ReLU and max-pooling as modern re-implementations use."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnfit.models.registry import register


class LeNet5(nn.Module):
    def __init__(self, *, num_classes: int, in_chans: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 6, 5, padding=2)  # C1: 28x28 keeps the paper's 32x32 geometry
        self.conv2 = nn.Conv2d(6, 16, 5)  # C3
        self.fc1 = nn.Linear(16 * 5 * 5, 120)  # C5
        self.fc2 = nn.Linear(120, 84)  # F6
        self.head = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (B, 6, H/2, W/2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (B, 16, 5, 5) at 28 px
        if x.shape[-2:] != (5, 5):
            x = F.adaptive_avg_pool2d(x, 5)
        x = x.flatten(1)  # (B, 400)
        x = F.relu(self.fc2(F.relu(self.fc1(x))))
        return self.head(x)


@register
def lenet5(*, num_classes: int, in_chans: int = 1) -> nn.Module:
    return LeNet5(num_classes=num_classes, in_chans=in_chans)


lenet5.min_size = 12
