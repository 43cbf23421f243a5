"""Test-split scores of a run's best.pt, rebuilt from the run directory alone: the checkpoint says how to build
the model, decode the images and read its outputs."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from pydantic import ValidationError

from cnnfit import engine, models
from cnnfit.engine import load_checkpoint
from cnnfit.config import Config
from cnnfit.data import SPLITS, DeviceLoader, ImageSet
from cnnfit.device import amp_name, pick_device, resolve_channels_last, synchronize
from cnnfit.errors import CnnfitError
from cnnfit.eval import classification_metrics, fit_thresholds, intervals, multilabel_metrics, regression_metrics
from cnnfit.eval.calibration import fit_temperature
from cnnfit.eval.reject import PRECISION, SCORES, answered, fit_reject, scores
from cnnfit.eval.environment import environment
from cnnfit.eval.plots import (plot_confusion, plot_per_class_f1, plot_pr, plot_regression, plot_reliability,
                               plot_roc, plot_wrong)
from cnnfit.eval.tta import TTA
from cnnfit.files import write_csv
from cnnfit.pipeline import rundir
from cnnfit.pipeline.explain_plots import draw_explanations
from cnnfit.pipeline.predict import label_sets
from cnnfit.pipeline.prepare import load_data
from cnnfit.pipeline.resolve import eval_amp
from cnnfit.report import write_report

log = logging.getLogger(__name__)
# bootstrap error bars of the test scores: with 1,000 resamples an end of the 95% interval moves 0.3 points
# between seeds on 150 test images, where the interval spans +-6; seeded, so a re-evaluation writes the same one
_BOOTSTRAP = {"n": 1000, "seed": 0, "level": 0.95}
REJECT_KEPT = 20_000  # val images whose scores best.pt keeps for predict-time targets: 480 KB at most


@dataclass
class _Scoring:
    """A rebuilt model and how to feed it the run's images."""

    model: torch.nn.Module
    ds: ImageSet
    ckpt: dict
    device: torch.device
    stream: bool | None
    channels_last: bool
    amp_dtype: torch.dtype | None
    trust_code: bool = False  # the caller's: the report's explanations rebuild the model under it

    def outputs(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Model outputs and the dataset's own labels for ds[idx], in order, and the seconds the inference took
        once the images were on the device (synchronized)."""
        batch = 2000 if self.device.type == "cuda" else 256  # a GPU wants big batches; 2 CPU cores are fastest near 256
        loader = DeviceLoader(self.ds.images, self.ds.labels, index=idx, batch=batch, device=self.device,
                              mean=self.ckpt["mean"], std=self.ckpt["std"], stream=self.stream,
                              channels_last=self.channels_last)
        synchronize(self.device)
        t0 = time.perf_counter()
        outputs, labels = engine.infer(self.model, loader, amp_dtype=self.amp_dtype)  # ends on the host
        return outputs, labels, time.perf_counter() - t0


@dataclass
class _Scored:
    metrics: dict[str, Any]
    header: list[str]  # predictions.csv's columns after index and file
    cells: list[list]
    headline: str
    draw: Callable[[], object] = field(default=lambda: None)  # the task's plots


def evaluate(run: str | Path, *, dataset: ImageSet | None = None, extra: dict | None = None, device: str = "auto",
             data: str | None = None, tta: str | None = None, calibrate: bool | None = None,
             more_plots: Callable[[], object] | None = None, report: bool | None = None,
             amp: str | None = None, trust_code: bool = False) -> dict[str, Any]:
    """Test-split metrics of a run's best.pt, by its task, and report.html over everything the run wrote.

    Writes metrics.json, predictions.csv and plots/ (classify: confusion counts and row-normalized, as CSV too,
    per-class F1, ROC, PR, reliability, most confidently wrong; multilabel: thresholds.json fitted on val;
    regress: regression.png). `data=OTHER` scores the model on another dataset with the same class names
    (its test split if it has one, else every image) into RUN/eval_<name>/, leaving the run's own files alone.
    `tta` and `calibrate` default to the run's eval settings; calibration fits a temperature on the val split,
    stores it in best.pt, and predict uses it. `more_plots` draws the caller's own figures (training curves)
    after the headline is logged and before the report that shows them. `trust_code`: import the pkg.mod:Class
    model best.pt names (it runs that module's code)."""
    run_dir = rundir.finished(run)
    with rundir.lock(run_dir):  # it writes the run's scores and plots, and best.pt when calibrating: one writer
        return _evaluate(run_dir, dataset, extra, device, data, tta, calibrate, more_plots, report, amp, trust_code)


def _evaluate(run_dir: Path, dataset: ImageSet | None, extra: dict | None, device: str, data: str | None,
              tta: str | None, calibrate: bool | None, more_plots: Callable[[], object] | None, report: bool | None,
              amp: str | None, trust_code: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    ckpt = load_checkpoint(run_dir / "best.pt")
    task = ckpt.get("task", "classify")  # checkpoints from before other tasks existed are classifiers
    cfg = _run_config(ckpt, run_dir / "best.pt")
    tta = tta or cfg.eval.tta
    report = cfg.eval.report if report is None else report
    dev = pick_device(device)
    channels_last = resolve_channels_last(cfg.train.channels_last, dev)[0]  # the run's layout: its fast one
    model = models.from_checkpoint(ckpt, dev, channels_last, trust_code=trust_code, source=str(run_dir / "best.pt"))
    if tta != "none":
        model = TTA(model, tta, task, cfg.eval.tta_shift)
    split = rundir.read_json(run_dir / "split.json")
    out_dir, note = run_dir, {}
    if data is not None:
        ds, test_idx, out_dir, note = _other_data(data, ckpt, cfg, run_dir)
    else:
        ds = dataset if dataset is not None else load_data(cfg)[0]
        test_idx = np.asarray(split["test"], dtype=np.int64)
        if len(test_idx) and test_idx.max() >= len(ds):
            raise CnnfitError(f"the data for {run_dir} has changed since training ({len(ds)} images now); "
                              "evaluate against the original data, or score new data with data=OTHER")
    (out_dir / "plots").mkdir(exist_ok=True)
    job = _Scoring(model, ds, ckpt, dev, cfg.data.stream, channels_last, eval_amp(cfg.train.amp, dev, amp, task),
                   trust_code)
    outputs, labels, test_seconds = job.outputs(test_idx)
    val_idx = np.asarray(split["val"], dtype=np.int64) if data is None else np.zeros(0, dtype=np.int64)
    if task == "multilabel":
        scored = _multilabel(job, outputs, labels, val_idx, run_dir, own=data is None)
    elif task == "regress":
        scored = _regress(outputs, labels, ckpt, out_dir)
    else:
        calibrate = (cfg.eval.calibrate if calibrate is None else calibrate) and data is None
        scored = _classify(job, outputs, labels, val_idx, run_dir, out_dir, test_idx, calibrate=calibrate, tta=tta)
    # the number first: plots, predictions and the report take another 1-2 s
    log.info(f"{scored.headline}  ({len(labels)} images, best epoch {ckpt['epoch'] + 1})")
    if report:
        scored.draw()
        if more_plots is not None:
            more_plots()
    metrics = scored.metrics
    previous = rundir.read_json(out_dir / "metrics.json")
    kept = {k: v for k, v in previous.items() if k not in metrics}  # e.g. training timings survive a re-eval
    metrics.update({**kept, "task": task, "split": "test", "tta": tta, "amp": amp_name(job.amp_dtype),
                    "best_epoch": ckpt["epoch"] + 1, "val": ckpt["metrics"], "model": ckpt["model"], **note,
                    **(extra or {})})
    metrics.setdefault("environment", environment(str(dev)))
    metrics.setdefault("timings", {}).update(eval_seconds=time.perf_counter() - t0, test_seconds=test_seconds)
    rundir.write_scores(out_dir, metrics, ["index", "file", *scored.header],
                        [[i, ds.files[i] if ds.files else "", *row] for i, row in zip(test_idx.tolist(), scored.cells)])
    page = write_report(out_dir) if report else "none (eval.report=false)"
    log.info(f"metrics -> {out_dir / 'metrics.json'}, report -> {page}")
    return metrics


def _run_config(ckpt: dict, path: Path) -> Config:
    """The settings the run was trained with, as best.pt records them."""
    try:
        return Config.model_validate(ckpt.get("config"))
    except ValidationError as exc:
        raise CnnfitError(f"{path} holds no valid run config ({exc.errors()[0]['msg']}); it is damaged or not "
                          "written by cnnfit train") from None


def _multilabel(job: _Scoring, outputs: torch.Tensor, labels: torch.Tensor, val_idx: np.ndarray, run_dir: Path,
                own: bool) -> _Scored:
    """Thresholds from val, so the test split stays unseen until it is scored; another dataset uses the ones
    the run itself fitted."""
    classes = job.ckpt["classes"]
    saved = run_dir / "thresholds.json"
    if not own and saved.is_file():
        fitted = rundir.read_json(saved)
        thresholds = [fitted.get(c, 0.5) for c in classes]
    else:
        thresholds = fit_thresholds(*job.outputs(val_idx)[:2]) if len(val_idx) else [0.5] * len(classes)
    metrics = multilabel_metrics(outputs, labels, classes, thresholds)
    metrics["thresholds_from"] = f"val ({len(val_idx)} images), best F1 per label" if len(val_idx) else "0.5"
    if own:
        rundir.write_json(saved, dict(zip(classes, thresholds)))
    probs = torch.sigmoid(outputs).numpy()  # (N, L)
    cells = [[t, p, *(f"{q:.6f}" for q in row)] for t, p, row in zip(
        label_sets(labels.numpy() > 0.5, classes), label_sets(probs >= np.asarray(thresholds), classes), probs)]
    headline = (f"test micro F1 {metrics['micro']['f1']:.4f}  macro F1 {metrics['macro']['f1']:.4f}  "
                f"subset accuracy {metrics['subset_accuracy']:.4f}")
    return _Scored(metrics, ["true", "pred", *(f"prob_{c}" for c in classes)], cells, headline)


def _regress(outputs: torch.Tensor, labels: torch.Tensor, ckpt: dict, out_dir: Path) -> _Scored:
    """(N, 1) standardized outputs -> the targets' own units (the train split's mean/std)."""
    mean, std = ckpt.get("target_scale") or (0.0, 1.0)
    pred, true = outputs.reshape(-1).double() * std + mean, labels.double()
    metrics = regression_metrics(pred, true)
    cells = [[f"{t:.6g}", f"{p:.6g}", f"{p - t:.6g}"] for t, p in zip(true.tolist(), pred.tolist())]
    return _Scored(metrics, ["true", "pred", "error"], cells,
                   f"test MAE {metrics['mae']:.4g}  RMSE {metrics['rmse']:.4g}  R2 {metrics['r2']:.4f}",
                   partial(plot_regression, true.numpy(), pred.numpy(), out_dir / "plots" / "regression.png",
                           name=ckpt["classes"][0]))


def _classify(job: _Scoring, raw: torch.Tensor, labels: torch.Tensor, val_idx: np.ndarray, run_dir: Path,
              out_dir: Path, test_idx: np.ndarray, *, calibrate: bool, tta: str) -> _Scored:
    classes = job.ckpt["classes"]
    calibration = job.ckpt.get("calibration")  # fitted earlier: scores use the probabilities predict would give
    val = job.outputs(val_idx)[:2] if len(val_idx) else None  # (logits, labels): calibration and "unknown"
    if calibrate:  # a temperature fitted on val, written into best.pt so predict applies it too
        if val is None:
            raise CnnfitError("calibrate=true needs a validation split, and this run has none")
        calibration = {"temperature": fit_temperature(*val), "tta": tta, "fitted_on": f"val ({len(val_idx)} images)"}
        job.ckpt["calibration"] = calibration
    outputs = raw / calibration["temperature"] if calibration else raw
    metrics = classification_metrics(outputs, labels, classes)
    if val is not None:  # the "unknown" threshold, fitted on val at the temperature predict uses
        job.ckpt["reject"], metrics["reject"] = _reject(val, raw, labels, (calibration or {}).get("temperature", 1.0))
        rundir.save_best(run_dir, job.ckpt)
    ci = metrics["intervals"] = _intervals(outputs, labels, len(classes))
    headline = (f"test accuracy {metrics['accuracy']:.4f} ({ci['level']:.0%} CI {ci['accuracy'][0]:.3f}-"
                f"{ci['accuracy'][1]:.3f})  macro F1 {metrics['macro']['f1']:.4f}")
    if calibration:
        before = classification_metrics(raw, labels, classes)
        cal = metrics["calibration"] = {**calibration, "ece_before": before["ece"], "ece_after": metrics["ece"],
                                        "log_loss_before": before["log_loss"], "log_loss_after": metrics["log_loss"]}
        headline += f"  ECE {cal['ece_before']:.4f} -> {cal['ece_after']:.4f} (T={cal['temperature']:.3f})"
    probs = outputs.softmax(1)  # (N, K): every class's probability, so any metric can be recomputed
    conf, pred = probs.max(1)
    cells = [[classes[t], classes[p], f"{c:.6f}", *(f"{q:.6g}" for q in row)]
             for t, p, c, row in zip(labels.tolist(), pred.tolist(), conf.tolist(), probs.tolist())]
    draw = partial(_classify_plots, out_dir, metrics, raw, outputs if calibration else None, labels, job.ds, test_idx,
                   job, run_dir if out_dir == run_dir else None)
    return _Scored(metrics, ["true", "pred", "confidence", *(f"prob_{c}" for c in classes)], cells, headline, draw)


def _reject(val: tuple[torch.Tensor, torch.Tensor], raw: torch.Tensor, labels: torch.Tensor,
            temperature: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """best.pt's "reject" (the threshold for reject.PRECISION on the calibrated top probability, and every val
    image's scores, so predict can fit another target without the data) and metrics.json's (the threshold, its val
    figures and what it gives on test, for both scores)."""
    z_val, y_val = val[0].numpy(), val[1].numpy()
    right_val, right_test = z_val.argmax(1) == y_val, raw.numpy().argmax(1) == labels.numpy()
    order = np.random.default_rng(0).permutation(len(y_val))[:REJECT_KEPT]  # a bounded, unbiased sample
    kept = {kind: scores(z_val, temperature, kind)[order].astype(np.float32).tolist() for kind in SCORES}
    saved = {"score": "maxprob", **fit_reject(np.asarray(kept["maxprob"]), right_val[order], precision=PRECISION),
             "temperature": temperature, "val": {**kept, "correct": right_val[order].tolist()}}
    shown = {}
    for kind in SCORES:
        fitted = fit_reject(np.asarray(kept[kind]), right_val[order], precision=PRECISION)
        keep = answered(scores(raw.numpy(), temperature, kind), fitted["threshold"])
        shown[kind] = {**fitted, "test_coverage": float(keep.mean()),
                       "test_precision": float(right_test[keep].mean()) if keep.any() else None}
    return saved, {"score": "maxprob", "precision_target": PRECISION, **shown}


def _intervals(outputs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, Any]:
    """metrics.json's "intervals": bootstrap ends of accuracy, balanced accuracy and macro-F1 over the test
    images, and how they were drawn."""
    pred = torch.softmax(outputs.double(), 1).argmax(1)  # the predictions classification_metrics scores
    ends = intervals(labels.numpy(), pred.numpy(), num_classes=num_classes, **_BOOTSTRAP)
    return {**{name: list(lo_hi) for name, lo_hi in ends.items()}, "resamples": _BOOTSTRAP["n"],
            "level": _BOOTSTRAP["level"], "seed": _BOOTSTRAP["seed"]}


def _classify_plots(out_dir: Path, metrics: dict, raw: torch.Tensor, calibrated: torch.Tensor | None,
                    labels: torch.Tensor, ds: ImageSet, idx: np.ndarray, job: _Scoring, own: Path | None) -> None:
    """Confusion matrix as CSV (counts and row-normalized) and the classifier's plots, in out_dir/plots, with
    the explanations of its answers; `own`: the run directory when ds is the run's own data, whose training
    images the nearest-neighbour figure searches."""
    plots, classes = out_dir / "plots", metrics["classes"]
    for name, key in (("confusion.csv", "confusion_matrix"), ("confusion_normalized.csv", "confusion_normalized")):
        write_csv(plots / name, ["true \\ predicted", *classes],
                  [[c, *row] for c, row in zip(classes, metrics[key])])
    plot_confusion(metrics["confusion_matrix"], classes, plots / "confusion.png")
    plot_confusion(metrics["confusion_matrix"], classes, plots / "confusion_normalized.png", normalize=True)
    plot_per_class_f1(metrics["per_class"], plots / "per_class_f1.png")
    final = calibrated if calibrated is not None else raw
    probs, y = final.softmax(1).double().numpy(), labels.numpy()  # (N, K), (N,)
    plot_roc(probs, y, classes, plots / "roc.png")
    plot_pr(probs, y, classes, plots / "pr.png")
    before = raw.softmax(1).double().numpy()
    plot_reliability(before, y, plots / "reliability.png", probs_after=probs if calibrated is not None else None)
    conf, pred = probs.max(1), probs.argmax(1)
    wrong = np.flatnonzero(pred != y)
    worst = wrong[np.argsort(-conf[wrong], kind="stable")][:24]  # the most confidently wrong test images
    images = np.asarray(ds.images[idx[worst]]) if len(worst) else np.zeros((0, *ds.shape), dtype=np.uint8)
    plot_wrong(images, y[worst], pred[worst], conf[worst], classes, plots / "wrong.png")
    train = np.asarray(rundir.read_json(own / "split.json").get("train", []), dtype=np.int64) if own else None
    draw_explanations(plots, job.ckpt, job.device, ds, idx, y, pred, conf, train, trust_code=job.trust_code)


def _other_data(source: str, ckpt: dict, cfg: Config, run_dir: Path) -> tuple[ImageSet, np.ndarray, Path, dict]:
    """Another dataset, decoded as the run's own was, with its classes matched to the model's by name."""
    other = cfg.model_copy(update={"data": cfg.data.model_copy(update={
        "source": source, "imgsz": ckpt["imgsz"], "channels": ckpt["channels"], "resize": ckpt["resize"],
        "fraction": 1.0, "per_class": None, "exclude": []})})
    ds = load_data(other)[0]
    if ds.task != ckpt.get("task", "classify"):
        raise CnnfitError(f"'{source}' holds {ds.task} data but the model was trained for "
                          f"{ckpt.get('task', 'classify')}; evaluate it on data of the same kind")
    model_classes = ckpt["classes"]
    if ds.task != "classify":
        if list(ds.classes) != list(model_classes):
            raise CnnfitError(f"'{source}' has labels {ds.classes} but the model has {model_classes}; "
                              "use data with the same label names")
        return ds, np.arange(len(ds)), rundir.eval_dir(run_dir, source), {"dataset": source}
    position = {c: i for i, c in enumerate(model_classes)}
    shared = [c for c in ds.classes if c in position]
    if not shared:
        raise CnnfitError(f"none of the classes of '{source}' ({', '.join(ds.classes[:6])}...) are the model's "
                          f"({', '.join(model_classes[:6])}...); class names must match (folder names)")
    test_id = SPLITS.index("test")
    use_test = ds.origin is not None and (ds.origin == test_id).any()
    idx = np.flatnonzero(ds.origin == test_id) if use_test else np.arange(len(ds))
    unknown = [c for c in ds.classes if c not in position]
    missing = [c for c in model_classes if c not in ds.classes]
    counts = np.bincount(ds.labels[idx], minlength=len(ds.classes))  # per class of the other dataset
    log.info(f"{source}: {int(counts[[ds.classes.index(c) for c in shared]].sum())} images "
             f"({'its test split' if use_test else 'every image'}), {len(shared)} of the model's "
             f"{len(model_classes)} classes")
    if unknown:
        log.info("classes the model does not know, skipped: " + ", ".join(
            f"{c} ({counts[ds.classes.index(c)]} images)" for c in unknown))
    if missing:
        log.info(f"model classes absent from {source} (support 0): {', '.join(missing)}")
    idx = idx[np.isin(ds.labels[idx], [ds.classes.index(c) for c in shared])]
    remap = np.array([position.get(c, -1) for c in ds.classes], dtype=np.int64)  # other's index -> model's
    ds = ImageSet(ds.images, remap[ds.labels], list(model_classes), ds.files, ds.origin, ds.skipped, ds.task,
                  ds.native)
    note = {"dataset": source, "dataset_split": "test" if use_test else "all", "unknown_classes": unknown,
            "absent_classes": missing}
    return ds, idx, rundir.eval_dir(run_dir, source), note


__all__ = ["evaluate"]
