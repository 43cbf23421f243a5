"""ImageSet: uint8 images, labels and class names; and the seeded, stratified split of it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SPLITS = ("train", "val", "test")


@dataclass
class ImageSet:
    images: np.ndarray  # (N, C, H, W) uint8, array or memmap
    labels: np.ndarray  # (N,) int64 index into classes
    classes: list[str]
    files: list[str] | None = None  # where each image came from, when it came from a file
    origin: np.ndarray | None = None  # (N,) int8 index into SPLITS when the source is already split
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason) never decoded

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # (C, H, W)


def _stratified(labels: np.ndarray, idx: np.ndarray, frac: float, rng: np.random.Generator):
    """Split idx into (rest, taken) taking `frac` of each class, rounded, at least one when frac > 0."""
    take = np.zeros(len(labels), dtype=bool)
    sub = labels[idx]
    order = np.argsort(sub, kind="stable")  # idx grouped by class, in one sort
    bounds = np.flatnonzero(np.diff(sub[order])) + 1
    for members in np.split(idx[order], bounds):
        members = members[rng.permutation(len(members))]
        n = int(round(frac * len(members)))
        if frac > 0 and len(members) > 1:
            n = min(max(n, 1), len(members) - 1)
        take[members[:n]] = True
    return idx[~take[idx]], idx[take[idx]]


def split_indices(ds: ImageSet, val: float, test: float, seed: int) -> tuple[dict[str, np.ndarray], str]:
    """Indices of train/val/test and a sentence on how they were made.

    A split present in the source is kept; a missing val is carved from train (fraction `val`);
    a missing test falls back to val, said so, because carving it would change the user's split.
    """
    rng = np.random.default_rng(seed)
    everything = np.arange(len(ds))
    if ds.origin is None:
        rest, test_idx = _stratified(ds.labels, everything, test, rng)
        train_idx, val_idx = _stratified(ds.labels, rest, val / max(1e-9, 1 - test), rng)
        return {"train": train_idx, "val": val_idx, "test": test_idx}, (
            f"stratified {1 - val - test:.0%}/{val:.0%}/{test:.0%} split, seed {seed}")
    parts = {name: everything[ds.origin == i] for i, name in enumerate(SPLITS)}
    how = ["the source's own split"]
    if len(parts["val"]) == 0:
        parts["train"], parts["val"] = _stratified(ds.labels, parts["train"], val, rng)
        how.append(f"val carved from train ({val:.0%}, stratified, seed {seed})")
    if len(parts["test"]) == 0:
        parts["test"] = parts["val"]
        how.append("no test split: test metrics are measured on val, which also picked the best epoch")
    return parts, "; ".join(how)


def subsample(labels: np.ndarray, index: np.ndarray, *, fraction: float = 1.0, per_class: int | None = None,
              seed: int = 0) -> np.ndarray:
    """A stratified, seeded subset of `index` (sorted): `fraction` of each class, then at most `per_class` of it.
    For quick experiments and scarce-data studies; a fixed seed gives the same subset every run."""
    rng = np.random.default_rng(seed + 7919)  # apart from the split's own stream, so the split stays put
    keep = []
    for c in np.unique(labels[index]):
        members = rng.permutation(index[labels[index] == c])
        n = max(1, round(len(members) * fraction))
        keep.append(members[: min(n, per_class) if per_class else n])
    return np.sort(np.concatenate(keep)) if keep else index
