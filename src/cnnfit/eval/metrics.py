"""Test-split metrics from model outputs, computed by scikit-learn: classification, multi-label, regression."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from sklearn.metrics import (accuracy_score, average_precision_score, balanced_accuracy_score, confusion_matrix,
                             hamming_loss, log_loss, max_error, mean_absolute_error, mean_squared_error,
                             precision_recall_curve, precision_recall_fscore_support, r2_score, roc_auc_score,
                             top_k_accuracy_score)

from cnnfit.eval.calibration import expected_calibration_error


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, classes: list[str],
                           topk: tuple[int, ...] = (3, 5)) -> dict[str, Any]:
    """Everything a reviewer asks of a classifier, from its outputs (logits, or log-probabilities after TTA or
    temperature scaling: softmax reads both the same). Every number comes from scikit-learn except ECE."""
    y_true = labels.numpy().astype(np.int64)
    probs = torch.softmax(logits.double(), 1).numpy()  # (N, K); float64 so rows sum to 1 for log_loss
    y_pred = probs.argmax(1)
    n_classes = len(classes)
    ids = np.arange(n_classes)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
    onehot = y_true[:, None] == ids[None, :]  # (N, K) one-vs-rest truth
    roc = [_roc_auc(onehot[:, k], probs[:, k]) for k in ids]
    ap = [float(average_precision_score(onehot[:, k], probs[:, k])) if onehot[:, k].any() else None for k in ids]
    per_class = {c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i]),
                     "roc_auc": roc[i], "pr_auc": ap[i]} for i, c in enumerate(classes)}
    cm = confusion_matrix(y_true, y_pred, labels=ids)
    empty = not len(y_true)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)) if not empty else float("nan"),
        "balanced_accuracy": _balanced_accuracy(y_true, y_pred) if not empty else float("nan"),
        "top_k": {str(k): float(top_k_accuracy_score(y_true, probs, k=k, labels=ids))
                  for k in topk if k < n_classes and not empty},
        "log_loss": float(log_loss(y_true, probs, labels=ids)) if not empty else float("nan"),
        "ece": expected_calibration_error(probs, y_true),
        "roc_auc": _average_auc(y_true, probs, roc, per_class),
        "pr_auc": {"macro": _mean_defined(ap)},  # mean average precision over classes with positives
        "num_images": int(len(y_true)),
        "per_class": per_class,
        **_averages(y_true, y_pred, ids, ("macro", "micro", "weighted")),
        "confusion_matrix": cm.tolist(),
        "confusion_normalized": (cm / np.maximum(cm.sum(1, keepdims=True), 1)).round(6).tolist(),
        "classes": list(classes),
    }


def _averages(y_true: np.ndarray, y_pred: np.ndarray, ids: np.ndarray, kinds: tuple[str, ...]) -> dict[str, dict]:
    """Precision, recall and F1 under each averaging in `kinds`."""
    out = {}
    for avg in kinds:
        # an image with no labels and none predicted is right: 1, not 0, in the per-image (samples) average
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=ids, average=avg,
                                                     zero_division=1 if avg == "samples" else 0)
        out[avg] = {"precision": float(p), "recall": float(r), "f1": float(f)}
    return out


def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    with warnings.catch_warnings():  # a class predicted but absent from the split is normal on small test sets
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(y_true, y_pred))


def _mean_defined(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def _average_auc(y_true: np.ndarray, probs: np.ndarray, per_class_auc: list[float | None],
                 per_class: dict[str, dict]) -> dict[str, float | None]:
    """One-vs-rest ROC AUC averages. Binary: the AUC of the positive class (scikit-learn's binary rule). With
    every class in the split: scikit-learn's multi_class='ovr' macro and weighted averages; otherwise the mean
    over the classes where AUC is defined (sklearn refuses a split that lacks a class)."""
    if probs.shape[1] == 2:
        return dict.fromkeys(("macro", "weighted"), per_class_auc[1])
    if all(a is not None for a in per_class_auc) and len(y_true):
        ids = np.arange(probs.shape[1])
        return {avg: float(roc_auc_score(y_true, probs, multi_class="ovr", average=avg, labels=ids))
                for avg in ("macro", "weighted")}
    defined = [(a, v["support"]) for a, v in zip(per_class_auc, per_class.values()) if a is not None]
    if not defined:
        return {"macro": None, "weighted": None}
    aucs, weights = np.array(defined, dtype=np.float64).T
    return {"macro": float(aucs.mean()),
            "weighted": float(np.average(aucs, weights=weights)) if weights.sum() else None}


def multilabel_metrics(logits: torch.Tensor, targets: torch.Tensor, labels: list[str],
                       thresholds: list[float] | None = None) -> dict[str, Any]:
    """Per-label precision/recall/F1/support/ROC AUC, micro/macro/weighted/samples averages, subset accuracy and
    Hamming loss, with label k predicted where sigmoid >= thresholds[k] (0.5 each unless given, e.g. from
    `fit_thresholds` on the val split)."""
    probs = torch.sigmoid(logits.float()).numpy()  # (N, L)
    y_true = (targets.float() > 0.5).numpy().astype(np.int64)  # (N, L)
    cut = np.asarray(thresholds if thresholds is not None else [0.5] * len(labels), dtype=np.float64)
    if len(cut) != len(labels):
        raise ValueError(f"{len(cut)} thresholds for {len(labels)} labels; give one per label")
    y_pred = (probs >= cut).astype(np.int64)
    ids = np.arange(len(labels))
    # one label: a zero column keeps scikit-learn on multi-label rules (it reads (N, 1) as binary); `ids` skips it
    pad = ((0, 0), (0, 1 if len(labels) == 1 else 0))
    t, q = np.pad(y_true, pad), np.pad(y_pred, pad)
    p, r, f, s = precision_recall_fscore_support(t, q, labels=ids, average=None, zero_division=0)
    per_label = {name: {"precision": float(p[k]), "recall": float(r[k]), "f1": float(f[k]), "support": int(s[k]),
                        "roc_auc": _roc_auc(y_true[:, k], probs[:, k]), "threshold": float(cut[k])}
                 for k, name in enumerate(labels)}
    aucs = [v["roc_auc"] for v in per_label.values() if v["roc_auc"] is not None]
    return {
        "subset_accuracy": float(accuracy_score(y_true, y_pred)),  # every label of an image right
        "hamming_loss": float(hamming_loss(y_true, y_pred)),
        "loss": float(torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), targets.float())),
        "num_images": int(len(y_true)),
        "per_label": per_label,
        **_averages(t, q, ids, ("micro", "macro", "weighted", "samples")),
        "macro_roc_auc": float(np.mean(aucs)) if aucs else None,
        "thresholds": cut.tolist(),
        "labels": list(labels),
    }


def _roc_auc(y: np.ndarray, score: np.ndarray) -> float | None:
    """ROC AUC of one label; None when the split holds only one of its two classes (AUC is undefined)."""
    return float(roc_auc_score(y, score)) if 0 < y.sum() < len(y) else None


def fit_thresholds(logits: torch.Tensor, targets: torch.Tensor) -> list[float]:
    """Per-label sigmoid threshold with the best F1 on these (validation) outputs, read off the precision-recall
    curve: rare labels often need far below 0.5. 0.5 for a label with no positives, where F1 cannot rise."""
    probs = torch.sigmoid(logits.float()).numpy()  # (N, L)
    y_true = (targets.float() > 0.5).numpy()
    cuts = []
    for k in range(probs.shape[1]):
        if not y_true[:, k].any():
            cuts.append(0.5)
            continue
        precision, recall, thresholds = precision_recall_curve(y_true[:, k], probs[:, k])
        f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)  # one per threshold
        best = float(thresholds[int(np.argmax(f1))])
        below = probs[:, k][probs[:, k] < best]
        # any cut in (highest score below, best] gives the same validation F1: take the middle, not the edge
        # where the lowest validation positive sits, so test positives a little below it still count
        cuts.append((best + float(below.max())) / 2 if below.size else best)
    return cuts


def regression_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, Any]:
    """MAE, RMSE, R^2 and the largest error, in the targets' own units (undo any standardization first)."""
    y_pred = pred.reshape(-1).double().numpy()  # (N, 1) or (N,) -> (N,)
    y_true = target.reshape(-1).double().numpy()
    if len(y_pred) != len(y_true):
        raise ValueError(f"{len(y_pred)} predictions for {len(y_true)} targets; the model needs one output per image")
    if not len(y_true):
        return {**dict.fromkeys(("mae", "rmse", "r2", "max_error"), float("nan")), "num_images": 0}
    return {
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "rmse": float(np.sqrt(mean_squared_error(y_true, y_pred))),  # root_mean_squared_error needs sklearn 1.4
        "r2": float(r2_score(y_true, y_pred)) if len(y_true) > 1 else float("nan"),  # undefined for one image
        "max_error": float(max_error(y_true, y_pred)),
        "num_images": int(len(y_true)),
    }
