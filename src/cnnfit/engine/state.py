"""Everything the loop and its callbacks share, in one flat, explicit object."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class State:
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    epochs: int
    steps_per_epoch: int
    batch: int
    epoch: int = 0  # 0-based index of the current epoch
    step: int = 0  # optimizer steps taken since the start
    metrics: dict[str, float] = field(default_factory=dict)  # the last finished epoch
    history: list[dict[str, float]] = field(default_factory=list)
    stop: str | None = None  # a callback sets the reason; the loop ends after the current step
    # running sums of the current epoch, kept on the device so steps never wait for the host
    loss_sum: torch.Tensor | None = None
    correct: torch.Tensor | None = None
    seen: int = 0

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch
