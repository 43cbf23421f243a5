"""`cnnfit tune`: an Optuna study in which every trial is an ordinary cnnfit run, scored on the val split.

One study lives in a storage (a SQLite file in the tune directory, or a PostgreSQL URL shared by machines that run
the same command). Trials are claimed from it one at a time, so processes on one machine (`workers=N`) and on
several machines share the work without running a grid point twice. A killed search continues with resume=true:
trials that were running when it died are run again. The test split is touched once, by the final refit.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from cnnfit import models
from cnnfit.config import Config, TuneConfig
from cnnfit.engine.callbacks.base import Callback, Monitor
from cnnfit.engine.state import State
from cnnfit.errors import CnnfitError, TrainingStopped
from cnnfit.tune.space import DEFAULT_SPACE, Dist, contains, grid_points, parse_space

_GRID_READY = "cnnfit_grid_ready"  # study attribute set once every grid point is enqueued


@dataclass
class TuneResult:
    dir: Path
    study: str
    summary: dict[str, Any] = field(default_factory=dict)  # what tune.json holds
    refit: Any = None  # the refit Run, when refit=true and a trial completed


class Pruning(Callback):
    """Report the monitored val metric to the trial at each epoch end; stop the run when the pruner says so.
    `monitor="auto"` follows the run's own choice, read from its checkpointing callback at the start."""

    def __init__(self, trial: Any, monitor: str, pruner: str) -> None:
        self.trial, self.monitor, self.pruner = trial, monitor, pruner
        self.pruned = False

    def on_fit_start(self, state: State) -> None:
        if self.monitor == "auto":
            self.monitor = next(cb.monitor.name for cb in state.callbacks if isinstance(getattr(cb, "monitor", None), Monitor))

    def on_epoch_end(self, state: State) -> None:
        value = state.metrics.get(self.monitor)
        if value is None:
            return
        epoch = int(state.metrics["epoch"])
        self.trial.report(float(value), epoch)
        if self.trial.should_prune():
            self.pruned = True
            state.stop = f"pruned by the {self.pruner} pruner at epoch {epoch}"


def _direction(cfg: Config, task: str) -> tuple[str, str]:
    """(monitor, direction) the way train resolves `monitor=auto`: every automatic score but regression's
    val_loss grows with quality."""
    monitor = cfg.train.monitor
    if monitor == "auto":
        monitor = "val_loss" if task == "regress" else "auto"
    return monitor, "minimize" if "loss" in monitor else "maximize"


def _storage(url: str) -> Any:
    import optuna

    from sqlalchemy.exc import SQLAlchemyError

    # several processes write one SQLite file: wait for its lock rather than fail
    kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except SQLAlchemyError as exc:  # two machines starting at once both create the tables: one loses, retries
            if attempt == 4:
                raise CnnfitError(f"cannot open the study storage {url.split('@')[-1]}: {str(exc).splitlines()[0]}; "
                                  "check the URL and that the database server is running") from None
            time.sleep(1 + attempt)


def _sampler(name: str, seed: int | None, trials: int) -> Any:
    import optuna

    if name == "tpe":  # a quarter of the budget (3 to 10 trials) explores at random before TPE models it
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(3, trials // 4)))
    return optuna.samplers.RandomSampler(seed=seed)  # grid: every trial is an enqueued point; this draws none


def _pruner(name: str, epochs: int) -> Any:
    import optuna

    if name == "median":  # once 3 trials have shown what is typical, and after the first fifth of the epochs
        # (epoch 1 at the earliest): a low learning rate starts slowly and should not lose on its first epoch
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=max(1, epochs // 5))
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1))
    return optuna.pruners.NopPruner()


def _tune_dir(cfg: Config) -> Path:
    from cnnfit.prepare import new_run_dir

    name = "tune" if cfg.name == "train" else cfg.name
    if cfg.tune.resume:
        path = Path(cfg.project) / name
        if cfg.tune.storage is None and not (path / "study.db").is_file():
            raise CnnfitError(f"resume=true: {path} holds no study.db to continue; give the name= and project= of "
                              "the search to continue, or drop resume=true to start a new one")
        return path
    return new_run_dir(cfg.project, name)


def _open_study(cfg: Config, tune_dir: Path, direction: str, space: dict[str, Dist], trials: int,
                seed: int | None) -> Any:
    """Create the study (and, for a grid, enqueue every point exactly once), or load it when it exists."""
    import optuna

    t = cfg.tune
    storage = _storage(t.storage or f"sqlite:///{tune_dir / 'study.db'}")
    study_name = tune_dir.name if t.storage is None else ("tune" if cfg.name == "train" else cfg.name)
    sampler, pruner = _sampler(t.sampler, seed, trials), _pruner(t.pruner, cfg.train.epochs)
    try:
        study = optuna.create_study(storage=storage, study_name=study_name, direction=direction, sampler=sampler,
                                    pruner=pruner)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(storage=storage, study_name=study_name, sampler=sampler, pruner=pruner)
        created = False
    if study.direction.name.lower() != direction:
        raise CnnfitError(f"study '{study_name}' in the storage was made to {study.direction.name.lower()} but this "
                          f"search would {direction} "
                          f"{'the val score' if cfg.train.monitor == 'auto' else cfg.train.monitor}; use another "
                          "name= or the same monitor")
    if created and t.sampler != "grid" and (start := _baseline(cfg, space)):
        study.enqueue_trial(start, user_attrs={"baseline": True})  # the config as given is trial 0: the yardstick
    if t.sampler == "grid":
        if created:  # only the creator enqueues: a second machine would add every point again
            for point in grid_points(space)[:trials]:
                study.enqueue_trial(point)
            study.set_user_attr(_GRID_READY, True)
        else:
            deadline = time.monotonic() + 120
            while not study.user_attrs.get(_GRID_READY):
                if time.monotonic() > deadline:
                    raise CnnfitError(f"study '{study_name}' has no grid after 2 minutes; the process that "
                                      "created it may have died: start the search again with a new name=")
                time.sleep(0.5)
    return study


def _baseline(cfg: Config, space: dict[str, Dist]) -> dict[str, Any] | None:
    """The searched keys' values in the config as given (auto lr and weight decay resolved as train resolves
    them), when every one lies inside the space; else None."""
    from cnnfit.pipeline import _AUTO_LR, _AUTO_WD

    tree = cfg.model_dump()
    point = {}
    for key, dist in space.items():
        node = tree
        for part in key.split("."):
            node = node[part]
        if node is None and key == "optim.lr":
            node = _AUTO_LR[cfg.optim.name]
        elif node is None and key == "optim.weight_decay":
            node = _AUTO_WD[cfg.optim.name]
        if not contains(dist, node):
            return None
        point[key] = node
    return point


def _retry_lost(study: Any) -> int:
    """Trials left RUNNING by a killed search: failed, and their parameters queued to run again."""
    from optuna.trial import TrialState

    lost = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in lost:
        study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        study.set_user_attr(f"retried_{t.number}", True)
        # a grid point claimed but killed before its values were drawn has no params yet, only the queued ones
        params = {**t.system_attrs.get("fixed_params", {}), **t.params}
        study.enqueue_trial(params, user_attrs={"retry_of": t.number})
    return len(lost)


def _finished(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _next_trial(study: Any, grid: bool, trials: int) -> Any:
    """The next trial this process runs, or None when the search is done. A grid claims an enqueued point
    atomically (the storage hands each waiting trial to one process); other samplers stop at `trials`."""
    import optuna

    if grid:
        trial_id = study._pop_waiting_trial_id()  # the atomic claim Optuna's own ask() makes
        return None if trial_id is None else optuna.trial.Trial(study, trial_id)
    if _finished(study) >= trials:
        return None
    return study.ask()


def _run_trial(study: Any, trial: Any, base: Config, space: dict[str, Dist], monitor: str, pruner: str,
               tune_dir: Path, console: Console) -> None:
    from optuna.trial import TrialState

    from cnnfit.pipeline import train

    params = {key: dist.suggest(trial, key) for key, dist in space.items()}
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    name = f"trial{trial.number:03d}"
    pruning = Pruning(trial, monitor, pruner)
    shown = ", ".join(f"{k}={_short(v)}" for k, v in params.items())
    t0 = time.perf_counter()
    try:
        run = train(base, console=Console(file=io.StringIO()), callbacks=[pruning], test=False,
                    project=str(tune_dir / "trials"), name=name,
                    **_overrides(params))
    except (CnnfitError, TrainingStopped) as exc:  # a bad combination (model too big for the images, NaN loss)
        trial.set_user_attr("stop", str(exc))
        study.tell(trial, state=TrialState.FAIL)
        console.print(f"trial {trial.number:>3}  failed     {shown}: {exc}", markup=False, highlight=False,
                      soft_wrap=True)
        return
    attrs = {"run_dir": str(run.dir), "monitor": run.metrics["monitor"], "best_epoch": run.metrics["best_epoch"],
             "epochs_run": len(run.history),
             "stop": run.metrics.get("stop"), "seconds": time.perf_counter() - t0}
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    if pruning.pruned:
        study.tell(trial, state=TrialState.PRUNED)
        outcome = f"pruned     after {len(run.history)} epochs"
    else:
        study.tell(trial, float(run.metrics["value"]))
        outcome = f"{run.metrics['monitor']} {run.metrics['value']:.4f}"
    console.print(f"trial {trial.number:>3}  {outcome}  {shown}  ({attrs['seconds']:.0f} s)", markup=False,
                  highlight=False, soft_wrap=True)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _work(cfg: Config, tune_dir: Path, monitor: str, direction: str, console: Console, study: Any = None) -> None:
    """One process's share: claim trials and run them until the study is done or the time is up. `study`: the
    one this process already opened (spawned workers open their own)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = parse_space(cfg.tune.space)
    trials = _trials(cfg, space)
    study = study or _open_study(cfg, tune_dir, direction, space, trials, _seed(cfg))
    base = cfg.model_copy(update={"tune": TuneConfig()})
    deadline = time.monotonic() + cfg.tune.timeout * 60 if cfg.tune.timeout else None
    while deadline is None or time.monotonic() < deadline:
        trial = _next_trial(study, cfg.tune.sampler == "grid", trials)
        if trial is None:
            break
        _run_trial(study, trial, base, space, monitor, cfg.tune.pruner, tune_dir, console)


def _seed(cfg: Config) -> int | None:
    """Seeded sampling only where one process samples: seeded workers would all draw the same points."""
    return cfg.train.seed if cfg.tune.workers == 1 and cfg.tune.storage is None else None


def _overrides(params: dict[str, Any]) -> dict[str, Any]:
    """Trial parameters (dotted config keys) as `train` keyword overrides."""
    return {k.replace(".", "__"): v for k, v in params.items()}


def _trials(cfg: Config, space: dict[str, Dist]) -> int:
    return min(cfg.tune.trials, len(grid_points(space))) if cfg.tune.sampler == "grid" else cfg.tune.trials


def _spawned_worker(cfg_json: dict, tune_dir: str, monitor: str, direction: str, threads: int) -> None:
    torch.set_num_threads(threads)
    cfg = Config.model_validate(cfg_json)
    _work(cfg, Path(tune_dir), monitor, direction, Console())


def tune(cfg: Config, console: Console | None = None) -> TuneResult:
    """Search `cfg.tune.space` around `cfg`, then retrain the best config on train+val and test it once."""
    import optuna

    from cnnfit.pipeline import train
    from cnnfit.prepare import prepare
    from cnnfit.tune.results import write_results

    console = console or Console()
    space = parse_space(cfg.tune.space)
    trials = _trials(cfg, space)
    # every point must make a valid config: check one of each choice now, not at trial 17
    for key, dist in space.items():
        for value in (dist.args if dist.kind == "choice" else dist.args[:1]):
            try:
                Config.model_validate(_with_key(cfg.model_dump(mode="json"), key, value))
            except Exception as exc:  # pydantic's message names the key and the rule
                raise CnnfitError(f"space.{key}: value {value!r} is not valid for {key} ({_first_line(exc)})") from None
    names = space["model.name"].args if "model.name" in space else (cfg.model.name,)
    for name in names:
        models.check_name(name)
    smallest = max(names, key=models.min_size)  # every model the search may pick must fit the images
    # the data is checked (and cached) once, before any trial or directory
    task = prepare(cfg.model_copy(update={"model": cfg.model.model_copy(update={"name": smallest})}),
                   min_size=models.min_size(smallest)).ds.task
    monitor, direction = _direction(cfg, task)
    tune_dir = _tune_dir(cfg)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _open_study(cfg, tune_dir, direction, space, trials, _seed(cfg))
    if cfg.tune.resume and cfg.tune.storage is None:
        lost = _retry_lost(study)
        console.print(f"resuming study '{study.study_name}': {_finished(study)} trials finished"
                      + (f", {lost} interrupted ones queued again" if lost else ""), highlight=False)
    console.print(f"tune {tune_dir}: {cfg.tune.sampler} sampler, {cfg.tune.pruner} pruner, {trials} trials, "
                  f"{'maximize' if direction == 'maximize' else 'minimize'} {monitor if monitor != 'auto' else 'the val score'}"
                  f", {cfg.tune.workers} worker(s); storage {cfg.tune.storage or tune_dir / 'study.db'}",
                  highlight=False, soft_wrap=True)
    if not cfg.tune.space:
        console.print("no space given: searching " + ", ".join(f"{k} {v}" for k, v in DEFAULT_SPACE.items()),
                      highlight=False, soft_wrap=True)
    processes = []
    threads = max(1, torch.get_num_threads() // cfg.tune.workers)
    if cfg.tune.workers > 1:
        ctx = multiprocessing.get_context("spawn")
        for _ in range(1, cfg.tune.workers):
            p = ctx.Process(target=_spawned_worker, args=(cfg.model_dump(mode="json"), str(tune_dir), monitor,
                                                          direction, threads))
            p.start()
            processes.append(p)
        torch.set_num_threads(threads)
    try:
        _work(cfg, tune_dir, monitor, direction, console, study)
    finally:
        for p in processes:
            p.join()
    refit_run, refit = None, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.load_study(storage=_storage(cfg.tune.storage or f"sqlite:///{tune_dir / 'study.db'}"),
                                  study_name=study.study_name)
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    start = next((t for t in completed if t.user_attrs.get("baseline")), None)
    if start is not None:
        best = study.best_trial
        console.print(f"the config as given (trial {start.number}): {start.value:.4f}; best (trial {best.number}): "
                      f"{best.value:.4f}", highlight=False)
    base = cfg.model_copy(update={"tune": TuneConfig()})
    if cfg.tune.refit and completed:
        best = study.best_trial
        console.print(f"refit: trial {best.number}'s config on train+val, then the test split once", highlight=False)
        refit_run = train(base, console=Console(file=io.StringIO()), project=str(tune_dir), name="refit",
                          data__merge_val=True, **_overrides(best.params))
        refit = {"run_dir": str(refit_run.dir), "trial": best.number, "val_value": best.value,
                 "test_accuracy" if task == "classify" else "test_score": refit_run.score,
                 "epochs": len(refit_run.history)}
        console.print(f"refit test {'accuracy' if task == 'classify' else 'score'} {refit_run.score:.4f} "
                      f"-> {refit_run.dir / 'report.html'}", highlight=False)
    resolved = next((t.user_attrs["monitor"] for t in completed if "monitor" in t.user_attrs), monitor)
    summary = write_results(study, tune_dir, base_config=base, monitor=resolved, refit=refit, console=console)
    return TuneResult(tune_dir, study.study_name, summary, refit_run)


def _with_key(tree: dict, key: str, value: Any) -> dict:
    node = tree
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return tree


def _first_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


__all__ = ["Pruning", "TuneResult", "tune"]
