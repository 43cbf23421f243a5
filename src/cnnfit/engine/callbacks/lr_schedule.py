from __future__ import annotations

from typing import Callable

from cnnfit.engine.callbacks.base import Callback
from cnnfit.engine.callbacks.time_budget import TimeBudget
from cnnfit.engine.state import State

_MAX_POINTS = 2000  # LR trace points kept for the plot: a curve needs no more, and resume state stays small


class LRSchedule(Callback):
    """Set every group's LR to its base LR times `factor(step)` (times the plateau scale) before each step, and
    keep a trace of (step, LR of the first group) for the LR plot, thinned to at most _MAX_POINTS.

    With a time budget (`budget`, the run's TimeBudget, and `total` steps), the schedule runs over whichever ends
    first: at step s after t of T seconds it is at step max(s, total * t / T), so a run the budget ends still
    finishes its decay, where a step schedule cut short would end at a high LR."""

    def __init__(self, factor: Callable[[int], float], *, budget: TimeBudget | None = None, total: int = 0) -> None:
        self.factor = factor
        self.budget, self.total = budget, total
        self.base: list[float] = []
        self.trace: list[tuple[int, float]] = []
        self.stride = 1

    def _apply(self, state: State) -> None:
        step = state.step
        if self.budget is not None:
            step = max(step, min(self.total, int(self.total * self.budget.elapsed() / self.budget.seconds)))
        scale = self.factor(step) * state.lr_scale
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
