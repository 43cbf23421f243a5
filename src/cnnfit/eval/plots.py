"""Plots a person reads at a glance; matplotlib is imported here only, with the file-only Agg backend."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from cnnfit.engine.lr_find import LRFind


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    """Write to a temporary name and rename, so a reader never sees half a PNG."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fig.savefig(tmp, dpi=110, format=path.suffix.lstrip(".") or "png")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


_SCORES = {"val_acc": "accuracy", "val_macro_f1": "macro F1", "val_r2": "R^2", "val_f1": "micro F1",
           "val_mae": "MAE"}  # the score panel shows the first one a history holds: any task has one
_LOWER_IS_BETTER = ("val_mae", "val_rmse", "val_loss")


def plot_curves(history: list[dict[str, float]], path: Path, score: str | None = None) -> None:
    """Loss, and a score per epoch (train and val where both are logged): `score` (a history key such as
    'val_macro_f1'), else the first of _SCORES in the history, with the best epoch marked."""
    plt = _plt()
    epochs = [h["epoch"] for h in history]
    score = score or next((k for k in _SCORES if history and k in history[0]), "val_loss")
    name = _SCORES.get(score, score.removeprefix("val_"))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, key, title in zip(axes, ("val_loss", score), ("loss", name)):
        train = "train_" + key.removeprefix("val_")
        if history and train in history[0]:
            ax.plot(epochs, [h[train] for h in history], "o-", label="train")
        ax.plot(epochs, [h[key] for h in history], "o-", label="val")
        if key == score and history:
            pick = np.nanargmin if score in _LOWER_IS_BETTER else np.nanargmax
            values = [h[score] for h in history]
            best = int(pick(values)) if not np.all(np.isnan(values)) else 0
            ax.axvline(epochs[best], color="grey", ls=":", label=f"best epoch ({epochs[best]})")
        ax.set(xlabel="epoch", ylabel=title, title=title[0].upper() + title[1:])
        ax.grid(alpha=0.3)
        ax.legend()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_confusion(matrix: list[list[int]], classes: list[str], path: Path) -> None:
    plt = _plt()
    cm = np.asarray(matrix)
    n = len(classes)
    rows = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = min(4 + 0.5 * n, 16)
    fig, ax = plt.subplots(figsize=(size, size * 0.9), constrained_layout=True)
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true",
           title="Confusion matrix (counts; colour = row share)")
    ax.set_xticklabels(classes, rotation=45, ha="right")
    ax.set_yticklabels(classes)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if rows[i, j] > 0.5 else "black")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_regression(true: np.ndarray, pred: np.ndarray, path: Path, name: str = "target") -> None:
    """Predicted against true targets, with the y = x line a perfect model would sit on."""
    plt = _plt()
    true, pred = np.asarray(true, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(5, 5), constrained_layout=True)
    ax.scatter(true, pred, s=10, alpha=0.6)
    both = np.concatenate([true, pred])
    if len(both):
        lo, hi = float(both.min()), float(both.max())
        ax.plot([lo, hi], [lo, hi], color="grey", ls="--", lw=1, label="y = x")
        ax.legend()
    ax.set(xlabel=f"true {name}", ylabel=f"predicted {name}", title=f"Test split: {len(true)} images")
    ax.grid(alpha=0.3)
    _save(fig, path)
    plt.close(fig)


def plot_samples(images, labels, classes: list[str], path: Path) -> None:
    """Up to 64 images (B, C, H, W) in [0, 1], 8 a row, titled by class: what the model sees after augmentation.

    `images` and `labels` may be numpy arrays or torch tensors; soft labels (B, K) from mixup show their top class.
    """
    plt = _plt()
    if hasattr(images, "detach"):  # a torch tensor; torch itself is not imported here
        images = images.detach().float().cpu().numpy()
    if hasattr(labels, "detach"):
        labels = labels.detach().float().cpu().numpy()
    x = np.clip(np.asarray(images, dtype=np.float32)[:64], 0, 1)  # (B, C, H, W); noise may push past [0, 1]
    y = np.asarray(labels)[: len(x)]
    y = y.argmax(1) if y.ndim == 2 else y
    cols = max(1, min(8, len(x)))
    rows = max(1, -(-len(x) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.45 * rows), squeeze=False, constrained_layout=True)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, label in zip(axes.flat, x, y):
        if img.shape[0] == 1:
            ax.imshow(img[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        else:
            ax.imshow(img.transpose(1, 2, 0), interpolation="nearest")  # (H, W, C)
        ax.set_title(classes[int(label)], fontsize=7)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_lr_find(result: LRFind, path: Path) -> None:
    """The LR range test: raw loss faint, smoothed loss bold, on a log LR axis, with the suggestion marked."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    ax.plot(result.lrs, result.losses, color="tab:blue", alpha=0.3, lw=1, label="loss")
    ax.plot(result.lrs, result.smoothed, color="tab:blue", lw=2.2, label="smoothed loss")
    ax.axvline(result.suggestion, color="tab:red", ls="--", label=f"suggested lr = {result.suggestion:.3g}")
    ax.text(result.suggestion, 0.98, f" {result.suggestion:.3g}", transform=ax.get_xaxis_transform(),
            color="tab:red", va="top", ha="left")  # x in data units, y in axes units: always at the top
    ax.set_xscale("log")
    smoothed = np.asarray(result.smoothed, dtype=np.float64)
    if len(smoothed):  # the raw loss spikes as it diverges; clip there so the useful part stays readable
        low = min(float(np.min(result.losses)), float(smoothed.min()))
        top = max(1.5 * float(smoothed[: int(np.argmin(smoothed)) + 1].max()), low + 1e-3)
        ax.set_ylim(low - 0.05 * (top - low), top)
    ax.set(xlabel="learning rate (log scale)", ylabel="training loss", title="LR range test")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)
    plt.close(fig)
