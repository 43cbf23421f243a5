"""`repeats=N`: the same recipe over N seeds, each its own run, and the mean and std of every test metric."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from cnnfit.config import Config
from cnnfit.files import new_run_dir
from cnnfit.pipeline.rundir import Run, write_json

log = logging.getLogger(__name__)
_NESTED = ("macro", "micro", "weighted", "roc_auc", "pr_auc", "top_k")  # averages kept as {name: value}


def seeds(cfg: Config) -> tuple[Path, list[Config]]:
    """project/name/ and one config per seed seed..seed+N-1, each trained into project/name/seedS/."""
    parent = new_run_dir(cfg.project, cfg.name)
    return parent, [cfg.model_copy(update={"project": str(parent), "name": f"seed{cfg.train.seed + i}",
                                           "train": cfg.train.model_copy(update={"seed": cfg.train.seed + i,
                                                                                 "repeats": 1})})
                    for i in range(cfg.train.repeats)]


def summarize(parent: Path, runs: list[Run]) -> Run:
    """repeats.json in `parent`, and a Run whose metrics are the mean of each number across the seeds, with the
    whole summary under "repeats"."""
    for r in runs:  # averages such as macro F1 are nested: flatten them to macro.f1
        r.metrics.update({f"{k}.{m}": v for k, d in list(r.metrics.items()) if k in _NESTED
                          and isinstance(d, dict) for m, v in d.items()})
    numbers = {k for r in runs for k, v in r.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    summary: dict[str, Any] = {"runs": [str(r.dir) for r in runs],
                               "seeds": [int(r.dir.name.removeprefix("seed")) for r in runs]}
    for k in sorted(numbers):
        values = np.array([r.metrics[k] for r in runs if k in r.metrics], dtype=float)
        summary[k] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                      "values": values.tolist()}
    write_json(parent / "repeats.json", summary)
    rows = [[k, f"{summary[k]['mean']:.4f}", f"{summary[k]['std']:.4f}"] for k in sorted(numbers)
            if k not in ("num_images", "best_epoch")]
    log.info(f"{len(runs)} seeds\n" + "\n".join("  ".join(r) for r in rows),
             extra={"table": {"title": f"{len(runs)} seeds", "columns": ["metric", "mean", "std"], "rows": rows}})
    return Run(parent, {k: summary[k]["mean"] for k in numbers} | {"repeats": summary})


__all__ = ["seeds", "summarize"]
