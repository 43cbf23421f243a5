"""Plots a person reads at a glance; matplotlib is imported here only, with the file-only Agg backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: list[dict[str, float]], path: Path) -> None:
    plt = _plt()
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, what in zip(axes, ("loss", "acc")):
        ax.plot(epochs, [h[f"train_{what}"] for h in history], "o-", label="train")
        ax.plot(epochs, [h[f"val_{what}"] for h in history], "o-", label="val")
        if what == "acc":
            best = int(np.nanargmax([h["val_acc"] for h in history]))
            ax.axvline(epochs[best], color="grey", ls=":", label=f"best epoch ({epochs[best]})")
        ax.set(xlabel="epoch", ylabel="accuracy" if what == "acc" else "loss",
               title="Accuracy" if what == "acc" else "Loss")
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
