from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cnnfit.engine.callbacks.base import Callback
from cnnfit.engine.state import State

_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_f1", "val_macro_f1", "val_mae", "val_r2",
            "lr", "seconds")
_SHOWN = {"val_macro_f1": "val_f1"}  # macro F1 is shown only when there is no plain F1 column


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
        self.columns: list[str] = []
        if self.console.is_terminal:
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                                console=self.console, transient=True)
            self.bar.start()

    def _header(self, metrics: dict) -> None:
        """The columns this task reports, fixed at the first epoch's end."""
        self.columns = [c for c in _COLUMNS if (c in metrics and metrics[c] == metrics[c] or c == "epoch")  # not nan
                        and not (c in _SHOWN and _SHOWN[c] in metrics)]
        self.console.print("  ".join(f"{c:>{max(len(c), 8)}}" for c in self.columns), style="bold")

    def on_epoch_start(self, state: State) -> None:
        self.t0 = time.perf_counter()
        if self.bar is not None:
            self.task = self.bar.add_task(f"epoch {state.epoch + 1}/{state.epochs}", total=state.steps_per_epoch,
                                          info="")

    def on_step_end(self, state: State) -> None:
        if self.bar is None or self.task is None:
            return
        done = state.epoch_step
        if done % self.every == 0 or done == state.steps_per_epoch:
            loss = (state.loss_sum / max(state.seen, 1)).item()
            acc = state.correct.item() / max(state.seen, 1)
            rate = state.seen / max(time.perf_counter() - self.t0, 1e-9)
            shown = f"loss {loss:.4f}" + (f"  acc {acc:.4f}" if acc else "") + f"  {rate:,.0f} img/s"
            self.bar.update(self.task, completed=done, info=shown)

    def on_epoch_end(self, state: State) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.remove_task(self.task)
        m = state.metrics
        if not self.columns:
            self._header(m)
        cells = [f"{state.epoch + 1}/{state.epochs}"] + [
            f"{m[k]:.4g}" if k == "lr" else f"{m[k]:.1f}" if k == "seconds" else f"{m[k]:.4f}"
            for k in self.columns[1:]]
        self.console.print("  ".join(f"{c:>{max(len(k), 8)}}" for c, k in zip(cells, self.columns)))

    def on_fit_end(self, state: State) -> None:
        if self.bar is not None:
            self.bar.stop()
        if state.interrupted:
            self.console.print(f"interrupted by {state.interrupted} at step {state.step}; last.pt holds that step")
        elif state.stop and not state.failed:
            self.console.print(f"stopped early: {state.stop}")
