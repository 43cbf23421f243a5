from __future__ import annotations

import time

from cnnfit.engine.callbacks.base import Callback
from cnnfit.engine.state import State


class TimeBudget(Callback):
    """End the run cleanly once `minutes` of training have passed: the current (partial) epoch is validated
    and checkpointed like any other, so the run finishes with its best weights evaluated."""

    def __init__(self, minutes: float) -> None:
        self.seconds = minutes * 60
        self.t0 = 0.0

    def on_fit_start(self, state: State) -> None:
        self.t0 = time.perf_counter()

    def on_step_end(self, state: State) -> None:
        if not state.stop and time.perf_counter() - self.t0 > self.seconds:
            state.stop = f"time budget of {self.seconds / 60:g} minutes reached"
