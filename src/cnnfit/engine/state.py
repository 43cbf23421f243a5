"""Everything the loop and its callbacks share, in one flat, explicit object."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import torch

from cnnfit.distributed import SINGLE, Dist


class Batches(Protocol):
    """The training data `fit` takes (DeviceLoader is one): an epoch's batches in an order drawn from
    `order_generator`, augmented from `generator`; both are saved, so a run resumes mid-epoch exactly."""

    batch: int  # images per batch, over all ranks
    num_images: int  # images per epoch, over all ranks
    generator: torch.Generator
    order_generator: torch.Generator

    def __len__(self) -> int: ...  # batches per epoch
    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...  # a new epoch from batch 0
    def new_order(self) -> torch.Tensor | None: ...  # the next epoch's order (None: in index order)
    def iterate(self, order: torch.Tensor | None, first: int = 0,
                epoch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...  # (x, y) from batch `first` on


@dataclass
class State:
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    epochs: int
    steps_per_epoch: int  # optimizer steps (batches / accumulate, rounded up)
    epoch: int = 0  # 0-based index of the current epoch
    step: int = 0  # optimizer steps taken since the start
    epoch_step: int = 0  # optimizer steps taken in the current epoch
    metrics: dict[str, float] = field(default_factory=dict)  # the last finished epoch
    history: list[dict[str, float]] = field(default_factory=list)
    stop: str | None = None  # a callback sets the reason; the loop ends after the current step
    failed: bool = False  # the stop is an error (a non-finite loss): nothing after it may be saved
    signal: str | None = None  # a signal just caught (set by the handler, at any moment)
    interrupted: str | None = None  # a signal the loop has acted on: last.pt is saved at this step boundary
    lr_scale: float = 1.0  # multiplies the scheduled LR (ReduceLROnPlateau lowers it)
    # what exact resume needs beside model and optimizer
    loader: Batches | None = None  # the training batches: their generators draw orders, augmentations, mixing
    order: torch.Tensor | None = None  # this epoch's sample order
    callbacks: list = field(default_factory=list)
    dist: Dist = SINGLE  # this process's rank and the world size (data-parallel training)
    scaler: torch.amp.GradScaler = field(default_factory=lambda: torch.amp.GradScaler(enabled=False))  # fp16 only
    ema: torch.optim.swa_utils.AveragedModel | None = None
    # running sums of the current epoch, kept on the device so steps never wait for the host
    loss_sum: torch.Tensor = field(default_factory=lambda: torch.zeros(()))
    correct: torch.Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.long))
    seen: int = 0
    bad_step: torch.Tensor = field(default_factory=lambda: torch.tensor(-1))  # first non-finite loss's step, or -1

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def epoch_done(self) -> bool:  # validated: its row is in history, and its end hooks are running or have run
        return bool(self.history) and self.history[-1]["epoch"] == self.epoch + 1

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights that are validated and saved as best.pt: the EMA when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def check_finite(self) -> bool:
        """Sync once and stop the run, with the step number, if any loss so far was NaN or Inf."""
        if self.failed:
            return False
        bad = int(self.bad_step)
        if bad < 0:
            return True
        self.failed = True
        lr = self.optimizer.param_groups[0]["lr"]
        self.stop = (f"the loss became NaN or Inf at step {bad} (epoch {self.epoch + 1}) with lr {lr:.3g}; "
                     "training stopped, and last.pt and best.pt hold weights from before it; lower lr, or add clip_norm=1")
        return False
