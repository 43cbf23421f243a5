from __future__ import annotations

import time

from cnnfit.engine.callbacks.base import Callback
from cnnfit.engine.state import State


class TimeBudget(Callback):
    """End the run cleanly once `minutes` of training have passed: the current (partial) epoch is validated
    and checkpointed like any other, so the run finishes with its best weights evaluated. A resumed run counts
    the time its earlier processes spent."""

    def __init__(self, minutes: float) -> None:
        self.seconds = minutes * 60
        self.t0: float | None = None  # set when training starts
        self.spent = 0.0  # seconds of training before this process

    def elapsed(self) -> float:
        return self.spent + (time.perf_counter() - self.t0 if self.t0 is not None else 0.0)

    def on_fit_start(self, state: State) -> None:
        self.t0 = time.perf_counter()

    def on_step_end(self, state: State) -> None:
        if not state.stop and self.elapsed() > self.seconds:
            state.stop = f"time budget of {self.seconds / 60:g} minutes reached"

    def state_dict(self) -> dict:
        return {"spent": self.elapsed()}

    def load_state_dict(self, saved: dict) -> None:
        self.spent = float(saved.get("spent", 0.0))
