"""Test-split metrics from model outputs, computed by scikit-learn: classification, multi-label, regression."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.metrics import (accuracy_score, confusion_matrix, hamming_loss, max_error, mean_absolute_error,
                             mean_squared_error, precision_recall_curve, precision_recall_fscore_support, r2_score,
                             roc_auc_score)


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> dict[str, Any]:
    """Accuracy, loss, per-class precision/recall/F1/support, macro and weighted averages, confusion matrix."""
    y_true = labels.numpy()
    y_pred = logits.argmax(1).numpy()
    ids = np.arange(len(classes))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
    per_class = {c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
                 for i, c in enumerate(classes)}
    averages = {}
    for avg in ("macro", "weighted"):
        ap, ar, af, _ = precision_recall_fscore_support(y_true, y_pred, labels=ids, average=avg, zero_division=0)
        averages[avg] = {"precision": float(ap), "recall": float(ar), "f1": float(af)}
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "loss": float(torch.nn.functional.cross_entropy(logits, labels)),
        "num_images": int(len(y_true)),
        "per_class": per_class,
        "macro": averages["macro"],
        "weighted": averages["weighted"],
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=ids).tolist(),
        "classes": list(classes),
    }


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
    averages = {}
    for avg in ("micro", "macro", "weighted", "samples"):
        # an image with no labels and none predicted is right: 1, not 0, in the per-image (samples) average
        ap, ar, af, _ = precision_recall_fscore_support(t, q, labels=ids, average=avg,
                                                        zero_division=1 if avg == "samples" else 0)
        averages[avg] = {"precision": float(ap), "recall": float(ar), "f1": float(af)}
    aucs = [v["roc_auc"] for v in per_label.values() if v["roc_auc"] is not None]
    return {
        "subset_accuracy": float(accuracy_score(y_true, y_pred)),  # every label of an image right
        "hamming_loss": float(hamming_loss(y_true, y_pred)),
        "loss": float(torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), targets.float())),
        "num_images": int(len(y_true)),
        "per_label": per_label,
        **averages,
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
        return {"mae": float("nan"), "rmse": float("nan"), "r2": float("nan"), "max_error": float("nan"),
                "num_images": 0}
    return {
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "rmse": float(np.sqrt(mean_squared_error(y_true, y_pred))),  # root_mean_squared_error needs sklearn 1.4
        "r2": float(r2_score(y_true, y_pred)) if len(y_true) > 1 else float("nan"),  # undefined for one image
        "max_error": float(max_error(y_true, y_pred)),
        "num_images": int(len(y_true)),
    }
