from __future__ import annotations

import logging
import time

from cnnfit.engine.callbacks.base import Callback
from cnnfit.engine.state import State

log = logging.getLogger(__name__)

_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_f1", "val_macro_f1", "val_mae", "val_r2",
            "lr", "seconds")
_SHOWN = {"val_macro_f1": "val_f1"}  # macro F1 is shown only when there is no plain F1 column


class ProgressBar(Callback):
    """One table row per epoch (info lines), and a live bar of loss, accuracy and images/s as DEBUG records with
    extra["progress"], which the CLI draws on terminals.

    Reading the loss syncs the device, so the bar refreshes every `every` steps, and only while DEBUG is enabled.
    """

    def __init__(self, every: int = 25) -> None:
        self.every = every
        self.columns: list[str] = []

    def _bar(self, state: State, completed: int, info: str = "", done: bool = False) -> None:
        task = f"epoch {state.epoch + 1}/{state.epochs}"
        log.debug(f"{task} {completed}/{state.steps_per_epoch} {info}".rstrip(), extra={"progress": {
            "task": task, "completed": completed, "total": state.steps_per_epoch, "info": info, "done": done}})

    def on_fit_start(self, state: State) -> None:
        self.columns = []

    def on_epoch_start(self, state: State) -> None:
        self.t0 = time.perf_counter()
        if log.isEnabledFor(logging.DEBUG):
            self._bar(state, 0)

    def on_step_end(self, state: State) -> None:
        done = state.epoch_step
        if log.isEnabledFor(logging.DEBUG) and (done % self.every == 0 or done == state.steps_per_epoch):
            loss = (state.loss_sum / max(state.seen, 1)).item()
            acc = state.correct.item() / max(state.seen, 1)
            rate = state.seen / max(time.perf_counter() - self.t0, 1e-9)
            self._bar(state, done, f"loss {loss:.4f}" + (f"  acc {acc:.4f}" if acc else "") + f"  {rate:,.0f} img/s")

    def on_epoch_end(self, state: State) -> None:
        if log.isEnabledFor(logging.DEBUG):
            self._bar(state, state.epoch_step, done=True)
        m = state.metrics
        if not self.columns:  # the columns this task reports, fixed at the first epoch's end
            self.columns = [c for c in _COLUMNS if (c in m and m[c] == m[c] or c == "epoch")  # not nan
                            and not (c in _SHOWN and _SHOWN[c] in m)]
            log.info("  ".join(f"{c:>{max(len(c), 8)}}" for c in self.columns), extra={"style": "bold"})
        cells = [f"{state.epoch + 1}/{state.epochs}"] + [
            f"{m[k]:.4g}" if k == "lr" else f"{m[k]:.1f}" if k == "seconds" else f"{m[k]:.4f}"
            for k in self.columns[1:]]
        log.info("  ".join(f"{c:>{max(len(k), 8)}}" for c, k in zip(cells, self.columns)))

    def on_fit_end(self, state: State) -> None:
        log.debug("progress stop", extra={"progress": {"stop": True}})
        if state.interrupted:
            log.info(f"interrupted by {state.interrupted} at step {state.step}; last.pt holds that step")
        elif state.stop and not state.failed:
            log.info(f"stopped early: {state.stop}")
