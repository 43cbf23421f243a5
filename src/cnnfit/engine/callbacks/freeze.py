from __future__ import annotations

from cnnfit.engine import finetune
from cnnfit.engine.callbacks.base import Callback
from cnnfit.engine.state import State


class Freeze(Callback):
    """Keep the named stages frozen (weights and batch-norm statistics), for `epochs` epochs or for the whole run.

    The optimizer holds the frozen parameters from the start: with no gradient they are skipped, and on
    unfreezing they train at their own group's LR (the backbone multiplier) with fresh moments."""

    def __init__(self, names: list[str], epochs: int | None = None) -> None:
        self.names, self.epochs = names, epochs
        self.frozen = False

    def on_fit_start(self, state: State) -> None:
        finetune.set_frozen(state.model, self.names, True)
        self.frozen = True

    def on_epoch_start(self, state: State) -> None:
        if self.frozen and self.epochs is not None and state.epoch >= self.epochs:
            finetune.set_frozen(state.model, self.names, False)
            self.frozen = False
        if self.frozen:
            finetune.norms_to_eval(state.model, self.names)  # the loop has just called model.train()
