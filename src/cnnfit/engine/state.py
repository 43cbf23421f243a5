"""Everything the loop and its callbacks share, in one flat, explicit object."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from cnnfit.distributed import SINGLE, Dist


@dataclass
class State:
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    epochs: int
    steps_per_epoch: int  # optimizer steps (batches / accumulate, rounded up)
    batch: int
    epoch: int = 0  # 0-based index of the current epoch
    step: int = 0  # optimizer steps taken since the start
    epoch_step: int = 0  # optimizer steps taken in the current epoch
    metrics: dict[str, float] = field(default_factory=dict)  # the last finished epoch
    history: list[dict[str, float]] = field(default_factory=list)
    stop: str | None = None  # a callback sets the reason; the loop ends after the current step
    failed: bool = False  # the stop is an error (a non-finite loss): nothing after it may be saved
    signal: str | None = None  # a signal just caught (set by the handler, at any moment)
    interrupted: str | None = None  # a signal the loop has acted on: last.pt is saved at this step boundary
    epoch_done: bool = False  # the current epoch has been validated and its end hooks have run
    lr_scale: float = 1.0  # multiplies the scheduled LR (ReduceLROnPlateau lowers it)
    # what exact resume needs beside model and optimizer
    loader: Any = None  # the train DeviceLoader: its generator draws orders and augmentations
    order: torch.Tensor | None = None  # this epoch's sample order
    callbacks: list = field(default_factory=list)
    dist: Dist = SINGLE  # this process's rank and the world size (data-parallel training)
    scaler: torch.amp.GradScaler | None = None
    ema: torch.optim.swa_utils.AveragedModel | None = None
    # running sums of the current epoch, kept on the device so steps never wait for the host
    loss_sum: torch.Tensor | None = None
    correct: torch.Tensor | None = None
    seen: int = 0
    bad_step: torch.Tensor | None = None  # first step whose loss was not finite, or -1; on the device

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights that are validated and saved as best.pt: the EMA when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def check_finite(self) -> bool:
        """Sync once and stop the run, with the step number, if any loss so far was NaN or Inf."""
        if self.failed:
            return False
        if self.bad_step is None or int(self.bad_step) < 0:
            return True
        bad = int(self.bad_step)
        self.failed = True
        lr = self.optimizer.param_groups[0]["lr"]
        self.stop = (f"the loss became NaN or Inf at step {bad} (epoch {self.epoch + 1}) with lr {lr:.3g}; "
                     "training stopped, and last.pt and best.pt hold weights from before it; lower lr, or add clip_norm=1")
        return False
