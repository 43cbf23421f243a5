from __future__ import annotations

from typing import Callable

from cnnfit.engine.callbacks.base import Callback
from cnnfit.engine.state import State


class LRSchedule(Callback):
    """Set every group's LR to its base LR times `factor(step)` (times the plateau scale) before each step."""

    def __init__(self, factor: Callable[[int], float]) -> None:
        self.factor = factor
        self.base: list[float] = []

    def _apply(self, state: State) -> None:
        scale = self.factor(state.step) * state.lr_scale
        for group, base in zip(state.optimizer.param_groups, self.base):
            group["lr"] = base * scale

    def on_fit_start(self, state: State) -> None:
        self.base = [g.setdefault("initial_lr", g["lr"]) for g in state.optimizer.param_groups]
        self._apply(state)

    def on_step_end(self, state: State) -> None:
        self._apply(state)
