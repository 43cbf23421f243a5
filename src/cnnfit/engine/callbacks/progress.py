from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cnnfit.engine.callbacks.base import Callback
from cnnfit.engine.state import State

_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")


class ProgressBar(Callback):
    """A live bar (loss, accuracy, images/s, ETA) on terminals, and one table row per epoch everywhere.

    Reading the loss syncs the device, so the bar refreshes every `every` steps, not every step.
    """

    def __init__(self, console: Console | None = None, every: int = 25) -> None:
        self.console = console or Console()
        self.every = every
        self.bar: Progress | None = None
        self.task = None

    def on_fit_start(self, state: State) -> None:
        widths = [7, 11, 10, 9, 8, 10, 8]
        self.console.print("  ".join(f"{c:>{w}}" for c, w in zip(_COLUMNS, widths)), style="bold")
        self.widths = widths
        if self.console.is_terminal:
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                                console=self.console, transient=True)
            self.bar.start()

    def on_epoch_start(self, state: State) -> None:
        self.t0 = time.perf_counter()
        if self.bar is not None:
            self.task = self.bar.add_task(f"epoch {state.epoch + 1}/{state.epochs}", total=state.steps_per_epoch,
                                          info="")

    def on_step_end(self, state: State) -> None:
        if self.bar is None or self.task is None:
            return
        done = state.step - state.epoch * state.steps_per_epoch
        if done % self.every == 0 or done == state.steps_per_epoch:
            loss = (state.loss_sum / max(state.seen, 1)).item()
            acc = state.correct.item() / max(state.seen, 1)
            rate = state.seen / max(time.perf_counter() - self.t0, 1e-9)
            self.bar.update(self.task, completed=done, info=f"loss {loss:.4f}  acc {acc:.4f}  {rate:,.0f} img/s")

    def on_epoch_end(self, state: State) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.remove_task(self.task)
        m = state.metrics
        cells = [f"{state.epoch + 1}/{state.epochs}"] + [
            f"{m[k]:.4g}" if k in ("lr",) else f"{m[k]:.1f}" if k == "seconds" else f"{m[k]:.4f}"
            for k in _COLUMNS[1:]]
        self.console.print("  ".join(f"{c:>{w}}" for c, w in zip(cells, self.widths)))

    def on_fit_end(self, state: State) -> None:
        if self.bar is not None:
            self.bar.stop()
        if state.stop:
            self.console.print(f"stopped early: {state.stop}")
