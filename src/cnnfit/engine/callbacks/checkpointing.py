from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnfit.engine.callbacks.base import Callback, Monitor
from cnnfit.engine.checkpoint import save_checkpoint
from cnnfit.engine.resume import snapshot
from cnnfit.engine.state import State


class Checkpointing(Callback):
    """best.pt when `monitor` improves; last.pt, which resumes the run exactly, at the start, every `every`
    optimizer steps (0: epoch ends only), at every epoch end and when a signal interrupts the run.

    `meta` is what a stranger needs to rebuild the model: name, kwargs, classes, input size, mean/std, config.
    Nothing is written once a loss has gone non-finite: the files keep the last good weights.
    Under data parallelism every rank takes the snapshot (it gathers their RNG states) and only the one
    with `write` (rank 0) writes files.
    """

    def __init__(self, run_dir: Path, meta: dict[str, Any], monitor: str = "val_acc", mode: str = "auto",
                 min_delta: float = 0.0, every: int = 0, write: bool = True) -> None:
        self.run_dir, self.meta, self.every, self.write = Path(run_dir), meta, every, write
        self.monitor = Monitor(monitor, mode, min_delta, tiebreak=True)  # ties go to the lower val loss

    def state_dict(self) -> dict:
        return self.monitor.state_dict()

    def load_state_dict(self, saved: dict) -> None:
        self.monitor.load_state_dict(saved)

    def _ckpt(self, state: State) -> dict[str, Any]:
        return {**self.meta, "state_dict": state.eval_model.state_dict(), "epoch": state.epoch,
                "step": state.step, "metrics": dict(state.metrics)}

    def _save(self, state: State, ckpt: dict[str, Any], name: str) -> None:
        """A failed write (a full disk) stops the run with the reason and what is left: the previous file stays
        whole, and the way on is a resume only when a last.pt exists to resume from."""
        if not self.write:
            return
        try:
            save_checkpoint(ckpt, self.run_dir / name)
        except OSError as exc:
            state.failed = True
            kept = f"the previous {name} is intact" if (self.run_dir / name).is_file() else f"no {name} was written yet"
            then = (f"resume with cnnfit train resume={self.run_dir}" if (self.run_dir / "last.pt").is_file()
                    else "train again")
            state.stop = (f"writing {self.run_dir / name} failed at step {state.step} ({exc.strerror or exc}); "
                          f"{kept}: free space, then {then}")

    def save_last(self, state: State) -> None:
        if not state.check_finite():
            return
        self._save(state, {**self._ckpt(state), "model_state": state.model.state_dict(), **snapshot(state)}, "last.pt")

    def on_fit_start(self, state: State) -> None:
        if state.step == 0:  # a resumable starting point, so even a first-step failure leaves a good last.pt
            self.save_last(state)

    def on_step_end(self, state: State) -> None:
        if state.interrupted or (self.every and state.step % self.every == 0
                                 and state.epoch_step < state.steps_per_epoch):
            self.save_last(state)

    def on_epoch_end(self, state: State) -> None:
        if not state.check_finite():
            return
        if self.monitor.update(state.metrics, state.epoch):
            self._save(state, self._ckpt(state), "best.pt")
        if not state.failed:
            self.save_last(state)
