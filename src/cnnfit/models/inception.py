"""GoogLeNet / Inception v1 (Szegedy et al., 2014) as torchvision builds it: batch norm after every conv
(eps 1e-3, convs without bias), and a 3x3 conv in the "5x5" branch (torchvision issue #906), so torchvision
weights load by name.

Inputs of 96 px and up get the ImageNet network exactly (32x downsampling). Smaller ones get a 3x3 stride-1
`conv1` and no `maxpool1`, so the net downsamples 8x (32 px -> 4x4 before the global pool), as CIFAR
versions of GoogLeNet do; every Inception module is unchanged.

A stage (for `freeze`) is one stem conv or one Inception module; the auxiliary heads belong to no stage."""

from __future__ import annotations

import torch
import torch.nn as nn

from cnnfit.models.layers import Dropout, is_small, make_act, width_of
from cnnfit.models.registry import register

# Inception modules in order, with the paper's table 1 columns:
# (1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5", pool proj); a module's input is the sum of the previous outputs
INCEPTIONS: dict[str, tuple[int, int, int, int, int, int]] = {
    "inception3a": (64, 96, 128, 16, 32, 32),
    "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64),
    "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64),
    "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128),
    "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}
POOL_BEFORE = {"inception4a": "maxpool3", "inception5a": "maxpool4"}  # 2x downsamplings between the groups
AUX_AFTER = {"inception4a": "aux1", "inception4d": "aux2"}  # where the auxiliary classifiers tap in


class BasicConv2d(nn.Module):
    """conv (no bias: the BN shift replaces it) - BN - activation."""

    def __init__(self, cin: int, cout: int, act: str, kernel_size: int, stride: int = 1, padding: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)  # eps of the TensorFlow weights torchvision ported
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Inception(nn.Module):
    """Four parallel branches (1x1; 1x1-3x3; 1x1-3x3; 3x3 max-pool-1x1) concatenated along channels."""

    def __init__(self, cin: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int, pool_proj: int,
                 act: str) -> None:
        super().__init__()
        self.branch1 = BasicConv2d(cin, ch1x1, act, 1)
        self.branch2 = nn.Sequential(BasicConv2d(cin, ch3x3red, act, 1), BasicConv2d(ch3x3red, ch3x3, act, 3, 1, 1))
        self.branch3 = nn.Sequential(BasicConv2d(cin, ch5x5red, act, 1), BasicConv2d(ch5x5red, ch5x5, act, 3, 1, 1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), BasicConv2d(cin, pool_proj, act, 1))
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x))
        return torch.cat(branches, 1)  # (B, out_channels, H, W)


class InceptionAux(nn.Module):
    """Auxiliary classifier: 4x4 average pool - 1x1 conv 128 - fc 1024 - dropout 0.7 - fc num_classes."""

    def __init__(self, cin: int, num_classes: int, act: str) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.conv = BasicConv2d(cin, 128, act, 1)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.act = make_act(act)
        self.dropout = Dropout(0.7)  # the paper's and torchvision's rate
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.pool(x)).flatten(1)  # (B, 2048)
        x = self.dropout(self.act(self.fc1(x)))  # (B, 1024)
        return self.fc2(x)


class GoogLeNet(nn.Module):
    # torchvision calls the classifier `fc`; cnnfit exposes it as `head` for fine-tuning
    tv_renames: dict[str, str] = {"head.": "fc."}
    stage_names: tuple[str, ...] = ("conv1", "conv2", "conv3", *INCEPTIONS)

    def __init__(self, *, num_classes: int, in_chans: int = 3, small_input: bool = False, width: float = 1.0,
                 dropout: float = 0.2, act: str = "relu", aux: bool = False) -> None:
        super().__init__()
        c1, c3 = width_of(64, width), width_of(192, width)
        if small_input:
            self.conv1 = BasicConv2d(in_chans, c1, act, 3, 1, 1)
            self.maxpool1 = nn.Identity()
        else:
            self.conv1 = BasicConv2d(in_chans, c1, act, 7, 2, 3)
            self.maxpool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = BasicConv2d(c1, c1, act, 1)
        self.conv3 = BasicConv2d(c1, c3, act, 3, 1, 1)
        self.maxpool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.maxpool3 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.maxpool4 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.aux = aux
        cin = c3
        for name, channels in INCEPTIONS.items():
            module = Inception(cin, *(width_of(c, width) for c in channels), act=act)
            setattr(self, name, module)
            if aux and name in AUX_AFTER:  # with aux=False the heads do not exist, as in torchvision's state_dict
                setattr(self, AUX_AFTER[name], InceptionAux(module.out_channels, num_classes, act))
            cin = module.out_channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = Dropout(dropout)
        self.head = nn.Linear(cin, num_classes)
        for m in self.modules():  # torchvision's GoogLeNet init
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits; in training with aux=True, (logits, aux1 logits, aux2 logits) for the weighted aux loss."""
        x = self.maxpool1(self.conv1(x))  # (B, 64, H/4, W/4) ImageNet; (B, 64, H, W) small
        x = self.maxpool2(self.conv3(self.conv2(x)))  # (B, 192, H/8, W/8) ImageNet; (B, 192, H/2, W/2) small
        aux_logits = []
        for name in INCEPTIONS:
            if name in POOL_BEFORE:
                x = getattr(self, POOL_BEFORE[name])(x)  # halve H and W
            x = getattr(self, name)(x)
            if self.aux and self.training and name in AUX_AFTER:
                aux_logits.append(getattr(self, AUX_AFTER[name])(x))
        # x: (B, 1024, H/32, W/32) ImageNet; (B, 1024, H/8, W/8) small
        x = self.dropout(self.avgpool(x).flatten(1))  # (B, 1024)
        logits = self.head(x)
        return (logits, *aux_logits) if aux_logits else logits


@register
def googlenet(*, num_classes: int, in_chans: int = 3, imgsz: int = 224, width: float = 1.0, dropout: float = 0.2,
              act: str = "relu", aux: bool = False) -> nn.Module:
    return GoogLeNet(num_classes=num_classes, in_chans=in_chans, small_input=is_small(imgsz), width=width,
                     dropout=dropout, act=act, aux=aux)


googlenet.min_size = 8  # small variant downsamples 8x; it runs from 4 px, but below 8 the last map is mostly padding
