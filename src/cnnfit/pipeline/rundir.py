"""The one owner of a run directory's files: what `runs/<name>/` holds, written and read only through here.

    config.yaml  split.json  skipped.txt  init.json   written once, before training (`start`)
    best.pt  last.pt  history.csv                     the engine's checkpointing and history callbacks
    metrics.json  predictions.csv  thresholds.json    the test scores (`write_scores`)
    data_report.json  clean_manifest.csv  plots/  report.html  lr_find.json  repeats.json
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnfit import distributed
from cnnfit.config import Config, to_yaml
from cnnfit.engine import save_checkpoint
from cnnfit.errors import CnnfitError
from cnnfit.files import new_run_dir, write_atomic, write_csv


@dataclass
class Run:
    """What `cnnfit.train` returns: the run directory and its test metrics."""

    dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        if "accuracy" not in self.metrics:
            raise CnnfitError(f"a {self.metrics.get('task')} run has no accuracy; use run.score or run.metrics")
        return self.metrics["accuracy"]

    @property
    def score(self) -> float:
        """The task's headline test figure: accuracy (classify), micro F1 (multilabel), R^2 (regress)."""
        task = self.metrics.get("task", "classify")
        if task == "multilabel":
            return self.metrics["micro"]["f1"]
        return self.metrics["r2"] if task == "regress" else self.metrics["accuracy"]


def finished(run: str | Path) -> Path:
    """A run directory that holds a best.pt, or the error that says what to pass."""
    path = Path(run)
    if not (path / "best.pt").is_file():
        raise CnnfitError(f"'{run}' is not a finished run directory (no best.pt); pass e.g. runs/train")
    return path


def start(cfg: Config, resolved: Config, *, run_dir: Path | None, parts: dict[str, np.ndarray], split_how: str,
          skipped: list, init: Any, ctx: distributed.Dist, held: contextlib.ExitStack) -> Path:
    """The run's directory, created only now that every input is checked (a resumed run keeps its own) and locked
    in `held` (see `lock`), with what the run is: config.yaml, split.json, skipped.txt, init.json. Under data
    parallelism rank 0 alone writes, and tells the other ranks the name."""
    resumed = run_dir is not None
    if not resumed:
        run_dir = distributed.broadcast(new_run_dir(cfg.project, cfg.name) if ctx.main else None, ctx)
    held.enter_context(lock(run_dir, ctx))
    if not ctx.main:
        return run_dir
    if not resumed:
        split = {k: v.tolist() for k, v in parts.items()}
        write_atomic(run_dir / "split.json", json.dumps({"how": split_how, "seed": cfg.train.seed, **split}))
    write_atomic(run_dir / "config.yaml", to_yaml(resolved))
    if skipped:
        write_atomic(run_dir / "skipped.txt", "".join(f"{f}\t{why}\n" for f, why in skipped))
    if init is not None:
        write_json(run_dir / "init.json", asdict(init), indent=1)
    distributed.write_run_dir(ctx, run_dir)
    return run_dir


@contextlib.contextmanager
def lock(run_dir: Path, ctx: distributed.Dist = distributed.SINGLE) -> Iterator[None]:
    """RUN/.lock held while this process writes the run (trains, resumes or calibrates it), so a second writer is
    refused at once instead of interleaving its checkpoints with ours. The OS drops the lock when the process
    dies: a killed run leaves none behind. Under data parallelism rank 0 holds it for the job; within a process
    it is reentrant, so the evaluation at the end of a run takes it again."""
    from filelock import FileLock, Timeout

    if not ctx.main:
        yield
        return
    held = FileLock(run_dir / ".lock", is_singleton=True)  # one per file: this process may take it again
    try:
        held.acquire(timeout=0)
    except Timeout:
        raise CnnfitError(f"{run_dir} is being written by another cnnfit process (training, resuming or "
                          "calibrating it); wait for it to end, or work on a copy of the folder") from None
    try:
        yield
    finally:
        held.release()


def split_changed(run_dir: Path, parts: dict[str, np.ndarray]) -> str | None:
    """Why the data's split no longer matches the run's split.json, or None when it does."""
    saved = read_json(run_dir / "split.json")
    for name, idx in parts.items():
        if saved.get(name) != idx.tolist():
            return f"its {name} split has {len(saved.get(name, []))} images, the data now gives {len(idx)}"
    return None


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file of the run, or {} when it is absent."""
    return json.loads(path.read_text()) if path.is_file() else {}


def write_json(path: Path, value: Any, indent: int = 2) -> Path:
    return write_atomic(path, json.dumps(value, indent=indent, default=str))


def write_scores(out_dir: Path, metrics: dict[str, Any], header: list[str], rows: list[list]) -> None:
    """metrics.json and predictions.csv (one row per scored image: index, file, then the task's columns)."""
    write_json(out_dir / "metrics.json", metrics)
    write_csv(out_dir / "predictions.csv", header, rows)


def save_best(run_dir: Path, ckpt: dict[str, Any]) -> None:
    """best.pt rewritten (atomically) with what evaluation fitted on val (the temperature, the reject threshold), so
    predict, serve and export apply it too."""
    save_checkpoint(ckpt, run_dir / "best.pt")


def eval_dir(run_dir: Path, source: str) -> Path:
    """RUN/eval_<name>/ for scores on another dataset, leaving the run's own files alone."""
    import re

    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(source.rstrip("/")).name or source).strip("_.") or "data"
    out = run_dir / f"eval_{name}"
    out.mkdir(exist_ok=True)
    return out


__all__ = ["Run", "eval_dir", "finished", "lock", "read_json", "save_best", "split_changed", "start",
           "write_json", "write_scores"]
