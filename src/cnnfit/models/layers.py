"""Building blocks shared by the model families: the activation choice and the stem rule."""

from __future__ import annotations

import torch.nn as nn

from cnnfit.errors import CnnfitError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "relu6": nn.ReLU6, "gelu": nn.GELU, "elu": nn.ELU,
    "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "silu": nn.SiLU,
}
_INPLACE = {"relu", "relu6", "elu", "silu"}

SMALL_INPUT = 96  # px: below this every family swaps its ImageNet stem for a stride-1 3x3 one (CIFAR practice)


def make_act(name: str) -> nn.Module:
    """A fresh activation module by name; in-place where torch offers it (saves one tensor per layer)."""
    if name not in ACTIVATIONS:
        raise CnnfitError(f"unknown activation '{name}'; choose from: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name](inplace=True) if name in _INPLACE else ACTIVATIONS[name]()


def is_small(imgsz: int) -> bool:
    return imgsz < SMALL_INPUT


def width_of(channels: int, width: float, divisor: int = 8) -> int:
    """Scale a channel count by `width`, rounded to a multiple of `divisor` (fast kernels like multiples of 8)."""
    if width == 1.0:
        return channels
    return max(divisor, int(channels * width + divisor / 2) // divisor * divisor)


def init_like_torchvision(model: nn.Module) -> None:
    """torchvision's init for VGG and MobileNetV2: He-normal convs (fan_out), unit norms, N(0, 0.01) linears,
    zero biases; the same start as the published weights were trained from."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
        if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)) and m.bias is not None:
            nn.init.zeros_(m.bias)
