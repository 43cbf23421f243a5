"""A decorator registry of keyword-only model builders, and the one way to create a model.

Besides registered names, every function here takes a custom name (see cnnfit.models.custom): a layers file
(`net.yaml`, `net.yml`) or the user's own module (`pkg.mod:Class`). `list_models` lists registered names only."""

from __future__ import annotations

import inspect
from typing import Callable

import torch.nn as nn

from cnnfit.errors import CnnfitError, suggest
from cnnfit.models import custom

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    if fn.__name__ in _BUILDERS:
        raise ValueError(f"model '{fn.__name__}' is registered twice")
    _BUILDERS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_BUILDERS)


def check_name(name: str) -> None:
    if custom.is_custom(name):
        custom.check(name)
        return
    if name not in _BUILDERS:
        hint = suggest(name, _BUILDERS)
        raise CnnfitError(f"unknown model '{name}'; {hint}choose from: {', '.join(list_models())}; "
                          f"or a layers file such as net.yaml, or your own module as pkg.mod:Class")


def create(name: str, *, num_classes: int, in_chans: int = 3, imgsz: int | None = None, **options) -> nn.Module:
    """Build a registered or custom model; every model maps float (B, in_chans, H, W) to (B, num_classes) logits.

    `imgsz` lets a family choose its stem; it is checked against the model's declared minimum so a too-small
    input fails here with the fix, not deep inside a forward pass. Unknown options are refused by name."""
    if custom.is_custom(name):
        return custom.create(name, num_classes=num_classes, in_chans=in_chans, imgsz=imgsz, **options)
    check_name(name)
    if imgsz is not None and imgsz < min_size(name):
        raise CnnfitError(f"{name} needs inputs of at least {min_size(name)} px, got {imgsz}; "
                          f"set imgsz={min_size(name)} or larger, or pick a model for small images such as simplecnn")
    builder = _BUILDERS[name]
    takes = options_of(name)
    unknown = sorted(set(options) - set(takes))
    if unknown:
        raise CnnfitError(f"{name} has no option {', '.join(unknown)}; it takes: {', '.join(takes) or 'none'}")
    if imgsz is not None and "imgsz" in inspect.signature(builder).parameters:
        options["imgsz"] = imgsz
    return builder(num_classes=num_classes, in_chans=in_chans, **options)


def options_of(name: str) -> list[str]:
    """The keyword options a builder takes beyond num_classes, in_chans and imgsz (width, dropout, act, ...)."""
    if custom.is_custom(name):
        return custom.options_of(name)
    check_name(name)
    params = inspect.signature(_BUILDERS[name]).parameters
    return [k for k in params if k not in ("num_classes", "in_chans", "imgsz")]


def builder_kwargs(name: str, **hints) -> dict:
    """The subset of `hints` (such as imgsz) that a builder takes, so the stem can suit the input; for a layers file
    also its parsed `layers`, so the checkpoint rebuilds the model without the file."""
    if custom.is_custom(name):
        return custom.builder_kwargs(name, **hints)
    check_name(name)
    params = inspect.signature(_BUILDERS[name]).parameters
    return {k: v for k, v in hints.items() if k in params}


def min_size(name: str) -> int:
    """Smallest input side a model accepts, declared by its builder (`builder.min_size`). A custom model's own
    forward decides (a layers file reports an empty map with its layer when built), so 1."""
    if custom.is_custom(name):
        return 1
    check_name(name)
    return getattr(_BUILDERS[name], "min_size", 8)
