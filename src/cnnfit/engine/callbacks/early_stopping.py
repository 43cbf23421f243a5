from __future__ import annotations

import copy

from cnnfit.engine.callbacks.base import Callback, Monitor
from cnnfit.engine.state import State


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved for `patience` epochs; optionally restore the best weights."""

    def __init__(self, monitor: str = "val_acc", mode: str = "auto", patience: int = 5, min_delta: float = 0.0,
                 restore_best: bool = True) -> None:
        self.monitor = Monitor(monitor, mode, min_delta)
        self.patience, self.restore_best = patience, restore_best
        self.best_weights = None

    def state_dict(self) -> dict:
        return {"monitor": self.monitor.state_dict(), "best_weights": self.best_weights}

    def load_state_dict(self, saved: dict) -> None:
        self.monitor.load_state_dict(saved["monitor"])
        self.best_weights = saved["best_weights"]

    def on_epoch_end(self, state: State) -> None:
        if self.monitor.update(state.metrics, state.epoch):
            if self.restore_best:
                self.best_weights = copy.deepcopy(state.eval_model.state_dict())
        elif state.epoch - self.monitor.best_epoch >= self.patience:
            state.stop = f"no {self.monitor.name} improvement in {self.patience} epochs"

    def on_fit_end(self, state: State) -> None:
        if self.restore_best and self.best_weights is not None:
            state.eval_model.load_state_dict(self.best_weights)
