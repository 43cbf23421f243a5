"""`repeats=N`: the same recipe over N seeds, each its own run, and the mean and std of every test metric."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
from rich.console import Console
from rich.table import Table

from cnnfit.config import Config
from cnnfit.prepare import new_run_dir

_NESTED = ("macro", "micro", "weighted", "roc_auc", "pr_auc", "top_k")  # averages kept as {name: value}


def repeat(cfg: Config, console: Console, train_one: Callable[[Config], Any]) -> tuple[Path, dict[str, Any]]:
    """Seeds seed..seed+N-1, each trained by `train_one` into project/name/seedS/; repeats.json in project/name/.
    Returns that folder and the mean of each number, with the whole summary under "repeats"."""
    parent = new_run_dir(cfg.project, cfg.name)
    runs = []
    for i in range(cfg.train.repeats):
        seed = cfg.train.seed + i
        console.print(f"[bold]repeat {i + 1}/{cfg.train.repeats}: seed {seed}[/]")
        one = cfg.model_copy(update={"project": str(parent), "name": f"seed{seed}",
                                     "train": cfg.train.model_copy(update={"seed": seed, "repeats": 1})})
        runs.append(train_one(one))
    for r in runs:  # averages such as macro F1 are nested: flatten them to macro.f1
        r.metrics.update({f"{k}.{m}": v for k, d in list(r.metrics.items()) if k in _NESTED
                          and isinstance(d, dict) for m, v in d.items()})
    numbers = {k for r in runs for k, v in r.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    summary: dict[str, Any] = {"runs": [str(r.dir) for r in runs], "seeds": [cfg.train.seed + i for i in range(len(runs))]}
    for k in sorted(numbers):
        values = np.array([r.metrics[k] for r in runs if k in r.metrics], dtype=float)
        summary[k] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                      "values": values.tolist()}
    (parent / "repeats.json").write_text(json.dumps(summary, indent=2))
    table = Table(title=f"{len(runs)} seeds", box=None)
    for col in ("metric", "mean", "std"):
        table.add_column(col)
    for k in sorted(numbers):
        if k not in ("num_images", "best_epoch"):
            table.add_row(k, f"{summary[k]['mean']:.4f}", f"{summary[k]['std']:.4f}")
    console.print(table)
    return parent, {k: summary[k]["mean"] for k in numbers} | {"repeats": summary}
