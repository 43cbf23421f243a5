from __future__ import annotations

import signal
import threading

from cnnfit.engine.callbacks.base import Callback
from cnnfit.engine.state import State


class CatchSignals(Callback):
    """Ctrl-C or SIGTERM (a scheduler's preemption) ends the run at the next step boundary with last.pt
    written, so `resume=` continues exactly; a second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.previous: dict[int, object] = {}

    def on_fit_start(self, state: State) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may own signal handlers

        def handler(signum: int, frame: object) -> None:
            if state.signal:  # the second one: give up on a clean stop
                self.restore()
                raise KeyboardInterrupt
            state.signal = signal.Signals(signum).name  # the loop acts on it at the next step boundary

        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, handler)

    def on_fit_end(self, state: State) -> None:
        self.restore()

    def restore(self) -> None:
        for sig, old in self.previous.items():
            signal.signal(sig, old)
        self.previous.clear()
