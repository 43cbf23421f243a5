"""The small CNN of the Keras and PyTorch MNIST tutorials, with a fixed-grid pool so any input size works."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnfit.models.registry import register


class SimpleCNN(nn.Module):
    """conv32 - conv64 - maxpool - dropout - fc512 - dropout - head."""

    grid = 12  # the 28 px tutorial input gives a 12x12 map; other sizes are pooled to it

    def __init__(self, *, num_classes: int, in_chans: int, hidden: int = 512, dropout: float = 0.5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.drop1 = nn.Dropout(dropout / 2)
        self.fc = nn.Linear(64 * self.grid * self.grid, hidden)
        self.drop2 = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))  # (B, 32, H-2, W-2)
        x = F.relu(self.conv2(x))  # (B, 64, H-4, W-4)
        x = F.max_pool2d(x, 2)  # (B, 64, (H-4)/2, (W-4)/2)
        if x.shape[-2:] != (self.grid, self.grid):
            x = F.adaptive_avg_pool2d(x, self.grid)  # (B, 64, 12, 12)
        x = self.drop1(x).flatten(1)  # (B, 9216)
        x = self.drop2(F.relu(self.fc(x)))  # (B, hidden)
        return self.head(x)


@register
def simplecnn(*, num_classes: int, in_chans: int = 3, hidden: int = 512, dropout: float = 0.5) -> nn.Module:
    return SimpleCNN(num_classes=num_classes, in_chans=in_chans, hidden=hidden, dropout=dropout)


simplecnn.min_size = 6
