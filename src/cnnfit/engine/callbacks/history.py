from __future__ import annotations

import csv
from pathlib import Path

from cnnfit.engine.callbacks.base import Callback
from cnnfit.engine.state import State


class History(Callback):
    """Write every epoch's metrics to a CSV, rewritten whole each epoch so it is always complete."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_epoch_end(self, state: State) -> None:
        tmp = self.path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(state.history[0]))
            writer.writeheader()
            writer.writerows(state.history)
        tmp.replace(self.path)
