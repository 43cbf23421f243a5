from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnfit.engine.callbacks.base import Callback, Monitor
from cnnfit.engine.checkpoint import rng_states, save_checkpoint
from cnnfit.engine.state import State


class Checkpointing(Callback):
    """best.pt when `monitor` improves; last.pt (with optimizer and RNG states) after every epoch.

    `meta` is what a stranger needs to rebuild the model: name, kwargs, classes, input size, mean/std, config.
    """

    def __init__(self, run_dir: Path, meta: dict[str, Any], monitor: str = "val_acc", mode: str = "auto",
                 min_delta: float = 0.0) -> None:
        self.run_dir, self.meta = Path(run_dir), meta
        self.monitor = Monitor(monitor, mode, min_delta)

    def _ckpt(self, state: State) -> dict[str, Any]:
        return {**self.meta, "state_dict": state.model.state_dict(), "epoch": state.epoch,
                "metrics": dict(state.metrics)}

    def on_epoch_end(self, state: State) -> None:
        if self.monitor.update(state.metrics, state.epoch):
            save_checkpoint(self._ckpt(state), self.run_dir / "best.pt")
        last = {**self._ckpt(state), "optimizer": state.optimizer.state_dict(), "step": state.step,
                "rng": rng_states(), "history": list(state.history)}
        save_checkpoint(last, self.run_dir / "last.pt")
