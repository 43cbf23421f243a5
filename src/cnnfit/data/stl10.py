"""STL-10's binary release (stl10_binary/): its labelled train (5,000) and test (8,000) images, 96x96 colour.
The 100,000 unlabelled images are left out: a classifier cannot learn from them here."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnfit.data.arrays import class_values, from_array, train_test
from cnnfit.data.imageset import ImageSet
from cnnfit.errors import CnnfitError

STL10_FILES = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin")
_SHAPE = (3, 96, 96)
_FIX = "download it again (data.download=true) or use the files of the official archive"


def stl10_dir(d: Path) -> Path | None:
    """The folder holding STL-10's labelled files."""
    return next((sub for sub in (d, d / "stl10_binary") if all((sub / f).is_file() for f in STL10_FILES)), None)


def _split(d: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = d / f"{split}_X.bin", d / f"{split}_y.bin"
    n, pixels = y.stat().st_size, int(np.prod(_SHAPE))
    if n == 0 or x.stat().st_size != n * pixels:
        raise CnnfitError(f"{x} holds {x.stat().st_size:,} bytes where {y.name}'s {n} labels need {n * pixels:,} "
                          f"({n} images of 3x96x96): truncated or mismatched; {_FIX}")
    images = np.fromfile(x, dtype=np.uint8).reshape(n, *_SHAPE)  # (N, 3, 96, 96), each plane column by column
    return np.ascontiguousarray(images.transpose(0, 1, 3, 2)), np.fromfile(y, dtype=np.uint8)  # upright


def read_stl10(d: Path, size: int | None, channels: int | None) -> ImageSet:
    parts = [_split(d, "train"), _split(d, "test")]
    raw = np.concatenate([p[1] for p in parts])
    names_file = d / "class_names.txt"
    lines = names_file.read_text(errors="replace").splitlines() if names_file.is_file() else []
    names = [n.strip() for n in lines if n.strip()]
    if names and raw.min() >= 1 and raw.max() <= len(names):  # labels run 1..10 in class_names.txt's order
        labels, classes = raw.astype(np.int64) - 1, names
    else:
        labels, classes = class_values(raw, str(d))
    return from_array(np.concatenate([p[0] for p in parts]), labels, classes, train_test(parts), size, channels)


__all__ = ["STL10_FILES", "read_stl10", "stl10_dir"]
