"""The callback protocol: five hooks, all optional, each given the State."""

from __future__ import annotations

import math
from typing import Literal

from cnnfit.engine.scores import direction
from cnnfit.engine.state import State

HOOKS = ("on_fit_start", "on_epoch_start", "on_step_end", "on_epoch_end", "on_fit_end")


class Callback:
    def on_fit_start(self, state: State) -> None: ...
    def on_epoch_start(self, state: State) -> None: ...
    def on_step_end(self, state: State) -> None: ...
    def on_epoch_end(self, state: State) -> None: ...
    def on_fit_end(self, state: State) -> None: ...

    def state_dict(self) -> dict:
        """What the callback must remember across a resume (monitors, counters); plain values only."""
        return {}

    def load_state_dict(self, saved: dict) -> None: ...


TIEBREAK = "val_loss"  # accuracy on 269 images moves in 0.4% steps: a tie goes to the lower loss, then the later epoch


class Monitor:
    """The shared monitor / mode / min_delta vocabulary of early stopping and checkpointing. With `tiebreak` (the
    choice of best.pt), an epoch that ties the best value exactly wins when its validation loss is as low or lower:
    on a small val set ties are common, and the earliest tying epoch is often a noisy early one. Without it (early
    stopping, LR on plateau) only a real improvement counts."""

    def __init__(self, name: str, mode: Literal["min", "max", "auto"] = "auto", min_delta: float = 0.0,
                 tiebreak: bool = False) -> None:
        self.name, self.tiebreak = name, tiebreak and name != TIEBREAK
        self.mode = direction(name) if mode == "auto" else mode
        self.min_delta = min_delta
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = -1
        self.best_loss = math.inf  # the best epoch's TIEBREAK value

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "best_loss": self.best_loss}

    def load_state_dict(self, saved: dict) -> None:
        self.best, self.best_epoch = saved["best"], saved["best_epoch"]
        self.best_loss = saved.get("best_loss", math.inf)  # runs saved before tie-breaking

    def update(self, metrics: dict[str, float], epoch: int) -> bool:
        """True when the monitored value improved by more than min_delta, or (with tiebreak) tied the best with a
        validation loss as low or lower; the epoch is then remembered as the best."""
        value, loss = metrics[self.name], metrics.get(TIEBREAK, math.nan)
        better = value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta
        tie = self.tiebreak and not better and value == self.best and loss <= self.best_loss
        if better or tie:
            self.best, self.best_epoch, self.best_loss = value, epoch, loss
        return better or tie

    @classmethod
    def replay(cls, history: list[dict[str, float]], name: str, mode: Literal["min", "max", "auto"] = "auto",
               min_delta: float = 0.0) -> Monitor:
        """The monitor after the epochs of `history` (history.csv's rows): `best_epoch` is the epoch best.pt
        holds, as Checkpointing chose it while the run trained."""
        monitor = cls(name, mode, min_delta, tiebreak=True)
        for row in history:
            monitor.update(row, row["epoch"])
        return monitor
