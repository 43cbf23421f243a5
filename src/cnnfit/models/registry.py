"""A decorator registry of keyword-only model builders, and the one way to create a model."""

from __future__ import annotations

import difflib
import inspect
from typing import Callable

import torch.nn as nn

from cnnfit.errors import CnnfitError

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    if fn.__name__ in _BUILDERS:
        raise ValueError(f"model '{fn.__name__}' is registered twice")
    _BUILDERS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_BUILDERS)


def check_name(name: str) -> None:
    if name not in _BUILDERS:
        close = difflib.get_close_matches(name, _BUILDERS, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise CnnfitError(f"unknown model '{name}'; {hint}choose from: {', '.join(list_models())}")


def create(name: str, *, num_classes: int, in_chans: int = 3, **kwargs) -> nn.Module:
    """Build a registered model; every model maps float (B, in_chans, H, W) to (B, num_classes) logits."""
    check_name(name)
    return _BUILDERS[name](num_classes=num_classes, in_chans=in_chans, **kwargs)


def builder_kwargs(name: str, **hints) -> dict:
    """The subset of `hints` (such as imgsz) that a builder takes, so the stem can suit the input."""
    check_name(name)
    params = inspect.signature(_BUILDERS[name]).parameters
    return {k: v for k, v in hints.items() if k in params}


def min_size(name: str) -> int:
    """Smallest input side a model accepts, declared by its builder (`builder.min_size`)."""
    check_name(name)
    return getattr(_BUILDERS[name], "min_size", 8)
