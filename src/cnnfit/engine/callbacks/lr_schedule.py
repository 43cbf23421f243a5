from __future__ import annotations

from typing import Callable

from cnnfit.engine.callbacks.base import Callback
from cnnfit.engine.state import State

_MAX_POINTS = 2000  # LR trace points kept for the plot: a curve needs no more, and resume state stays small


class LRSchedule(Callback):
    """Set every group's LR to its base LR times `factor(step)` (times the plateau scale) before each step, and
    keep a trace of (step, LR of the first group) for the LR plot, thinned to at most _MAX_POINTS."""

    def __init__(self, factor: Callable[[int], float]) -> None:
        self.factor = factor
        self.base: list[float] = []
        self.trace: list[tuple[int, float]] = []
        self.stride = 1

    def _apply(self, state: State) -> None:
        scale = self.factor(state.step) * state.lr_scale
        for group, base in zip(state.optimizer.param_groups, self.base):
            group["lr"] = base * scale
        if self.base and state.step % self.stride == 0 and (not self.trace or self.trace[-1][0] < state.step):
            self.trace.append((state.step, self.base[0] * scale))
            if len(self.trace) > _MAX_POINTS:  # keep every other point and record half as often from now on
                self.stride *= 2
                self.trace = [p for p in self.trace if p[0] % self.stride == 0]

    def on_fit_start(self, state: State) -> None:
        self.base = [g.setdefault("initial_lr", g["lr"]) for g in state.optimizer.param_groups]
        self._apply(state)

    def on_step_end(self, state: State) -> None:
        self._apply(state)

    def state_dict(self) -> dict:
        return {"trace": list(self.trace), "stride": self.stride}

    def load_state_dict(self, saved: dict) -> None:
        self.trace, self.stride = [tuple(p) for p in saved.get("trace", [])], saved.get("stride", 1)
