"""`cnnfit tune`: an Optuna study in which every trial is an ordinary cnnfit run, scored on the val split.

One study lives in a storage (a SQLite file in the tune directory, or a PostgreSQL URL shared by machines that run
the same command). Trials are claimed from it one at a time, so processes on one machine (`workers=N`) and on
several machines share the work without running a grid point twice. A killed search continues with resume=true:
trials that were running when it died are run again. The test split is touched once, by the final refit.
"""

from __future__ import annotations

import logging
import logging.handlers
import multiprocessing
import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cnnfit import models
from cnnfit.config import Config, TuneConfig, get_dotted, set_dotted
from cnnfit.engine import State
from cnnfit.engine.callbacks import Callback, MLflowRun, Monitor
from cnnfit.engine.callbacks.tracking import Parent, ending, require
from cnnfit.engine.scores import DIRECTIONS
from cnnfit.errors import CnnfitError, TrainingStopped
from cnnfit.files import new_run_dir
from cnnfit.pipeline import train
from cnnfit.pipeline.prepare import Prepared, prepare
from cnnfit.pipeline.quiet import quiet
from cnnfit.pipeline.resolve import AUTO_LR, AUTO_WEIGHT_DECAY, monitor_for
from cnnfit.tune.results import write_results
from cnnfit.tune.space import DEFAULT_SPACE, Dist, contains, grid_points, parse_space
from cnnfit.tune.storage import claim, local_url, open_storage, shown_url

log = logging.getLogger(__name__)

_GRID_READY = "cnnfit_grid_ready"  # study attribute set once every grid point is enqueued
# what the study's own MLflow run (track=mlflow) gets as artifacts: the results write_results leaves
STUDY_FILES = ("tune.json", "trials.csv", "best.yaml", "tune_report.html", "plots")
# what a trial's own run logs: warnings only while it trains, since the search says one line per trial


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
        self.trial, self.monitor, self.pruner, self.pruned = trial, monitor, pruner, False

    def on_fit_start(self, state: State) -> None:
        if self.monitor == "auto":
            self.monitor = next(cb.monitor.name for cb in state.callbacks
                                if isinstance(getattr(cb, "monitor", None), Monitor))

    def on_epoch_end(self, state: State) -> None:
        value = state.metrics.get(self.monitor)
        if value is None:
            return
        epoch = int(state.metrics["epoch"])
        self.trial.report(float(value), epoch)
        if self.trial.should_prune():
            self.pruned = True
            state.stop = f"pruned by the {self.pruner} pruner at epoch {epoch}"


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
    name = "tune" if cfg.name == "train" else cfg.name
    if cfg.tune.resume:
        path = Path(cfg.project) / name
        if cfg.tune.storage is None and not (path / "study.db").is_file():
            raise CnnfitError(f"resume=true: {path} holds no study.db to continue; give the name= and project= of "
                              "the search to continue, or drop resume=true to start a new one")
        return path
    return new_run_dir(cfg.project, name)


def _open_study(cfg: Config, tune_dir: Path, direction: str, space: dict[str, Dist], trials: int,
                storage: Any = None) -> Any:
    """Create the study (and, for a grid, enqueue every point exactly once), or load it when it exists; `storage`:
    the one already opened, else the config's."""
    import optuna

    t = cfg.tune
    # seeded sampling only where one process samples: seeded workers would all draw the same points
    seed = cfg.train.seed if t.workers == 1 and t.storage is None else None
    storage = storage or open_storage(t.storage or local_url(tune_dir))
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
    tree, auto = cfg.model_dump(), {"optim.lr": AUTO_LR, "optim.weight_decay": AUTO_WEIGHT_DECAY}
    point = {key: get_dotted(tree, key) for key in space}
    point |= {key: auto[key][cfg.optim.name] for key in auto if key in point and point[key] is None}
    return point if all(contains(dist, point[key]) for key, dist in space.items()) else None


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


def _run_trial(study: Any, trial: Any, base: Config, space: dict[str, Dist], monitor: str, pruner: str,
               tune_dir: Path, parent: Parent | None) -> None:
    from optuna.trial import TrialState

    params = {key: dist.suggest(trial, key) for key, dist in space.items()}
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    pruning = Pruning(trial, monitor, pruner)
    shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
    t0 = time.perf_counter()
    try:
        with quiet():  # the params are dotted keys ("optim.lr"), which train's overrides take as they are
            run = train(base, callbacks=[pruning], test=False, track_parent=parent,
                        project=str(tune_dir / "trials"), name=f"trial{trial.number:03d}", **params)
    except (CnnfitError, TrainingStopped) as exc:  # a bad combination (model too big for the images, NaN loss)
        trial.set_user_attr("stop", str(exc))
        study.tell(trial, state=TrialState.FAIL)
        log.info(f"trial {trial.number:>3}  failed     {shown}: {exc}")
        return
    attrs = {"run_dir": str(run.dir), "monitor": run.metrics["monitor"], "best_epoch": run.metrics["best_epoch"],
             "epochs_run": len(run.history), "stop": run.metrics.get("stop"), "seconds": time.perf_counter() - t0}
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    if pruning.pruned:
        study.tell(trial, state=TrialState.PRUNED)
        outcome = f"pruned     after {len(run.history)} epochs"
    else:
        study.tell(trial, float(run.metrics["value"]))
        outcome = f"{run.metrics['monitor']} {run.metrics['value']:.4f}"
    log.info(f"trial {trial.number:>3}  {outcome}  {shown}  ({attrs['seconds']:.0f} s)")


def _work(cfg: Config, tune_dir: Path, monitor: str, direction: str, study: Any = None,
          parent: Parent | None = None) -> None:
    """One process's share: claim trials and run them until the study is done or the time is up. `study`: the
    one this process already opened (spawned workers open their own); `parent`: the study's tracker run."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = parse_space(cfg.tune.space)
    trials = _trials(cfg, space)
    study = study or _open_study(cfg, tune_dir, direction, space, trials)
    base = cfg.model_copy(update={"tune": TuneConfig()})
    deadline = time.monotonic() + cfg.tune.timeout * 60 if cfg.tune.timeout else None
    while deadline is None or time.monotonic() < deadline:
        if cfg.tune.sampler == "grid":  # claim an enqueued point atomically: each goes to one process
            trial_id = claim(study, cfg.tune.storage or local_url(tune_dir))
            trial = None if trial_id is None else optuna.trial.Trial(study, trial_id)
        else:  # other samplers stop at `trials`
            trial = None if _finished(study) >= trials else study.ask()
        if trial is None:
            break
        _run_trial(study, trial, base, space, monitor, cfg.tune.pruner, tune_dir, parent)


def _trials(cfg: Config, space: dict[str, Dist]) -> int:
    return min(cfg.tune.trials, len(grid_points(space))) if cfg.tune.sampler == "grid" else cfg.tune.trials


def tune(cfg: Config) -> TuneResult:
    """Search `cfg.tune.space` around `cfg`, then retrain the best config on train+val and test it once."""
    import optuna

    space = parse_space(cfg.tune.space)
    trials = _trials(cfg, space)
    prep = _check(cfg, space)
    # monitor=auto as every trial's run resolves it (the same data and split): its direction is the study's
    monitor = monitor_for(cfg, prep.ds.task, prep.train_counts, len(prep.parts["val"]))[0] \
        if cfg.train.monitor == "auto" else cfg.train.monitor
    direction = "minimize" if DIRECTIONS.get(monitor) == "min" else "maximize"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    require(cfg.train.track)  # a tracker's missing client: refused now, not as a failure of every trial
    shared = open_storage(cfg.tune.storage) if cfg.tune.storage else None  # refused before any folder is made
    tune_dir = _tune_dir(cfg)
    study = _open_study(cfg, tune_dir, direction, space, trials, shared)
    if cfg.tune.resume and cfg.tune.storage is None:
        lost = _retry_lost(study)
        log.info(f"resuming study '{study.study_name}': {_finished(study)} trials finished"
                 + (f", {lost} interrupted ones queued again" if lost else ""))
    log.info(f"tune {tune_dir}: {cfg.tune.sampler} sampler, {cfg.tune.pruner} pruner, {trials} trials, {direction} "
             f"{monitor if monitor != 'auto' else 'the val score'}, {cfg.tune.workers} worker(s); "
             f"storage {shown_url(cfg.tune.storage) if cfg.tune.storage else tune_dir / 'study.db'}")
    if not cfg.tune.space:
        log.info("no space given: searching " + ", ".join(f"{k} {v}" for k, v in DEFAULT_SPACE.items()))
    study_run, parent = _study_run(cfg, tune_dir, study.study_name)
    with ending([study_run] if study_run else []):  # a search that raises ends the study's run as failed
        _run_workers(cfg, tune_dir, monitor, direction, study, parent)
        summary, refit_run = _conclude(cfg, study.study_name, tune_dir, monitor, prep.ds.task, parent)
        if study_run is not None:
            study_run.finish(_study_scores(summary), [tune_dir / name for name in STUDY_FILES])
    return TuneResult(tune_dir, study.study_name, summary, refit_run)


def _conclude(cfg: Config, name: str, tune_dir: Path, monitor: str, task: str,
              parent: Parent | None) -> tuple[dict, Any]:
    """After the trials: the refit of the best config, and the results written (tune.json's dict, the refit Run)."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.load_study(storage=open_storage(cfg.tune.storage or local_url(tune_dir)),
                                  study_name=name)
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    start = next((t for t in completed if t.user_attrs.get("baseline")), None)
    if start is not None:
        best = study.best_trial
        log.info(f"the config as given (trial {start.number}): {start.value:.4f}; best (trial {best.number}): "
                 f"{best.value:.4f}")
    base = cfg.model_copy(update={"tune": TuneConfig()})
    refit_run, refit = _refit(base, study, tune_dir, task, parent) if cfg.tune.refit and completed else (None, None)
    resolved = next((t.user_attrs["monitor"] for t in completed if "monitor" in t.user_attrs), monitor)
    return write_results(study, tune_dir, base_config=base, monitor=resolved, refit=refit), refit_run


def _study_run(cfg: Config, tune_dir: Path, name: str) -> tuple[MLflowRun | None, Parent | None]:
    """With track=: the study's own MLflow run (track=mlflow), under which each trial and the refit nest, and what
    the trials need to find it, passed explicitly since trials may run in spawned workers; wandb groups the trials
    by the study's name."""
    if not cfg.train.track:
        return None, None
    if "mlflow" not in cfg.train.track:
        return None, Parent(name)
    run = MLflowRun(tune_dir, params=cfg.model_dump(mode="json"))
    run.start()
    return run, Parent(name, run.run_id, run.uri, run.experiment_id)


def _study_scores(summary: dict) -> dict[str, Any]:
    """tune.json's figures as the study run's metrics: the best value and trial, trial counts, the refit's scores."""
    best, refit = summary.get("best") or {}, summary.get("refit") or {}
    counts = {f"trials_{state.lower()}": n for state, n in summary["counts"].items()}
    return {**{f"best_{k}": v for k, v in best.items()}, **counts, **{f"refit_{k}": v for k, v in refit.items()}}


def _check(cfg: Config, space: dict[str, Dist]) -> Prepared:
    """Refuse a space with a point that makes no valid config or a model too big for the images, before any trial
    or directory; the data is checked (and cached) here, once, and returned split."""
    # every point must make a valid config: check one of each choice now, not at trial 17
    for key, dist in space.items():
        for value in (dist.args if dist.kind == "choice" else dist.args[:1]):
            try:
                Config.model_validate(set_dotted(cfg.model_dump(mode="json"), key, value))
            except Exception as exc:  # pydantic's message names the key and the rule: its last line
                why = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
                raise CnnfitError(f"space.{key}: value {value!r} is not valid for {key} ({why[-1]})") from None
    names = space["model.name"].args if "model.name" in space else (cfg.model.name,)
    for name in names:
        models.check_name(name)
    smallest = max(names, key=models.min_size)  # every model the search may pick must fit the images
    return prepare(cfg.model_copy(update={"model": cfg.model.model_copy(update={"name": smallest})}),
                   min_size=models.min_size(smallest))


def _run_workers(cfg: Config, tune_dir: Path, monitor: str, direction: str, study: Any,
                 parent: Parent | None) -> None:
    """Claim and run trials here and in workers-1 spawned processes until the study is done."""
    if cfg.tune.workers == 1:
        _work(cfg, tune_dir, monitor, direction, study, parent)
        return
    ctx = multiprocessing.get_context("spawn")
    threads = max(1, torch.get_num_threads() // cfg.tune.workers)
    queue = ctx.Queue()
    # each record a spawned worker logs is handled by this process's "cnnfit" logger, so its handlers show it
    listener = logging.handlers.QueueListener(queue, logging.getLogger("cnnfit"))
    listener.start()
    args = (cfg.model_dump(mode="json"), str(tune_dir), monitor, direction, threads, queue, log.getEffectiveLevel(),
            parent)
    processes = [ctx.Process(target=_spawned_worker, args=args) for _ in range(1, cfg.tune.workers)]
    for p in processes:
        p.start()
    torch.set_num_threads(threads)
    try:
        _work(cfg, tune_dir, monitor, direction, study, parent)
    finally:
        for p in processes:
            p.join()
        listener.stop()


def _spawned_worker(cfg_json: dict, tune_dir: str, monitor: str, direction: str, threads: int, queue: Any,
                    level: int, parent: Parent | None) -> None:
    torch.set_num_threads(threads)
    logging.getLogger("cnnfit").addHandler(logging.handlers.QueueHandler(queue))
    logging.getLogger("cnnfit").setLevel(level)
    _work(Config.model_validate(cfg_json), Path(tune_dir), monitor, direction, parent=parent)


def _refit(base: Config, study: Any, tune_dir: Path, task: str, parent: Parent | None) -> tuple[Any, dict]:
    """The best trial's config trained on train+val as an ordinary run and tested once: (the run, its summary)."""
    best = study.best_trial
    log.info(f"refit: trial {best.number}'s config on train+val, then the test split once")
    with quiet():
        run = train(base, track_parent=parent, project=str(tune_dir), name="refit", data__merge_val=True,
                    **best.params)
    what = "accuracy" if task == "classify" else "score"
    log.info(f"refit test {what} {run.score:.4f} -> {run.dir / 'report.html'}")
    return run, {"run_dir": str(run.dir), "trial": best.number, "val_value": best.value, f"test_{what}": run.score,
                 "epochs": len(run.history)}


__all__ = ["Pruning", "TuneResult", "shown_url", "tune"]
