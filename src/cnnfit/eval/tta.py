"""Test-time augmentation: the model sees each image several ways and its answers are averaged, a cheap gain
when training used the same flips and shifts. Wrapping the model keeps one inference path for eval and predict."""

from __future__ import annotations

import torch
from torch import nn

MODES = ("none", "flip", "flip+shift")


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Translate (B, C, H, W) by (dy, dx) pixels, edges repeated: a normalized image has no 'black' to pad with."""
    h, w = x.shape[-2:]
    padded = nn.functional.pad(x, (abs(dx), abs(dx), abs(dy), abs(dy)), mode="replicate")
    top, left = abs(dy) - dy, abs(dx) - dx
    return padded[..., top:top + h, left:left + w]


def views(x: torch.Tensor, mode: str, shift: int | None = None) -> list[torch.Tensor]:
    """The batches the model sees for one batch `x`: flip adds the mirror image; flip+shift adds, for both, a
    shift of `shift` px (default 1/16 of the side: 2 px at 32 px) down-right and up-left."""
    if mode not in MODES:
        raise ValueError(f"tta={mode!r} is not a mode; choose from: {', '.join(MODES)}")
    out = [x]
    if mode in ("flip", "flip+shift"):
        out.append(x.flip(-1))
    if mode == "flip+shift":
        s = shift or max(1, round(x.shape[-1] / 16))
        out += [_shift(v, d, d) for v in out[:2] for d in (s, -s)]
    return out


class TTA(nn.Module):
    """Averages probabilities over `views` and returns them in the model's own output space: log-probabilities
    for classify (softmax gives the mean back), logits of the mean sigmoid for multilabel, the mean for regress."""

    def __init__(self, model: nn.Module, mode: str, task: str = "classify", shift: int | None = None) -> None:
        super().__init__()
        views(torch.zeros(1, 1, 2, 2), mode)  # refuse an unknown mode now, not at the first batch
        self.model, self.mode, self.task, self.shift = model, mode, task, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [self.model(v).float() for v in views(x, self.mode, self.shift)]
        if len(outs) == 1:
            return outs[0]
        stacked = torch.stack(outs)  # (V, B, K)
        if self.task == "classify":
            return stacked.softmax(-1).mean(0).clamp_min(1e-12).log()
        if self.task == "multilabel":
            return torch.logit(stacked.sigmoid().mean(0), eps=1e-6)
        return stacked.mean(0)


__all__ = ["MODES", "TTA", "views"]
