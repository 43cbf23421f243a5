"""Losses per task, as `loss(outputs, target) -> scalar`: one factory, so the loop never branches on the task.

classify: outputs (B, K) logits, target (B,) int64 class or (B, K) probabilities (mixup/cutmix).
multilabel: outputs (B, L) logits, target (B, L) multi-hot (or soft) floats.
regress: outputs (B, 1) or (B,), target (B,) float (standardized by the caller).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from cnnfit.errors import CnnfitError

LOSSES = {"classify": ("ce", "bce", "focal"), "multilabel": ("bce", "focal"), "regress": ("mse", "l1", "huber")}
_AUTO = {"classify": "ce", "multilabel": "bce", "regress": "mse"}
HUBER_DELTA = 1.0  # in target standard deviations: targets reach the loss standardized

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def class_weights(spec: str | dict[str, float], classes: list[str], counts: np.ndarray) -> torch.Tensor | None:
    """The loss weight per class from `class_weight=`: none, balanced, or {class name: weight}."""
    if spec == "none":
        return None
    if spec == "balanced":  # scikit-learn's rule: n_samples / (n_classes * count)
        return torch.tensor(counts.sum() / (len(classes) * np.maximum(counts, 1)), dtype=torch.float32)
    unknown = sorted(set(spec) - set(classes))
    if unknown:
        raise CnnfitError(f"class_weight names unknown classes {unknown}; the classes are: {', '.join(classes)}")
    return torch.tensor([float(spec.get(c, 1.0)) for c in classes], dtype=torch.float32)


def make_loss(task: str, name: str = "auto", *, label_smoothing: float = 0.0,
              class_weight: torch.Tensor | None = None, focal_gamma: float = 2.0) -> Loss:
    """The loss `name` for `task`; refuses pairs that do not fit, naming the ones that do.

    class_weight (K,): ce/focal per-class weight (focal's alpha); bce on classify per-class weight;
    bce on multilabel pos_weight (negatives/positives balances a label, as torch documents).
    """
    if task not in LOSSES:
        raise CnnfitError(f"unknown task '{task}'; choose from: {', '.join(LOSSES)}")
    name = _AUTO[task] if name == "auto" else name
    if name not in LOSSES[task]:
        raise CnnfitError(f"loss '{name}' does not fit task={task}; choose from: auto, {', '.join(LOSSES[task])}")
    if task == "regress" and (label_smoothing or class_weight is not None):
        raise CnnfitError("label smoothing and class weights need classes; for task=regress set "
                          "train.label_smoothing=0 and train.class_weight=none")
    if name == "ce":
        return lambda out, y: F.cross_entropy(out.float(), y, weight=class_weight, label_smoothing=label_smoothing)
    if name == "bce":
        return lambda out, y: _bce(out, y, task, label_smoothing, class_weight)
    if name == "focal":
        focal = _softmax_focal if task == "classify" else _sigmoid_focal
        return lambda out, y: focal(out, y, focal_gamma, label_smoothing, class_weight)
    regress = {"mse": F.mse_loss, "l1": F.l1_loss, "huber": lambda o, y: F.huber_loss(o, y, delta=HUBER_DELTA)}[name]
    return lambda out, y: regress(_column(out), y.float())


def _column(out: torch.Tensor) -> torch.Tensor:
    """(B, 1) or (B,) predictions as (B,) float32, so they line up with (B,) targets (no broadcast to (B, B))."""
    if out.ndim == 2 and out.shape[1] == 1:
        out = out[:, 0]
    if out.ndim != 1:
        raise CnnfitError(f"a regression model needs one output per image, got shape {tuple(out.shape)}; "
                          "build the model with num_classes=1")
    return out.float()


def _probabilities(out: torch.Tensor, y: torch.Tensor, task: str, smoothing: float) -> torch.Tensor:
    """Targets as (B, K) float: one-hot from class indices (scatter, no host sync), then smoothed:
    towards 1/K over the classes (classify, as timm's BinaryCrossEntropy) or towards 1/2 per label (multilabel)."""
    if y.ndim == 1:
        y = torch.zeros(out.shape, dtype=torch.float32, device=out.device).scatter_(1, y.long().unsqueeze(1), 1.0)
    y = y.float()
    if smoothing:
        k = out.shape[1] if task == "classify" else 2
        y = y * (1 - smoothing) + smoothing / k
    return y


def _bce(out: torch.Tensor, y: torch.Tensor, task: str, smoothing: float, weight: torch.Tensor | None) -> torch.Tensor:
    """Binary cross-entropy on each output's sigmoid, mean over batch and classes."""
    weights = {"pos_weight" if task == "multilabel" else "weight": weight}  # see make_loss's docstring
    return F.binary_cross_entropy_with_logits(out.float(), _probabilities(out, y, task, smoothing), **weights)


def _softmax_focal(out: torch.Tensor, y: torch.Tensor, gamma: float, smoothing: float,
                   weight: torch.Tensor | None) -> torch.Tensor:
    """Focal loss over a softmax (Lin et al. 2017, eq. 5): -alpha_k (1 - p_k)^gamma log p_k, summed against the
    target distribution. gamma=0 is F.cross_entropy exactly, weighted mean included for class-index targets."""
    hard = y.ndim == 1
    target = _probabilities(out, y, "classify", smoothing)  # (B, K)
    log_p = F.log_softmax(out.float(), dim=1)  # (B, K)
    terms = -target * (1 - log_p.exp()).pow(gamma) * log_p
    if weight is not None:
        terms = terms * weight
    per_image = terms.sum(1)  # (B,)
    if weight is not None and hard:  # as F.cross_entropy: divide by the weights of the targets' classes
        return per_image.sum() / weight[y].sum()
    return per_image.mean()


def _sigmoid_focal(out: torch.Tensor, y: torch.Tensor, gamma: float, smoothing: float,
                   weight: torch.Tensor | None) -> torch.Tensor:
    """Focal loss on each label's sigmoid (Lin et al. 2017, as torchvision.ops.sigmoid_focal_loss):
    BCE scaled by (1 - p_t)^gamma. class_weight scales each label's positive term, like bce's pos_weight,
    so gamma=0 is the bce loss with the same weights."""
    target = _probabilities(out, y, "multilabel", smoothing)  # (B, L)
    out = out.float()
    bce = F.binary_cross_entropy_with_logits(out, target, pos_weight=weight, reduction="none")
    p = torch.sigmoid(out)
    p_t = p * target + (1 - p) * (1 - target)
    return (bce * (1 - p_t).pow(gamma)).mean()


__all__ = ["HUBER_DELTA", "LOSSES", "Loss", "make_loss"]
