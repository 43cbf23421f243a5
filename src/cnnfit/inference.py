"""Evaluation and prediction rebuilt from a run directory alone: the checkpoint says how to build the model,
decode the images and read its outputs."""

from __future__ import annotations

import csv
import glob
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from cnnfit import data as D
from cnnfit import engine as E
from cnnfit import models
from cnnfit.config import Config
from cnnfit.device import pick_device
from cnnfit.errors import CnnfitError
from cnnfit.eval import classification_metrics, fit_thresholds, multilabel_metrics, plot_confusion, regression_metrics
from cnnfit.eval.plots import plot_regression
from cnnfit.prepare import load_data


def _model_from_checkpoint(ckpt: dict, device: torch.device) -> torch.nn.Module:
    model = models.create(ckpt["model"], num_classes=len(ckpt["classes"]), in_chans=ckpt["channels"],
                          **ckpt["model_kwargs"])
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval()


def _run_dir(run: str | Path) -> Path:
    path = Path(run)
    if not (path / "best.pt").is_file():
        raise CnnfitError(f"'{run}' is not a finished run directory (no best.pt); pass e.g. runs/train")
    return path


def _outputs(model: torch.nn.Module, ds: D.ImageSet, idx: np.ndarray, ckpt: dict, dev: torch.device,
             stream: bool | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Model outputs and the dataset's own labels (regression targets unscaled) for ds[idx], in order."""
    loader = D.DeviceLoader(ds.images, ds.labels, index=idx, batch=256, device=dev, mean=ckpt["mean"],
                            std=ckpt["std"], stream=stream)
    return E.infer(model, loader)


def _unscale(outputs: torch.Tensor, ckpt: dict) -> torch.Tensor:
    """(N, 1) standardized regression outputs -> (N,) in the targets' own units (the train split's mean/std)."""
    mean, std = ckpt.get("target_scale") or (0.0, 1.0)
    return outputs.reshape(-1).double() * std + mean


def _label_sets(hits: np.ndarray, names: list[str]) -> list[str]:
    """(N, L) bool -> 'a;b' per row, the manifest's own syntax ('' for none)."""
    return [";".join(names[k] for k in np.flatnonzero(row)) for row in hits]


def evaluate(run: str | Path, *, console: Console | None = None, dataset: D.ImageSet | None = None,
             extra: dict | None = None, device: str = "auto") -> dict[str, Any]:
    """Test-split metrics of a run's best.pt, by its task; writes metrics.json and predictions.csv, and
    confusion.png (classify), thresholds.json fitted on val (multilabel) or regression.png (regress)."""
    run_dir = _run_dir(run)
    console = console or Console()
    ckpt = E.load_checkpoint(run_dir / "best.pt")
    task = ckpt.get("task", "classify")  # checkpoints from before other tasks existed are classifiers
    cfg = Config.model_validate(ckpt["config"])
    ds = dataset if dataset is not None else load_data(cfg)[0]
    split = json.loads((run_dir / "split.json").read_text())
    test_idx = np.asarray(split["test"], dtype=np.int64)
    if len(test_idx) and test_idx.max() >= len(ds):
        raise CnnfitError(f"the data for {run_dir} has changed since training ({len(ds)} images now); "
                          "evaluate against the original data")
    dev = pick_device(device)
    model = _model_from_checkpoint(ckpt, dev)
    outputs, labels = _outputs(model, ds, test_idx, ckpt, dev, cfg.data.stream)
    classes = ckpt["classes"]
    if task == "multilabel":  # thresholds from val, so the test split stays unseen until it is scored
        val_idx = np.asarray(split["val"], dtype=np.int64)
        thresholds = fit_thresholds(*_outputs(model, ds, val_idx, ckpt, dev, cfg.data.stream)) if len(
            val_idx) else [0.5] * len(classes)
        metrics = multilabel_metrics(outputs, labels, classes, thresholds)
        metrics["thresholds_from"] = f"val ({len(val_idx)} images), best F1 per label" if len(val_idx) else "0.5"
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
        plot_regression(true.numpy(), pred.numpy(), run_dir / "regression.png", name=classes[0])
        header = ["index", "file", "true", "pred", "error"]
        cells = [[f"{t:.6g}", f"{p:.6g}", f"{p - t:.6g}"] for t, p in zip(true.tolist(), pred.tolist())]
        summary = f"test MAE {metrics['mae']:.4g}  RMSE {metrics['rmse']:.4g}  R2 {metrics['r2']:.4f}"
    else:
        metrics = classification_metrics(outputs, labels, classes)
        plot_confusion(metrics["confusion_matrix"], classes, run_dir / "confusion.png")
        conf, pred = outputs.softmax(1).max(1)
        header = ["index", "file", "true", "pred", "confidence"]
        cells = [[classes[t], classes[p], f"{c:.6f}"] for t, p, c in zip(labels.tolist(), pred.tolist(), conf.tolist())]
        summary = f"test accuracy {metrics['accuracy']:.4f}  macro F1 {metrics['macro']['f1']:.4f}"
    previous = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").exists() else {}
    kept = {k: v for k, v in previous.items() if k not in metrics}  # e.g. training timings survive a re-eval
    metrics.update({**kept, "task": task, "split": "test", "best_epoch": ckpt["epoch"] + 1, "val": ckpt["metrics"],
                    **(extra or {})})
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    with open(run_dir / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for idx, row in zip(test_idx.tolist(), cells):
            w.writerow([idx, ds.files[idx] if ds.files else "", *row])
    console.print(f"{summary}  ({len(labels)} images, best epoch {metrics['best_epoch']}) -> "
                  f"{run_dir / 'metrics.json'}")
    return metrics


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
            device: str = "auto", console: Console | None = None) -> list[dict[str, Any]]:
    """Predictions for image files, decoded exactly as training decoded them; writes a CSV. By the run's task:
    top-k classes (file, top1, prob1, ...), label sets at the fitted thresholds (file, labels 'a;b',
    prob_<label> ...) or the target in its own units (file, value)."""
    run_dir = _run_dir(run)
    console = console or Console()
    ckpt = E.load_checkpoint(run_dir / "best.pt")
    files = _expand(paths)
    if not files:
        raise CnnfitError("no image files found in the given paths")
    arrays = D.map_images(lambda f: D.decode_image(f, ckpt["imgsz"], ckpt["channels"], ckpt["resize"]), files)
    decoded = [a for a in arrays if not isinstance(a, D.DecodeError)]
    kept = [f for f, a in zip(files, arrays) if not isinstance(a, D.DecodeError)]
    skipped = [(f, str(a)) for f, a in zip(files, arrays) if isinstance(a, D.DecodeError)]
    for f, why in skipped:
        console.print(f"skipped {f}: {why}", markup=False, highlight=False, soft_wrap=True)
    if not kept:
        raise CnnfitError("none of the given files could be decoded as an image")
    dev = pick_device(device)
    model = _model_from_checkpoint(ckpt, dev)
    loader = D.DeviceLoader(np.stack(decoded), np.zeros(len(kept)), batch=256, device=dev, mean=ckpt["mean"],
                            std=ckpt["std"])
    outputs, _ = E.infer(model, loader)
    task, classes = ckpt.get("task", "classify"), ckpt["classes"]
    if task == "multilabel":  # each label on its own, at the thresholds evaluate fitted on val
        saved = run_dir / "thresholds.json"
        fitted = json.loads(saved.read_text()) if saved.is_file() else {}
        cut = np.array([fitted.get(c, 0.5) for c in classes])
        probs = torch.sigmoid(outputs).numpy()  # (N, L)
        rows = [{"file": str(f), "labels": sets, **{f"prob_{c}": round(float(q), 6) for c, q in zip(classes, p)}}
                for f, sets, p in zip(kept, _label_sets(probs >= cut, classes), probs)]
        fields = ["file", "labels", *(f"prob_{c}" for c in classes)]
    elif task == "regress":
        rows = [{"file": str(f), "value": float(v)} for f, v in zip(kept, _unscale(outputs, ckpt).tolist())]
        fields = ["file", "value"]
    else:
        k = min(topk, len(classes))
        probs, ids = outputs.softmax(1).topk(k, dim=1)
        rows = [{"file": str(f), **{f"top{j + 1}": classes[ids[i, j]] for j in range(k)},
                 **{f"prob{j + 1}": round(float(probs[i, j]), 6) for j in range(k)}} for i, f in enumerate(kept)]
        fields = ["file"] + [x for j in range(k) for x in (f"top{j + 1}", f"prob{j + 1}")]
    out_path = Path(out) if out else _free_name(run_dir / "predict.csv")
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
