from __future__ import annotations

import torch

from cnnfit.engine.callbacks.base import Callback
from cnnfit.engine.state import State

DECAY = 0.95  # per step: the slow copy keeps DECAY**every of itself at each sync, at the end of the run


class Lookahead(Callback):
    """Every `every` steps the slow copy moves part way to the weights, and the weights jump back to it
    (Zhang et al., 2019): the fast optimizer explores, the slow copy averages out its noise. As in airbench, the
    pull grows over the run, from nothing at the start to DECAY**every at the end ((t / T)**3 of it), and the run
    ends on the slow weights. Batch-norm statistics are averaged with the weights they belong to.

    First in the callback list: checkpoints written at a step's end then hold the weights after the sync."""

    def __init__(self, every: int) -> None:
        if every < 1:
            raise ValueError(f"lookahead every={every}; use a number of steps >= 1 (5 is usual)")
        self.every = every
        self.slow: list[torch.Tensor] | None = None

    def _live(self, state: State) -> list[torch.Tensor]:
        return [t for t in state.model.state_dict().values() if t.is_floating_point()]

    def on_fit_start(self, state: State) -> None:
        live = self._live(state)
        if self.slow is None:
            self.slow = [t.detach().clone() for t in live]
        else:  # resumed: the saved slow copy, on the model's device
            self.slow = [s.to(t.device, t.dtype) for s, t in zip(self.slow, live)]

    @torch.no_grad()
    def on_step_end(self, state: State) -> None:
        step, total = state.step, state.total_steps
        if step % self.every and step < total:
            return
        live = self._live(state)
        if step % self.every == 0:
            keep = DECAY**self.every * min(step / max(total, 1), 1.0) ** 3  # the slow copy's share of itself
            torch._foreach_lerp_(self.slow, live, 1.0 - keep)
        torch._foreach_copy_(live, self.slow)

    def state_dict(self) -> dict:
        return {"slow": [t.detach().cpu() for t in self.slow]} if self.slow is not None else {}

    def load_state_dict(self, saved: dict) -> None:
        if saved.get("slow") is not None:
            self.slow = list(saved["slow"])
