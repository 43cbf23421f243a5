from __future__ import annotations

from cnnfit.engine.callbacks.base import Callback, Monitor
from cnnfit.engine.state import State


class ReduceLROnPlateau(Callback):
    """Multiply the LR by `factor` when `monitor` has not improved for `patience` epochs, then wait
    `cooldown` epochs before counting again; never below `min_scale` of the scheduled LR (as in Keras)."""

    def __init__(self, monitor: str = "val_loss", mode: str = "auto", patience: int = 3, factor: float = 0.1,
                 min_delta: float = 0.0, cooldown: int = 0, min_scale: float = 1e-4) -> None:
        self.monitor = Monitor(monitor, mode, min_delta)
        self.patience, self.factor, self.cooldown, self.min_scale = patience, factor, cooldown, min_scale
        self.wait = self.cool = 0

    def state_dict(self) -> dict:
        return {"monitor": self.monitor.state_dict(), "wait": self.wait, "cool": self.cool}

    def load_state_dict(self, saved: dict) -> None:
        self.monitor.load_state_dict(saved["monitor"])
        self.wait, self.cool = saved["wait"], saved["cool"]

    def on_epoch_end(self, state: State) -> None:
        if self.monitor.update(state.metrics, state.epoch):
            self.wait = 0
            return
        if self.cool > 0:
            self.cool -= 1
            return
        self.wait += 1
        if self.wait >= self.patience and state.lr_scale > self.min_scale:
            state.lr_scale = max(state.lr_scale * self.factor, self.min_scale)
            self.wait, self.cool = 0, self.cooldown
