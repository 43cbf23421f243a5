"""The official MNIST-family idx files as numpy arrays: shared by the PyTorch and Keras baselines of
bench_tta.py (the Keras one runs in its own virtual environment, with numpy but without cnnfit)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np


def read_idx(path: Path) -> np.ndarray:
    """An idx file (.gz or not) as a uint8 array: (N, 28, 28) images or (N,) labels."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    ndim = raw[3]  # magic: 0, 0, 8 (uint8), number of dimensions
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(bytearray(raw), dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)  # writable


def find_idx(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise SystemExit(f"{folder / stem}(.gz) not found; set CNNFIT_DATA to the folder that holds {folder.name}/")


def load_split(data: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 28, 28) uint8, labels (N,) int64) of the official train or t10k files."""
    root = Path(os.environ.get("CNNFIT_DATA", Path.home() / ".cache" / "cnnfit" / "data")).expanduser() / data
    images = read_idx(find_idx(root, f"{split}-images-idx3-ubyte"))
    labels = read_idx(find_idx(root, f"{split}-labels-idx1-ubyte")).astype(np.int64)
    return images, labels
