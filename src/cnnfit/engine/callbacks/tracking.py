"""What the experiment trackers (MLflowRun, WandbRun) share. A tracker watches a run and never steers it: the first
error from its client warns once, in one line, and turns the tracker off, so training goes on and never waits on a
dead server again; nothing in the run directory depends on it. A run that fails or is interrupted still ends its
tracker run, marked as such (`ending`)."""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import logging
import math
import numbers
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cnnfit.engine.callbacks.base import Callback
from cnnfit.engine.state import State
from cnnfit.errors import CnnfitError, one_line
from cnnfit.files import write_atomic

log = logging.getLogger(__name__)

INSTALL = "pip install 'cnnfit[track]'"
MODULES = {"mlflow": "mlflow", "wandb": "wandb"}  # track= name -> the client package it imports
IDS_FILE = "tracking.json"  # in the run directory: each tracker's run id, to match the run with its tracker run
Status = Literal["FINISHED", "FAILED", "KILLED"]  # MLflow's names for how a run ended


@dataclass(frozen=True)
class Parent:
    """The tracker run a run belongs under: a tuning study's. Trials may run in spawned worker processes, so it
    travels as plain, picklable values."""

    name: str  # the study's name: wandb groups its trials by it
    mlflow_run_id: str | None = None  # the study's MLflow run: each trial is a nested run under it
    mlflow_uri: str | None = None  # the store the study's run is in: its trials log there too
    mlflow_experiment_id: str | None = None


class Tracker(Callback):
    """What MLflowRun and WandbRun share: the run they watch, the state `guarded` reads (`broken`), and a start that
    takes a resumed run's earlier epochs. Subclasses set `label` (the track= name) and `env`, and define `start`."""

    label = ""
    env: dict[str, str] = {}  # environment defaults while the client is called (see guarded)

    def __init__(self, run_dir: Path, *, params: dict[str, Any], parent: Parent | None = None) -> None:
        client(self.label)  # a missing package is an error now, before training
        self.run_dir, self.params, self.parent = Path(run_dir), params, parent
        self.broken: str | None = None  # the error that turned the tracker off
        self.ended, self.step = False, 0

    def on_fit_start(self, state: State) -> None:
        self.start(state.history)

    def start(self, history: Any = ()) -> None:
        raise NotImplementedError


def client(name: str) -> Any:
    """The tracker's client package, imported where it is used, or the error that names the extra to install."""
    try:
        return importlib.import_module(MODULES[name])
    except ImportError:
        raise CnnfitError(f"track={name} needs the {name} package, which is not installed; {INSTALL}") from None


def require(names: Iterable[str]) -> None:
    """Import each named tracker's client now, before anything is written: a missing one is a one-line error."""
    for name in names:
        client(name)


def numeric(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The real numbers among `metrics`' top-level values (no bools, nested dicts or text), keys prefixed; the epoch
    number is left out: trackers use it as the step."""
    return {f"{prefix}{k}": float(v) for k, v in metrics.items()
            if k != "epoch" and isinstance(v, numbers.Real) and not isinstance(v, bool)}


def finite(metrics: dict[str, float]) -> dict[str, float]:
    """The finite values: a merge_val run's val columns are nan (val is not scored), which would only stand as the
    tracker's latest value of a curve that has no points."""
    return {k: v for k, v in metrics.items() if math.isfinite(v)}


def guarded(hook: Callable) -> Callable:
    """A tracker method that never stops training: while it runs, the tracker's `env` defaults apply (MLflow's retry
    and timeout limits); its first error warns once and sets `broken`, after which every guarded method returns
    None at once, without calling the client."""

    @functools.wraps(hook)
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.broken:
            return None
        try:
            with env_defaults(self.env):
                return hook(self, *args, **kwargs)
        except Exception as exc:  # any client error (server gone, bad response): tracking stops, training does not
            self.broken = f"{type(exc).__name__}: {one_line(exc, limit=400)}"  # MLflow's messages end with the cause
            log.warning(f"{self.label} tracking stopped, training goes on: {self.broken}")
            return None

    return run


@contextlib.contextmanager
def env_defaults(values: dict[str, str]) -> Iterator[None]:
    """Environment variables set for the block where the user has not set them, and removed again after it."""
    added = [k for k in values if k not in os.environ]
    os.environ.update({k: values[k] for k in added})
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


@contextlib.contextmanager
def ending(trackers: list) -> Iterator[None]:
    """End each tracker's run when the block does: FAILED when it raises (the error goes on), KILLED for Ctrl-C or
    a signal (exit 130); after a clean block, those its `finish` has not ended yet as FINISHED."""
    try:
        yield
    except BaseException as exc:
        interrupted = isinstance(exc, KeyboardInterrupt) or getattr(exc, "code", None) == 130
        for tracker in trackers:
            tracker.end("KILLED" if interrupted else "FAILED")
        raise
    for tracker in trackers:
        tracker.end("FINISHED")


def record_id(run_dir: Path, name: str, ids: dict[str, Any]) -> None:
    """Add the tracker's run ids under `name` to the run directory's tracking.json (other trackers' entries kept)."""
    path = Path(run_dir) / IDS_FILE
    saved = json.loads(path.read_text()) if path.is_file() else {}
    write_atomic(path, json.dumps({**saved, name: ids}, indent=2) + "\n")


__all__ = ["IDS_FILE", "INSTALL", "Parent", "Status", "Tracker", "client", "ending", "env_defaults", "finite", "guarded",
           "numeric", "record_id", "require"]
