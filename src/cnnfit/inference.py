"""Evaluation and prediction rebuilt from a run directory alone: the checkpoint says how to build the model,
decode the images and read its outputs."""

from __future__ import annotations

import csv
import glob
import json
import re
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from rich.console import Console

from cnnfit import data as D
from cnnfit import engine as E
from cnnfit import models
from cnnfit.config import Config
from cnnfit.device import amp_name, cpu_has_bf16, pick_device, resolve_amp, resolve_channels_last, synchronize
from cnnfit.errors import CnnfitError
from cnnfit.files import write_atomic
from cnnfit.eval import classification_metrics, fit_thresholds, multilabel_metrics, regression_metrics
from cnnfit.eval.calibration import fit_temperature
from cnnfit.eval.environment import environment
from cnnfit.eval.plots import (plot_confusion, plot_per_class_f1, plot_pr, plot_regression, plot_reliability,
                               plot_roc, plot_wrong)
from cnnfit.eval.report import write_report
from cnnfit.eval.tta import TTA
from cnnfit.prepare import load_data


def _model_from_checkpoint(ckpt: dict, device: torch.device, channels_last: bool = False) -> torch.nn.Module:
    """channels_last: NHWC weights, 2.2x faster fp32 inference than NCHW for fastnet on 2 CPU cores (oneDNN)."""
    model = models.create(ckpt["model"], num_classes=len(ckpt["classes"]), in_chans=ckpt["channels"],
                          **ckpt["model_kwargs"])
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format).eval()


def _no_plots() -> None:
    """Multilabel results have no plots of their own: thresholds.json and the report say it all."""


def _run_dir(run: str | Path) -> Path:
    path = Path(run)
    if not (path / "best.pt").is_file():
        raise CnnfitError(f"'{run}' is not a finished run directory (no best.pt); pass e.g. runs/train")
    return path


def _outputs(model: torch.nn.Module, ds: D.ImageSet, idx: np.ndarray, ckpt: dict, dev: torch.device,
             stream: bool | None, channels_last: bool = False,
             amp_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Model outputs and the dataset's own labels (regression targets unscaled) for ds[idx], in order, and the
    seconds the inference took once the images were on the device (synchronized)."""
    batch = 2000 if dev.type == "cuda" else 256  # a GPU wants big batches; 2 CPU cores are fastest near 256
    loader = D.DeviceLoader(ds.images, ds.labels, index=idx, batch=batch, device=dev, mean=ckpt["mean"],
                            std=ckpt["std"], stream=stream, channels_last=channels_last)
    synchronize(dev)
    t0 = time.perf_counter()
    outputs, labels = E.infer(model, loader, amp_dtype=amp_dtype)  # ends on the host: the device is done
    return outputs, labels, time.perf_counter() - t0


def _unscale(outputs: torch.Tensor, ckpt: dict) -> torch.Tensor:
    """(N, 1) standardized regression outputs -> (N,) in the targets' own units (the train split's mean/std)."""
    mean, std = ckpt.get("target_scale") or (0.0, 1.0)
    return outputs.reshape(-1).double() * std + mean


def _label_sets(hits: np.ndarray, names: list[str]) -> list[str]:
    """(N, L) bool -> 'a;b' per row, the manifest's own syntax ('' for none)."""
    return [";".join(names[k] for k in np.flatnonzero(row)) for row in hits]


def eval_amp(trained: str, device: torch.device, amp: str | None = None,
             task: str = "classify") -> torch.dtype | None:
    """The autocast dtype to score in: a classifier's, the precision the run trained in (its validation used it
    too), unless `amp` (auto, bf16, fp16, off, as train.amp) says otherwise; fp32 where this device lacks the
    run's dtype, and for regression, whose outputs are the numbers themselves (bf16 keeps 3 digits). On 2 CPU
    cores, bf16 scored the 10,000 MNIST test images in 0.54 s against 1.03 s in fp32, with one prediction in
    10,000 different."""
    if amp is not None:
        return resolve_amp(amp, device)[0]
    if task == "regress":
        return None
    if trained == "bf16" and (device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16())):
        return torch.bfloat16
    if trained == "fp16" and device.type == "cuda":
        return torch.float16
    return None


def evaluate(run: str | Path, *, console: Console | None = None, dataset: D.ImageSet | None = None,
             extra: dict | None = None, device: str = "auto", data: str | None = None, tta: str | None = None,
             calibrate: bool | None = None, more_plots: Callable[[], object] | None = None,
             report: bool | None = None, amp: str | None = None) -> dict[str, Any]:
    """Test-split metrics of a run's best.pt, by its task, and report.html over everything the run wrote.

    Writes metrics.json, predictions.csv and plots/ (classify: confusion counts and row-normalized, as CSV too,
    per-class F1, ROC, PR, reliability, most confidently wrong; multilabel: thresholds.json fitted on val;
    regress: regression.png). `data=OTHER` scores the model on another dataset with the same class names
    (its test split if it has one, else every image) into RUN/eval_<name>/, leaving the run's own files alone.
    `tta` and `calibrate` default to the run's eval settings; calibration fits a temperature on the val split,
    stores it in best.pt, and predict uses it. `more_plots` draws the caller's own figures (training curves)
    after the headline is printed and before the report that shows them."""
    t0 = time.perf_counter()
    run_dir = _run_dir(run)
    console = console or Console()
    ckpt = E.load_checkpoint(run_dir / "best.pt")
    task = ckpt.get("task", "classify")  # checkpoints from before other tasks existed are classifiers
    cfg = Config.model_validate(ckpt["config"])
    tta = tta or cfg.eval.tta
    calibrate = cfg.eval.calibrate if calibrate is None else calibrate
    report = cfg.eval.report if report is None else report
    classes = ckpt["classes"]
    dev = pick_device(device)
    channels_last = resolve_channels_last(cfg.train.channels_last, dev)[0]  # the run's layout: its fast one
    amp_dtype = eval_amp(cfg.train.amp, dev, amp, task)
    model = _model_from_checkpoint(ckpt, dev, channels_last)
    if tta != "none":
        model = TTA(model, tta, task, cfg.eval.tta_shift)
    split = json.loads((run_dir / "split.json").read_text())
    out_dir, note = run_dir, {}
    if data is not None:
        ds, test_idx, out_dir, note = _other_data(data, ckpt, cfg, run_dir, console)
    else:
        ds = dataset if dataset is not None else load_data(cfg)[0]
        test_idx = np.asarray(split["test"], dtype=np.int64)
        if len(test_idx) and test_idx.max() >= len(ds):
            raise CnnfitError(f"the data for {run_dir} has changed since training ({len(ds)} images now); "
                              "evaluate against the original data, or score new data with data=OTHER")
    plots = out_dir / "plots"
    plots.mkdir(exist_ok=True)

    def outputs_of(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return _outputs(model, ds, idx, ckpt, dev, cfg.data.stream, channels_last, amp_dtype)[:2]

    outputs, labels, test_seconds = _outputs(model, ds, test_idx, ckpt, dev, cfg.data.stream, channels_last,
                                             amp_dtype)
    draw = _no_plots  # the task's plots, drawn once its headline is printed
    if task == "multilabel":  # thresholds from val, so the test split stays unseen until it is scored
        val_idx = np.asarray(split["val"], dtype=np.int64) if data is None else np.zeros(0, dtype=np.int64)
        saved = run_dir / "thresholds.json"
        if data is not None and saved.is_file():  # another dataset: the thresholds the run itself fitted
            fitted = json.loads(saved.read_text())
            thresholds = [fitted.get(c, 0.5) for c in classes]
        else:
            thresholds = fit_thresholds(*outputs_of(val_idx)) if len(val_idx) else [0.5] * len(classes)
        metrics = multilabel_metrics(outputs, labels, classes, thresholds)
        metrics["thresholds_from"] = f"val ({len(val_idx)} images), best F1 per label" if len(val_idx) else "0.5"
        if data is None:
            (run_dir / "thresholds.json").write_text(json.dumps(dict(zip(classes, thresholds)), indent=2))
        probs = torch.sigmoid(outputs).numpy()  # (N, L)
        header = ["index", "file", "true", "pred", *(f"prob_{c}" for c in classes)]
        cells = [[t, p, *(f"{q:.6f}" for q in row)] for t, p, row in zip(
            _label_sets(labels.numpy() > 0.5, classes), _label_sets(probs >= np.asarray(thresholds), classes), probs)]
        summary = (f"test micro F1 {metrics['micro']['f1']:.4f}  macro F1 {metrics['macro']['f1']:.4f}  "
                   f"subset accuracy {metrics['subset_accuracy']:.4f}")
    elif task == "regress":
        pred, true = _unscale(outputs, ckpt), labels.double()
        metrics = regression_metrics(pred, true)
        draw = partial(plot_regression, true.numpy(), pred.numpy(), plots / "regression.png", name=classes[0])
        header = ["index", "file", "true", "pred", "error"]
        cells = [[f"{t:.6g}", f"{p:.6g}", f"{p - t:.6g}"] for t, p in zip(true.tolist(), pred.tolist())]
        summary = f"test MAE {metrics['mae']:.4g}  RMSE {metrics['rmse']:.4g}  R2 {metrics['r2']:.4f}"
    else:
        raw = outputs
        calibration = None
        if calibrate and data is None:
            val_idx = np.asarray(split["val"], dtype=np.int64)
            calibration = _calibrate(run_dir, ckpt, *outputs_of(val_idx), tta)
        elif ckpt.get("calibration"):  # fitted earlier: scores use the probabilities predict would give
            calibration = ckpt["calibration"]
        if calibration:
            outputs = raw / calibration["temperature"]
        metrics = classification_metrics(outputs, labels, classes)
        if calibration:
            before = classification_metrics(raw, labels, classes)
            metrics["calibration"] = {**calibration, "ece_before": before["ece"], "ece_after": metrics["ece"],
                                      "log_loss_before": before["log_loss"], "log_loss_after": metrics["log_loss"]}
        draw = partial(_classify_files, out_dir, metrics, raw, outputs if calibration else None, labels, ds, test_idx)
        probs = outputs.softmax(1)  # (N, K): every class's probability, so any metric can be recomputed
        conf, pred = probs.max(1)
        header = ["index", "file", "true", "pred", "confidence", *(f"prob_{c}" for c in classes)]
        cells = [[classes[t], classes[p], f"{c:.6f}", *(f"{q:.6g}" for q in row)]
                 for t, p, c, row in zip(labels.tolist(), pred.tolist(), conf.tolist(), probs.tolist())]
        summary = f"test accuracy {metrics['accuracy']:.4f}  macro F1 {metrics['macro']['f1']:.4f}"
        if calibration:
            cal = metrics["calibration"]
            summary += f"  ECE {cal['ece_before']:.4f} -> {cal['ece_after']:.4f} (T={cal['temperature']:.3f})"
    # the number first: plots, predictions and the report take another 1-2 s
    console.print(f"{summary}  ({len(labels)} images, best epoch {ckpt['epoch'] + 1})", highlight=False, soft_wrap=True)
    if report:
        draw()
        if more_plots is not None:
            more_plots()
    previous = json.loads((out_dir / "metrics.json").read_text()) if (out_dir / "metrics.json").exists() else {}
    kept = {k: v for k, v in previous.items() if k not in metrics}  # e.g. training timings survive a re-eval
    metrics.update({**kept, "task": task, "split": "test", "tta": tta,
                    "amp": amp_name(amp_dtype),
                    "best_epoch": ckpt["epoch"] + 1,
                    "val": ckpt["metrics"], "model": ckpt["model"], **note, **(extra or {})})
    metrics.setdefault("environment", environment(str(dev)))
    metrics.setdefault("timings", {}).update(eval_seconds=time.perf_counter() - t0, test_seconds=test_seconds)
    _write_json(out_dir / "metrics.json", metrics)
    with open(out_dir / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for idx, row in zip(test_idx.tolist(), cells):
            w.writerow([idx, ds.files[idx] if ds.files else "", *row])
    page = write_report(out_dir) if report else "none (eval.report=false)"
    console.print(f"metrics -> {out_dir / 'metrics.json'}, report -> {page}", highlight=False, soft_wrap=True)
    return metrics


def _write_json(path: Path, value: Any) -> None:
    write_atomic(path, json.dumps(value, indent=2))


def _calibrate(run_dir: Path, ckpt: dict, val_outputs: torch.Tensor, val_labels: torch.Tensor,
               tta: str) -> dict[str, Any]:
    """Temperature fitted on the val split, written into best.pt (atomically) so predict applies it too."""
    if not len(val_labels):
        raise CnnfitError("calibrate=true needs a validation split, and this run has none")
    calibration = {"temperature": fit_temperature(val_outputs, val_labels), "tta": tta,
                   "fitted_on": f"val ({len(val_labels)} images)"}
    E.save_checkpoint({**ckpt, "calibration": calibration}, run_dir / "best.pt")
    return calibration


def _classify_files(out_dir: Path, metrics: dict, raw: torch.Tensor, calibrated: torch.Tensor | None,
                    labels: torch.Tensor, ds: D.ImageSet, idx: np.ndarray) -> None:
    """Confusion matrix as CSV (counts and row-normalized) and the classifier's plots, in out_dir/plots."""
    plots, classes = out_dir / "plots", metrics["classes"]
    for name, key in (("confusion.csv", "confusion_matrix"), ("confusion_normalized.csv", "confusion_normalized")):
        with open(plots / name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["true \\ predicted", *classes])
            w.writerows([c, *row] for c, row in zip(classes, metrics[key]))
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


def _other_data(source: str, ckpt: dict, cfg: Config, run_dir: Path,
                console: Console) -> tuple[D.ImageSet, np.ndarray, Path, dict]:
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
        idx = np.arange(len(ds))
        return ds, idx, _eval_dir(run_dir, source), {"dataset": source}
    position = {c: i for i, c in enumerate(model_classes)}
    shared = [c for c in ds.classes if c in position]
    if not shared:
        raise CnnfitError(f"none of the classes of '{source}' ({', '.join(ds.classes[:6])}...) are the model's "
                          f"({', '.join(model_classes[:6])}...); class names must match (folder names)")
    test_id = D.SPLITS.index("test")
    use_test = ds.origin is not None and (ds.origin == test_id).any()
    idx = np.flatnonzero(ds.origin == test_id) if use_test else np.arange(len(ds))
    unknown = [c for c in ds.classes if c not in position]
    missing = [c for c in model_classes if c not in ds.classes]
    counts = np.bincount(ds.labels[idx], minlength=len(ds.classes))  # per class of the other dataset
    lines = [f"{source}: {int(counts[[ds.classes.index(c) for c in shared]].sum())} images "
             f"({'its test split' if use_test else 'every image'}), {len(shared)} of the model's "
             f"{len(model_classes)} classes"]
    if unknown:
        lines.append("classes the model does not know, skipped: " + ", ".join(
            f"{c} ({counts[ds.classes.index(c)]} images)" for c in unknown))
    if missing:
        lines.append(f"model classes absent from {source} (support 0): {', '.join(missing)}")
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    idx = idx[np.isin(ds.labels[idx], [ds.classes.index(c) for c in shared])]
    remap = np.array([position.get(c, -1) for c in ds.classes], dtype=np.int64)  # other's index -> model's
    ds = D.ImageSet(ds.images, remap[ds.labels], list(model_classes), ds.files, ds.origin, ds.skipped, ds.task,
                    ds.native)
    note = {"dataset": source, "dataset_split": "test" if use_test else "all", "unknown_classes": unknown,
            "absent_classes": missing}
    return ds, idx, _eval_dir(run_dir, source), note


def _eval_dir(run_dir: Path, source: str) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(source.rstrip("/")).name or source).strip("_.") or "data"
    out = run_dir / f"eval_{name}"
    out.mkdir(exist_ok=True)
    return out


def _expand(paths: list[str]) -> list[Path]:
    found: list[Path] = []
    for p in paths:
        hits = [Path(h) for h in sorted(glob.glob(p, recursive=True))] or [Path(p)]
        for hit in hits:
            if hit.is_dir():
                found += sorted(f for f in hit.rglob("*") if f.is_file() and D.is_image_name(f.name)
                                and not any(part.startswith(".") for part in f.relative_to(hit).parts))
            elif hit.is_file():
                found.append(hit)
            else:
                raise CnnfitError(f"'{p}' matches no file or folder; pass image files, folders or globs")
    return found


def predict(run: str | Path, paths: list[str], *, topk: int = 5, out: str | Path | None = None,
            device: str = "auto", console: Console | None = None, tta: str | None = None,
            format: str = "csv") -> list[dict[str, Any]]:
    """Predictions for image files, decoded exactly as training decoded them, from a run directory or an exported
    .onnx (both through `load_predictor`); writes a CSV, or with format=json a list of objects. By the run's task:
    top-k classes (file, top1, prob1, ...), label sets at the fitted thresholds (file, labels 'a;b',
    prob_<label> ...) or the target in its own units (file, value). Probabilities use the run's calibration
    temperature when eval fitted one; `tta` defaults to the run's eval.tta (an .onnx graph has none).
    Files that cannot be decoded are listed and skipped."""
    from cnnfit.predictor import BATCH, load_predictor

    if format not in ("csv", "json"):
        raise CnnfitError(f"format={format!r} is not an output format; choose from: csv, json")
    console = console or Console()
    predictor = load_predictor(run, device=device, tta=tta)
    classes, task = predictor.classes, predictor.task
    files = _expand(paths)
    if not files:
        raise CnnfitError("no image files found in the given paths")
    kept: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    chunks: list[np.ndarray] = []
    for i in range(0, len(files), BATCH):  # decode and infer BATCH files at a time: memory stays flat
        part = files[i:i + BATCH]
        arrays = D.map_images(predictor.decode, part)
        good = [(f, a) for f, a in zip(part, arrays) if not isinstance(a, D.DecodeError)]
        skipped += [(f, str(a)) for f, a in zip(part, arrays) if isinstance(a, D.DecodeError)]
        if good:
            kept += [f for f, _ in good]
            chunks.append(predictor.predict(np.stack([a for _, a in good])))  # (n, K)
    for f, why in skipped:
        console.print(f"skipped {f}: {why}", markup=False, highlight=False, soft_wrap=True)
    if not kept:
        raise CnnfitError("none of the given files could be decoded as an image")
    probs = np.concatenate(chunks)  # (N, K)
    home = Path(predictor.source) if predictor.backend == "torch" else Path(predictor.source).parent
    if task == "multilabel":  # each label on its own, at the thresholds evaluate fitted on val
        saved = home / "thresholds.json"
        fitted = json.loads(saved.read_text()) if saved.is_file() else {}
        cut = np.array([fitted.get(c, 0.5) for c in classes])
        rows = [{"file": str(f), "labels": sets, **{f"prob_{c}": round(float(q), 6) for c, q in zip(classes, p)}}
                for f, sets, p in zip(kept, _label_sets(probs >= cut, classes), probs)]
        fields = ["file", "labels", *(f"prob_{c}" for c in classes)]
    elif task == "regress":
        rows = [{"file": str(f), "value": float(v)} for f, v in zip(kept, probs[:, 0].tolist())]
        fields = ["file", "value"]
    else:
        k = min(topk, len(classes))
        ids = np.argsort(-probs, axis=1, kind="stable")[:, :k]  # (N, k), most probable first
        top = np.take_along_axis(probs, ids, axis=1)
        rows = [{"file": str(f), **{f"top{j + 1}": classes[ids[i, j]] for j in range(k)},
                 **{f"prob{j + 1}": round(float(top[i, j]), 6) for j in range(k)}} for i, f in enumerate(kept)]
        fields = ["file"] + [x for j in range(k) for x in (f"top{j + 1}", f"prob{j + 1}")]
    out_path = Path(out) if out else _free_name(home / f"predict.{format}")
    if format == "json":
        write_atomic(out_path, json.dumps(rows, indent=2))
    else:
        with open(out_path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)
    console.print(f"{len(rows)} predictions -> {out_path}" + (f" ({len(skipped)} skipped)" if skipped else ""),
                  markup=False, soft_wrap=True)
    return rows


def _free_name(path: Path) -> Path:
    stem, suffix, i = path.stem, path.suffix, 2
    while path.exists():
        path = path.with_name(f"{stem}{i}{suffix}")
        i += 1
    return path


__all__ = ["evaluate", "predict"]
