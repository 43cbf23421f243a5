"""`cnnfit cv`: k-fold cross-validation, every fold an ordinary run (`data.folds=K data.fold=k`), and every
train+val image's out-of-fold probabilities.

    res = cv(data="digits", epochs=3, folds=5)    # runs/cv/fold0 ... fold4, oof.csv, cv.json
    res.summary["mean"], res.summary["std"]      # the folds' val accuracy, from the out-of-fold predictions

runs/<name>/ holds cv_config.json (the keys given and K: what resume=runs/<name> continues), fold<k>/ (a run
directory, plus oof.npz: its best.pt's probabilities on its held-out fold), oof.csv and cv.json. A killed cv
continues with the same command plus resume=runs/<name>: finished folds are kept, an unfinished one continues
exactly from its last.pt (train's resume), one killed before its first checkpoint starts again.
"""

from __future__ import annotations

import io
import logging
import logging.handlers
import multiprocessing
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from cnnfit import distributed, models
from cnnfit.config import Config, flatten, is_module_name, is_set, load_config, with_overrides
from cnnfit.data import ImageSet, read_rows
from cnnfit.errors import CnnfitError
from cnnfit.files import new_run_dir, write_atomic, write_csv
from cnnfit.pipeline.prepare import load_data, look_at, prepare
from cnnfit.pipeline.quiet import quiet
from cnnfit.pipeline.resolve import by_data
from cnnfit.pipeline.resume import RESUME_SAFE
from cnnfit.pipeline.rundir import read_json, write_json
from cnnfit.pipeline.train import train
from cnnfit.predictor import load_predictor

log = logging.getLogger(__name__)

DEFAULT_FOLDS = 5
PLAN = "cv_config.json"  # the keys given and K, written before the first fold: what resume continues
# a fold's own run logs warnings only: cv says one line per fold (K runs' data reports and epochs would bury it)
# (cv's own lines are logged outside `_quiet`, so "cnnfit.pipeline" as a whole may be quieted)


@dataclass
class CVResult:
    dir: Path
    summary: dict[str, Any] = field(default_factory=dict)  # what cv.json holds


def cv(cfg: Config | None = None, *, folds: int | None = None, workers: int = 1, **overrides: Any) -> CVResult:
    """Train fold k = 0..folds-1 of train+val as its own run (val = fold k), in `workers` processes, then score
    every train+val image once by the fold that held it out: oof.csv, cv.json and a table of the folds.
    `resume=runs/<name>` continues a killed cv; folds: data.folds when set, else 5."""
    cfg = with_overrides(cfg, overrides)
    if workers < 1:
        raise CnnfitError(f"workers={workers} runs nothing; use workers=1 (one fold at a time) or more")
    ctx = distributed.from_env()
    if not ctx.active:
        return _cv(cfg, folds, workers, ctx)
    if workers > 1:
        raise CnnfitError(f"under torchrun every fold is trained by all {ctx.world} processes, one fold after "
                          "another; drop workers=")
    # one process group for the whole cv: each fold's train joins it (distributed.session nests)
    with distributed.session(ctx, distributed.device_for(ctx, cfg.train.device), cfg.train.dist_timeout):
        return _cv(cfg, folds, workers, ctx)


def _cv(cfg: Config, folds: int | None, workers: int, ctx: distributed.Dist) -> CVResult:
    """The folds still to train, trained; then the summary. Under torchrun rank 0 makes the folder, predicts the
    held-out folds and writes every file; the other ranks train."""
    def plan() -> tuple[Path, dict[str, Any], int, list[int]]:
        cv_dir, settings, k = _resume(cfg, folds) if cfg.resume.run else \
            _start(cfg, folds or cfg.data.folds or DEFAULT_FOLDS, world=ctx.world)
        return cv_dir, settings, k, [i for i in range(k) if not _done(cv_dir / f"fold{i}")]

    cv_dir, settings, folds, todo = distributed.on_main(ctx, plan)
    trust = bool(cfg.model.trust_code) or (not cfg.resume.run and is_module_name(cfg.model.name))
    if trust:  # never in cv_config.json: a file cannot vouch for code (see config._check_code)
        settings = {**settings, "model.trust_code": True}
    if ctx.main:
        log.info(f"cv {cv_dir}: {folds} folds of train+val, {folds - len(todo)} done, "
                 + (f"{ctx.world} processes per fold" if ctx.active else f"{min(workers, len(todo) or 1)} worker(s)"))
    if workers == 1 or len(todo) < 2:
        for k in todo:
            _fold(cv_dir, settings, folds, k, ctx)
    else:
        _in_workers(cv_dir, settings, folds, todo, workers)
    return CVResult(cv_dir, distributed.on_main(ctx, lambda: _summarize(cv_dir, folds)))


def _start(cfg: Config, folds: int, world: int = 1) -> tuple[Path, dict[str, Any], int]:
    """The checks that can fail, then runs/<name>/ and its cv_config.json: (the folder, the fold keys, K)."""
    if cfg.data.fold is not None:
        raise CnnfitError(f"cnnfit cv trains every fold; drop data.fold={cfg.data.fold} (or train that one fold "
                          "with cnnfit train)")
    if cfg.train.repeats > 1:
        raise CnnfitError("cnnfit cv trains each fold once; drop repeats= (cv's folds are its repeats)")
    if cfg.train.devices > 1 and world == 1:
        raise CnnfitError(f"devices={cfg.train.devices} is started by the command line (cnnfit cv ... devices=N); "
                          "from Python, run the script under torchrun --nproc_per_node=N")
    settings = flatten(cfg.model_dump(mode="json", exclude_unset=True))  # the keys given, as with_overrides keeps
    for key in ("project", "name", "resume.run", "resume.force", "data.folds", "data.fold", "train.devices"):
        settings.pop(key, None)
    if not is_set(cfg, "eval.report"):  # plots and report.html per fold: ~3 s each for pictures nobody compares;
        settings["eval.report"] = False  # the folds' story is cv.json and oof.csv. eval.report=true keeps them
    first = load_config(**settings, **{"data.folds": folds, "data.fold": 0})  # refuses folds < 2 in one line
    models.check_name(first.model.name)
    # the data decoded as the fold runs will decode it, and the fold split, checked before any folder is made
    prep = prepare(by_data(first, look_at(first))[0])
    if prep.ds.task != "classify":
        raise CnnfitError(f"cnnfit cv scores out-of-fold accuracy, which needs task=classify, not {prep.ds.task}; "
                          f"train each fold with cnnfit train data.folds={folds} data.fold=k")
    cv_dir = new_run_dir(cfg.project, "cv" if cfg.name == "train" else cfg.name)
    write_json(cv_dir / PLAN, {"folds": folds, "settings": settings})
    return cv_dir, settings, folds


def _resume(cfg: Config, folds: int | None) -> tuple[Path, dict[str, Any], int]:
    """resume=runs/<name>: its cv_config.json, with keys that change only how runs are watched on top; a key
    that would change what a fold computes is refused, as train's resume refuses it."""
    cv_dir = Path(cfg.resume.run)
    plan = read_json(cv_dir / PLAN)
    if not plan:
        raise CnnfitError(f"resume: {cv_dir} holds no {PLAN}; pass the folder cnnfit cv made, e.g. resume=runs/cv")
    if folds is not None and folds != plan["folds"]:
        raise CnnfitError(f"resume: folds={folds} differs from the {plan['folds']} folds of {cv_dir}; drop folds=")
    saved = plan["settings"]
    given = flatten(cfg.model_dump(mode="json", exclude_unset=True))
    for key in ("project", "name", "resume.run", "resume.force", "train.devices"):
        given.pop(key, None)
    changed = [k for k, v in given.items() if k not in RESUME_SAFE and saved.get(k) != v]
    if changed and not cfg.resume.force:
        k = changed[0]
        raise CnnfitError(f"resume: {k}={given[k]!r} differs from {cv_dir}'s {k}={saved.get(k)!r} and would change "
                          "the folds; drop it, or add resume.force=true")
    if is_module_name(saved.get("model.name")) and not cfg.model.trust_code:
        raise CnnfitError(f"{cv_dir / PLAN} names model {saved['model.name']!r}, which runs code from the file; "
                          "if you trust it, add trust_code=true")
    return cv_dir, {**saved, **given}, int(plan["folds"])


def _done(fold_dir: Path) -> bool:
    """A fold whose run finished (metrics.json is written last, by the test evaluation) and whose oof.npz exists."""
    return (fold_dir / "metrics.json").is_file() and (fold_dir / "oof.npz").is_file()


def _fold(cv_dir: Path, settings: dict[str, Any], folds: int, k: int,
          ctx: distributed.Dist = distributed.SINGLE) -> None:
    """Fold k's run (started, continued from last.pt, or kept when finished) and its oof.npz; under torchrun
    every rank trains and rank 0 predicts."""
    fold_dir, t0 = cv_dir / f"fold{k}", time.perf_counter()
    with quiet():
        finished, started = distributed.on_main(ctx, lambda: ((fold_dir / "metrics.json").is_file(),
                                                   (fold_dir / "last.pt").is_file()))
        if not finished:
            if started:  # killed mid-run: continue exactly where last.pt stopped
                safe = {key: v for key, v in settings.items() if key in RESUME_SAFE or key == "model.trust_code"}
                train(**safe, **{"resume.run": str(fold_dir)})
            else:  # killed before its first checkpoint: only config.yaml and split.json to lose
                distributed.on_main(ctx, lambda: shutil.rmtree(fold_dir, ignore_errors=True))
                train(**settings, project=str(cv_dir), name=f"fold{k}", **{"data.folds": folds, "data.fold": k})
        if not ctx.main:
            return
        indices, probs, labels = _predict_held_out(fold_dir, trust=bool(settings.get("model.trust_code")),
                                                   device=settings.get("train.device", "auto"))
    acc = float((probs.argmax(1) == labels).mean())
    test = read_json(fold_dir / "metrics.json").get("accuracy")
    log.info(f"fold {k + 1}/{folds}: val accuracy {acc:.4f} on {len(indices)} held-out images, test accuracy "
             f"{test:.4f} ({time.perf_counter() - t0:.0f} s)")


def _predict_held_out(fold_dir: Path, *, trust: bool, device: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """fold<k>/oof.npz: the fold's val indices (int64) and best.pt's calibrated probabilities on them (float32);
    returned with the images' labels."""
    indices = np.asarray(read_json(fold_dir / "split.json")["val"], dtype=np.int64)
    ds = _dataset(fold_dir)
    probs = load_predictor(fold_dir, device=device, trust_code=trust).predict(read_rows(ds.images, indices))
    buf = io.BytesIO()
    np.savez(buf, indices=indices, probs=probs.astype(np.float32))
    write_atomic(fold_dir / "oof.npz", buf.getvalue())  # whole or absent: a kill never leaves half a file
    return indices, probs, ds.labels[indices]


def _dataset(fold_dir: Path) -> ImageSet:
    """The images as the fold's run decoded them (its config.yaml's data.* keys: the resolved size and channels);
    the data keys alone, so a model module the file names is never imported."""
    saved = yaml.safe_load((fold_dir / "config.yaml").read_text())
    return load_data(load_config(**{f"data.{k}": v for k, v in saved["data"].items()}))[0]


def _summarize(cv_dir: Path, folds: int) -> dict[str, Any]:
    """oof.csv (every train+val image once, by the fold that held it out) and cv.json, and the folds' table."""
    ds = _dataset(cv_dir / "fold0")
    held = [np.load(cv_dir / f"fold{k}" / "oof.npz", allow_pickle=False) for k in range(folds)]
    indices = [h["indices"] for h in held]
    probs = [h["probs"] for h in held]
    everything = np.concatenate(indices)
    if len(np.unique(everything)) != len(everything):
        raise CnnfitError(f"{cv_dir}: an image is held out by two folds; the folds' data or seed differ, start anew")
    scores = [float((p.argmax(1) == ds.labels[i]).mean()) for i, p in zip(indices, probs)]
    hits = np.concatenate([p.argmax(1) == ds.labels[i] for i, p in zip(indices, probs)])
    test = [read_json(cv_dir / f"fold{k}" / "metrics.json").get("accuracy") for k in range(folds)]
    summary = {"folds": folds, "metric": "accuracy", "scores": scores, "mean": float(np.mean(scores)),
               "std": float(np.std(scores, ddof=1)),  # across folds, n - 1: as repeats.json's std
               "oof_accuracy": float(hits.mean()), "runs": [f"fold{k}" for k in range(folds)], "test": test}
    write_json(cv_dir / "cv.json", summary)
    fold_of = np.concatenate([np.full(len(i), k) for k, i in enumerate(indices)])
    all_probs = np.concatenate(probs)  # (N_pool, K)
    rows = [[int(everything[j]), ds.files[everything[j]] if ds.files is not None else "",
             ds.classes[int(ds.labels[everything[j]])], int(fold_of[j]), *(f"{p:.7g}" for p in all_probs[j])]
            for j in np.argsort(everything)]  # float32 holds ~7 significant digits
    write_csv(cv_dir / "oof.csv", ["index", "file", "label", "fold", *(f"prob_{c}" for c in ds.classes)], rows)
    table = [[f"fold{k}", str(len(indices[k])), f"{scores[k]:.4f}", "" if test[k] is None else f"{test[k]:.4f}"]
             for k in range(folds)]
    table.append(["mean ± std", str(len(everything)), f"{summary['mean']:.4f} ± {summary['std']:.4f}",
                  _mean_std([t for t in test if t is not None])])
    log.info("\n".join("  ".join(r) for r in table), extra={"table": {
        "title": f"{folds}-fold cross-validation: out-of-fold accuracy {summary['oof_accuracy']:.4f}",
        "columns": ["fold", "held out", "val accuracy", "test accuracy"], "rows": table}})
    log.info(f"out-of-fold probabilities -> {cv_dir / 'oof.csv'}, summary -> {cv_dir / 'cv.json'}")
    return summary


def _mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}" if len(values) > 1 else ""


def _in_workers(cv_dir: Path, settings: dict[str, Any], folds: int, todo: list[int], workers: int) -> None:
    """The folds in `workers` spawned processes (fork would copy torch's thread pools), the cores shared out."""
    ctx = multiprocessing.get_context("spawn")
    workers = min(workers, len(todo))
    threads = max(1, torch.get_num_threads() // workers)
    queue = ctx.Queue()
    # the workers' records are handled by this process's "cnnfit" logger, so its handlers (the CLI's) show them
    listener = logging.handlers.QueueListener(queue, logging.getLogger("cnnfit"))
    listener.start()
    try:
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init,
                                 initargs=(threads, queue, log.getEffectiveLevel())) as pool:
            jobs = [pool.submit(_fold, cv_dir, settings, folds, k) for k in todo]
            for job in jobs:
                job.result()  # the first fold's error, raised here
    finally:
        listener.stop()


def _worker_init(threads: int, queue: Any, level: int) -> None:
    torch.set_num_threads(threads)
    logging.getLogger("cnnfit").addHandler(logging.handlers.QueueHandler(queue))
    logging.getLogger("cnnfit").setLevel(level)


__all__ = ["CVResult", "cv"]
