"""Classification metrics from logits and labels, computed by scikit-learn."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support


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
