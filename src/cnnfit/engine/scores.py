"""Validation scores per epoch, per task: torch ops on the outputs already in hand, no scikit-learn,
so they cost milliseconds and can run every epoch (the test split gets scikit-learn in eval/metrics)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from cnnfit.errors import CnnfitError, suggest

MONITORS = {"classify": "val_acc", "multilabel": "val_macro_f1", "regress": "val_loss"}
# which way each metric of history.csv improves: the one table Monitor, compare and the plots read
DIRECTIONS = {"val_loss": "min", "val_mae": "min", "val_rmse": "min", "train_loss": "min",
              "val_acc": "max", "val_macro_f1": "max", "val_balanced_acc": "max", "val_f1": "max",
              "val_subset_acc": "max", "val_r2": "max", "train_acc": "max", "epoch": "max"}


def direction(metric: str) -> str:
    """"min" or "max" for a metric of DIRECTIONS; an unknown name raises rather than guess (as Keras' monitor)."""
    if metric not in DIRECTIONS:
        raise CnnfitError(f"cannot tell whether '{metric}' should go up or down; {suggest(metric, DIRECTIONS)}"
                          f"monitor one of: {', '.join(DIRECTIONS)}")
    return DIRECTIONS[metric]


_KEYS = {"classify": ("val_loss", "val_acc", "val_macro_f1", "val_balanced_acc"),
         "multilabel": ("val_loss", "val_f1", "val_macro_f1", "val_subset_acc"),
         "regress": ("val_loss", "val_mae", "val_rmse", "val_r2")}


def epoch_scores(task: str, outputs: torch.Tensor, targets: torch.Tensor,
                 loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 target_scale: tuple[float, float] | None = None) -> dict[str, float]:
    """The task's validation scores (keys in _KEYS), NaN for an empty split. `target_scale` (mean, std) of
    standardized regression targets puts MAE and RMSE back in the targets' own units."""
    if task not in _KEYS:
        raise CnnfitError(f"unknown task '{task}'; choose from: {', '.join(_KEYS)}")
    if not len(targets):
        return dict.fromkeys(_KEYS[task], float("nan"))
    scores = {"val_loss": loss(outputs, targets).item()}
    if task == "classify":
        macro_f1, balanced_acc = _balanced_scores(outputs, targets)
        acc = (outputs.argmax(1) == targets).double().mean().item()
        return {**scores, "val_acc": acc, "val_macro_f1": macro_f1, "val_balanced_acc": balanced_acc}
    if task == "multilabel":
        return {**scores, **_multilabel_scores(outputs, targets)}
    return {**scores, **_regression_scores(outputs, targets, target_scale)}


def train_correct(task: str, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor | None:
    """Correct predictions in a training batch, on the device (no host sync); None where accuracy is not the
    measure. Soft (B, K) targets from mixup count their top class."""
    if task != "classify":
        return None
    if targets.ndim == 2:
        targets = targets.argmax(1)
    return (outputs.detach().argmax(1) == targets).sum()


def _balanced_scores(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Macro F1 and balanced accuracy from a confusion count, cheap enough for every epoch."""
    k = logits.shape[1]
    cm = torch.bincount(labels * k + logits.argmax(1), minlength=k * k).view(k, k).double()  # (true, pred)
    tp, support, predicted = cm.diag(), cm.sum(1), cm.sum(0)
    present = support > 0
    recall = tp / support.clamp(min=1)
    precision = tp / predicted.clamp(min=1)
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    return f1[present | (predicted > 0)].mean().item(), recall[present].mean().item()


def _multilabel_scores(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Micro and macro F1 and exact-match accuracy at sigmoid >= 0.5 (logit >= 0).
    Macro averages the labels that occur or are predicted, as the classify macro F1 does; a split with
    nothing to find and nothing claimed scores 1."""
    pred = logits >= 0  # (B, L)
    true = targets > 0.5  # (B, L); soft targets count from one half
    tp = (pred & true).sum(0).double()  # (L,)
    fp = (pred & ~true).sum(0).double()
    fn = (~pred & true).sum(0).double()
    wrong = fp + fn
    micro = 2 * tp.sum() / (2 * tp.sum() + wrong.sum()) if (tp.sum() + wrong.sum()) > 0 else torch.tensor(1.0)
    seen = (tp + wrong) > 0
    macro = (2 * tp / (2 * tp + wrong).clamp(min=1))[seen].mean() if seen.any() else torch.tensor(1.0)
    subset = (pred == true).all(1).double().mean()
    return {"val_f1": micro.item(), "val_macro_f1": macro.item(), "val_subset_acc": subset.item()}


def _regression_scores(outputs: torch.Tensor, targets: torch.Tensor,
                       target_scale: tuple[float, float] | None) -> dict[str, float]:
    """MAE and RMSE (in target units when `target_scale` is given) and R^2, which no scaling changes.
    A constant target gives R^2 1 when matched exactly, else 0 (scikit-learn's force_finite rule)."""
    pred, true = outputs.reshape(-1).double(), targets.reshape(-1).double()  # (B, 1) or (B,) -> (B,)
    if len(pred) != len(true):
        raise CnnfitError(f"a regression model needs one output per image, got shape {tuple(outputs.shape)} for "
                          f"{len(true)} targets; build the model with num_classes=1")
    err = pred - true
    std = target_scale[1] if target_scale is not None else 1.0
    ss_res = err.pow(2).sum()
    ss_tot = (true - true.mean()).pow(2).sum()
    r2 = (1 - ss_res / ss_tot).item() if ss_tot > 0 else float(ss_res == 0)
    return {"val_mae": err.abs().mean().item() * std, "val_rmse": err.pow(2).mean().sqrt().item() * std, "val_r2": r2}


__all__ = ["DIRECTIONS", "MONITORS", "direction", "epoch_scores", "train_correct"]
