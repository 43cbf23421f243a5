"""Batched augmentation on the training device: per-sample randomness through masks and index
maps, never a Python loop over samples. An augment is `(x, generator) -> x` on float (B, C, H, W)
in [0, 1], before normalization."""

from __future__ import annotations

from typing import Callable

import torch

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _coin(x: torch.Tensor, g: torch.Generator, p: float = 0.5) -> torch.Tensor:
    return torch.rand(len(x), 1, 1, 1, generator=g, device=x.device) < p  # (B, 1, 1, 1)


def random_hflip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return torch.where(_coin(x, g), x.flip(-1), x)


def random_vflip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return torch.where(_coin(x, g), x.flip(-2), x)


def random_shift(fraction: float) -> Augment:
    """Random translation by up to `fraction` of the size, zero fill (pad + random crop)."""

    def apply(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b, c, h, w = x.shape
        ph, pw = round(fraction * h), round(fraction * w)
        if ph == 0 and pw == 0:
            return x
        padded = torch.nn.functional.pad(x, (pw, pw, ph, ph))  # (B, C, H+2ph, W+2pw)
        dy = torch.randint(0, 2 * ph + 1, (b, 1), generator=g, device=x.device)
        dx = torch.randint(0, 2 * pw + 1, (b, 1), generator=g, device=x.device)
        rows = torch.arange(h, device=x.device) + dy  # (B, H)
        cols = torch.arange(w, device=x.device) + dx  # (B, W)
        batch = torch.arange(b, device=x.device)[:, None, None]
        out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
        return out.permute(0, 3, 1, 2)

    return apply


def compose(*augments: Augment) -> Augment | None:
    if not augments:
        return None

    def apply(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        for aug in augments:
            x = aug(x, g)
        return x

    return apply


def build(*, hflip: bool = False, vflip: bool = False, shift: float = 0.0) -> Augment | None:
    """The training augmentation from plain switches; None when nothing is switched on."""
    chain = [a for on, a in ((hflip, random_hflip), (vflip, random_vflip)) if on]
    if shift > 0:
        chain.append(random_shift(shift))
    return compose(*chain)
