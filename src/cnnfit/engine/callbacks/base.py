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


class Monitor:
    """The shared monitor / mode / min_delta vocabulary of early stopping and checkpointing."""

    def __init__(self, name: str, mode: Literal["min", "max", "auto"] = "auto", min_delta: float = 0.0) -> None:
        self.name = name
        self.mode = direction(name) if mode == "auto" else mode
        self.min_delta = min_delta
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = -1

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, saved: dict) -> None:
        self.best, self.best_epoch = saved["best"], saved["best_epoch"]

    def update(self, metrics: dict[str, float], epoch: int) -> bool:
        """True when the monitored value improved by more than min_delta (and remember it)."""
        value = metrics[self.name]
        better = value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta
        if better:
            self.best, self.best_epoch = value, epoch
        return better

    @classmethod
    def replay(cls, history: list[dict[str, float]], name: str, mode: Literal["min", "max", "auto"] = "auto",
               min_delta: float = 0.0) -> Monitor:
        """The monitor after the epochs of `history` (history.csv's rows): `best_epoch` is the epoch best.pt
        holds, as Checkpointing chose it while the run trained."""
        monitor = cls(name, mode, min_delta)
        for row in history:
            monitor.update(row, row["epoch"])
        return monitor
