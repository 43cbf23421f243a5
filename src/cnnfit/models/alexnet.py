"""AlexNet as torchvision builds it ("One weird trick", Krizhevsky 2014: 64-192-384-256-256 channels).

Inputs of 96 px and up get the ImageNet network exactly; smaller ones (CIFAR, MNIST) get a 3x3 stride-1
first conv, so the net downsamples 8x instead of 32x, and a 512-wide classifier on a 1x1 pooled map:
at 32 px the ImageNet 6x6 pool would only replicate a 3x3 map into a 37.7M-parameter 4096-wide MLP.

A stage (for `freeze`) is one conv layer; the last stage is the hidden part of the classifier."""

from __future__ import annotations

import torch
import torch.nn as nn

from cnnfit.models.layers import Dropout, is_small, make_act, width_of
from cnnfit.models.registry import register


class AlexNet(nn.Module):
    # torchvision keeps the last Linear inside `classifier`; cnnfit exposes it as `head` for fine-tuning
    tv_renames: dict[str, str] = {"head.": "classifier.6."}
    stage_names: tuple[str, ...] = ("features.0", "features.3", "features.6", "features.8", "features.10",
                                    "classifier")

    def __init__(self, *, num_classes: int, in_chans: int = 3, small_input: bool = False, width: float = 1.0,
                 dropout: float = 0.5, act: str = "relu") -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = (width_of(c, width) for c in (64, 192, 384, 256, 256))
        stem = nn.Conv2d(in_chans, c1, 3, 1, 1) if small_input else nn.Conv2d(in_chans, c1, 11, 4, 2)
        self.features = nn.Sequential(  # Sequential indices are torchvision's state_dict names
            stem, make_act(act), nn.MaxPool2d(3, 2),
            nn.Conv2d(c1, c2, 5, padding=2), make_act(act), nn.MaxPool2d(3, 2),
            nn.Conv2d(c2, c3, 3, padding=1), make_act(act),
            nn.Conv2d(c3, c4, 3, padding=1), make_act(act),
            nn.Conv2d(c4, c5, 3, padding=1), make_act(act), nn.MaxPool2d(3, 2),
        )
        pooled, hidden = (1, 512) if small_input else (6, 4096)
        self.avgpool = nn.AdaptiveAvgPool2d(pooled)
        self.classifier = nn.Sequential(
            Dropout(dropout), nn.Linear(c5 * pooled * pooled, hidden), make_act(act),
            Dropout(dropout), nn.Linear(hidden, hidden), make_act(act),
        )
        self.head = nn.Linear(hidden, num_classes)
        # torchvision leaves AlexNet at PyTorch's default (Kaiming-uniform) init, and so do we

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, 256, 6, 6) at 224 px, ImageNet stem; (B, 256, 3, 3) at 32 px, small stem
        x = self.avgpool(x).flatten(1)  # (B, 256*6*6) ImageNet; (B, 256) small
        return self.head(self.classifier(x))


@register
def alexnet(*, num_classes: int, in_chans: int = 3, imgsz: int = 224, width: float = 1.0, dropout: float = 0.5,
            act: str = "relu") -> nn.Module:
    return AlexNet(num_classes=num_classes, in_chans=in_chans, small_input=is_small(imgsz), width=width,
                   dropout=dropout, act=act)


alexnet.min_size = 15  # small stem: three 3x3 stride-2 max-pools without padding need 15 -> 7 -> 3 -> 1
